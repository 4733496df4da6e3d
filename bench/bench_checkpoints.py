"""Bytes a search trial writes to checkpoints, and keeps after the export: before vs now.

For the embedded default (`configs/default.yaml`: width 0.25, 500 steps, an evaluation
every 100) and the paper setting (`configs/cmfer_six.yaml`: width 1, 20,000 steps, every
100), the run's real `save_state` (`lacmfer.run.lifecycle`, the one checkpoint format) writes the state of
a real run (after one step, so the optimiser's momentum exists) once, and the run's real
`checkpoint_due` counts the evaluations of a whole schedule that write one:

  before  a checkpoint at every evaluation; Tune keeps the last one of every trial
  now     a checkpoint every `search.checkpoint_every` evaluations and at the last one;
          after the export only the exported best trial of each split keeps its last one

    python bench/bench_checkpoints.py [--every 10]

Prints a markdown table of bytes per trial.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lacmfer, not an installed one

from lacmfer.config import config_from_dict, load_config  # noqa: E402
from lacmfer.data.synth import generate_synthfer  # noqa: E402
from lacmfer.run.lifecycle import Run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def checkpoints_per_trial(run: Run, every: int | None) -> int:
    """How many evaluations of a whole schedule write a checkpoint (every one when `every` is None)."""
    steps, interval = run.cfg.schedule.steps, run.cfg.eval.interval
    run.checkpoint_every = every or 1
    count = 0
    for step in [*range(interval, steps, interval), steps]:
        run.trainer.step_count = step
        count += run.checkpoint_due()
    return count


def checkpoint_bytes(run: Run, folder: Path) -> int:
    """The size of one real trial checkpoint (written once: they all have the same size)."""
    folder.mkdir()
    run.save_state(folder)
    return sum(f.stat().st_size for f in folder.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=None, help="search.checkpoint_every (default: the config's)")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_ckpt_") as tmp:
        root = Path(tmp) / "synthfer"
        generate_synthfer(root, scale="tiny", seed=0, progress=False)
        for name in ("default.yaml", "cmfer_six.yaml"):
            base = load_config(REPO / "configs" / name)
            # The network of the config on SynthFER tiny; image size and batch do not
            # change a checkpoint's size, so they are kept small for a quick run.
            cfg = config_from_dict({**base.to_dict(), "data": {"root": str(root), "image_size": 64, "batch_size": 4,
                                                                "num_workers": 0}})
            every = args.every or cfg.search.checkpoint_every
            run = Run(cfg, "CK", Path(tmp) / f"{name}-run", {})
            run.trainer.step()
            size = checkpoint_bytes(run, Path(tmp) / name)
            n_before, n_now = checkpoints_per_trial(run, None), checkpoints_per_trial(run, every)
            before, now = n_before * size, n_now * size
            rows.append((name, cfg.schedule.steps, n_before, size, n_before, before, n_now, now, every))

    def size_text(n: float) -> str:
        return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"

    print("| config | evaluations per trial | one checkpoint | before: written per trial | before: kept per trial "
          "| now: written per trial | now: kept after export |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, _, evaluations, size, n_before, before, n_now, now, every in rows:
        print(f"| {name} | {evaluations} | {size_text(size)} | {n_before} = {size_text(before)} | {size_text(size)} | "
              f"{n_now} (every {every} + the last) = {size_text(now)} | "
              f"{size_text(size)} for the exported best trial, 0 for the others |")


if __name__ == "__main__":
    main()
