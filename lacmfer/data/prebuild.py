"""`python -m lacmfer.data.prebuild --config X.yaml`: decode and cache every list of a config.

For a cluster search, build the caches once beforehand (on node-local or shared disk), so
no trial waits for decoding. The same check and build that `tune.py` and `train.py` run
before Ray starts (`lacmfer.data.loaders.cache_every_list`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from lacmfer.config import load_config
from lacmfer.data.loaders import cache_every_list
from lacmfer.errors import exit_on_user_error


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lacmfer.data.prebuild",
        description="Decode and cache every list of a config (e.g. before a cluster search).",
    )
    parser.add_argument("--config", type=Path, required=True, help="experiment YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable), e.g. --set data.cache_size=112")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="decoding threads (default: cores, at most 8)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    for manifest, images in cache_every_list(cfg.data, workers=args.workers):
        print(f"{manifest.name}: {len(images)} images at {images.size}px in {images.path}")


if __name__ == "__main__":
    main()
