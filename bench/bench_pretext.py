"""What the SynthFER pretext trunk costs: rendering its photos and training it, wall and CPU time.

    python bench/bench_pretext.py [--config configs/default.yaml] [--threads 1] [--set key=value ...]

Uses the config's width, image size and `model.pretext` budget; nothing is cached or
written. CPU seconds (this process, plus its rendering workers) are what the work costs
on an idle core; wall seconds depend on how busy the machine is, so report both and say
how loaded it was (`uptime`).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lacmfer.config import load_config  # noqa: E402
from lacmfer.method import pretext  # noqa: E402


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the rendering workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the training")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    torch.set_num_threads(args.threads)
    budget = cfg.model.pretext
    print(f"width {cfg.model.width:g}, {cfg.data.image_size} px, {budget}; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")

    wall, cpu = time.perf_counter(), cpu_seconds()
    pixels, _ = pretext.render_pretext_set(budget, cfg.data.image_size, progress=False)
    print(f"render {len(pixels)} photos: {time.perf_counter() - wall:.1f} s wall, {cpu_seconds() - cpu:.1f} s CPU")

    wall, cpu = time.perf_counter(), cpu_seconds()
    _, accuracy = pretext.train_pretext_trunk(cfg.model.width, cfg.data.image_size, budget, progress=False)
    print(f"render + train ({args.threads} thread(s)): {time.perf_counter() - wall:.1f} s wall, "
          f"{cpu_seconds() - cpu:.1f} s CPU; held-out identification accuracy {accuracy:.3f} "
          f"(chance {1 / budget.identities:.3f})")


if __name__ == "__main__":
    main()
