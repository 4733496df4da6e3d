"""Hyperparameter search for LA-CMFER: `python tune.py [--config ...] [--set key=value ...]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lacmfer.config import load_config
from lacmfer.data.manifest import ensure_data
from lacmfer.errors import exit_on_user_error


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("configs/default.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    ensure_data(cfg.data)
    print(
        f"config {args.config} is valid and the data is ready under {cfg.data.root}.\n"
        "The search is not built yet (no trainer yet): nothing was trained.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
