"""Final training of a finished search: Ray tasks, as many at once as the CPUs hold, against the sequential path.

    python bench/bench_final_training.py --experiment results/synthfer-default \\
        [--seeds 0 1] [--baseline source_only] [--cpus 2] [--work /tmp/bench-final]

Copies the search's exported configs (`config.yaml`, `best/`) into one fresh experiment
folder per variant under `--work`, then runs `python train.py --experiment COPY
--seeds ... --baseline ...` for each, one after another, in child processes of this one:

- `ray`: the default path, a local Ray with `--cpus` CPUs (runs ask `resources.cpu` each,
  so with the default config's 1 CPU, `--cpus 2` trains two at a time);
- `sequential`: `--sequential`, the configs as they are (the default config trains with
  `resources.threads: 1`, the thread count every Ray task also gets);
- `sequential, N threads`: `--sequential --set resources.threads=N`, the sequential path
  given the same cores as Ray.

Prints a markdown table (wall clock with start-up and SynthFER cache reading included, runs,
speed-up against `sequential`) and checks that the `ray` and `sequential` runs gave the
same evaluations, run by run. Each variant's report stays in `--work/variant<i>/<exp>/final/`
(`report.md`, `plots/accuracy.png`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # where `train.py` is

# A child that joins its own local Ray with a CPU limit; `train.py` uses a Ray it finds started.
_RAY_CHILD = """
import os, sys
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
import ray
ray.init(address="local", num_cpus=int(sys.argv[1]), include_dashboard=False, logging_level="WARNING")
from train import main
code = main(sys.argv[2:])
ray.shutdown()
sys.exit(code)
"""


def copy_experiment(source: Path, target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    (target / "best").mkdir(parents=True)
    for path in (source / "best").glob("*.yaml"):
        shutil.copy2(path, target / "best" / path.name)
    if (source / "config.yaml").exists():
        shutil.copy2(source / "config.yaml", target / "config.yaml")
    return target


def histories(exp: Path) -> dict[str, str]:
    """Every run's evaluations as JSON text (NaN compares equal as text, not as a float)."""
    return {str(p.parent.relative_to(exp / "final")): json.dumps(json.loads(p.read_text())["history"])
            for p in sorted((exp / "final").glob("*/*/seed*/metrics.json"))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", type=Path, required=True, help="a finished search, results/<exp>")
    p.add_argument("--seeds", nargs="+", default=["0", "1"])
    p.add_argument("--baseline", nargs="*", default=["source_only"])
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("/tmp/bench-final-training"))
    p.add_argument("--skip-threads-variant", action="store_true",
                   help="leave out the sequential path with --cpus threads (a third of the time)")
    args = p.parse_args()

    common = ["--seeds", *args.seeds, "--no-progress"] + (["--baseline", *args.baseline] if args.baseline else [])
    variants = {
        "ray": [sys.executable, "-c", _RAY_CHILD, str(args.cpus)],
        "sequential": [sys.executable, "train.py", "--sequential"],
        f"sequential, {args.cpus} threads": [sys.executable, "train.py", "--sequential",
                                             "--set", f"resources.threads={args.cpus}"],
    }
    if args.skip_threads_variant:
        variants.popitem()
    seconds, runs = {}, {}
    for i, (name, command) in enumerate(variants.items()):
        exp = copy_experiment(args.experiment, args.work / f"variant{i}" / args.experiment.name)
        start = time.perf_counter()
        subprocess.run([*command, "--experiment", str(exp), *common], check=True, stdout=subprocess.DEVNULL, cwd=REPO)
        seconds[name] = time.perf_counter() - start
        runs[name] = histories(exp)
        print(f"{name}: {seconds[name]:.1f} s, {len(runs[name])} runs", file=sys.stderr)

    base = seconds["sequential"]
    print("| path | wall clock | runs | speed-up vs sequential |\n|---|---|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value / 60:.1f} min | {len(runs[name])} | {base / value:.2f}× |")
    same = runs["ray"] == runs["sequential"]
    print(f"\nray and sequential runs give the same evaluations: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
