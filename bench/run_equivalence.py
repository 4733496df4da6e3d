"""Same numbers before and after a change to the run lifecycle: a tiny search and a tiny final training.

    python bench/run_equivalence.py --record bench/run_equivalence_79d421d.json \
        --final-command "python -m lacmfer.train"          # at commit 79d421d
    python bench/run_equivalence.py --compare bench/run_equivalence_79d421d.json

Runs, on SynthFER tiny (6 steps, an evaluation every 2):
- `python tune.py`: four trials of one split, one at a time, `schedule.lr` chosen from
  {0.003, 0.03, 1e6} (1e6 diverges), ASHA cutting from the first evaluation on;
- final training of the exported best config, seeds 0 and 1 in this process
  (`--sequential`), seed 2 as a Ray task, and a diverging run (lr 1e6) in this process.
It records every trial's reports (from Tune's `result.json`), their statuses (from
`trials.parquet`) and every final run's `metrics.json` history, then prints them, and
with `--compare` fails on the first value that differs from a recording (NaN equals NaN).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from lacmfer import names

REPO = Path(__file__).resolve().parents[1]
#: The values compared at every evaluation.
KEYS = ("step", names.OBJECTIVE_KEY, names.ORACLE_METRIC, names.SOURCE_VALIDATOR, "loss_total", "im", "entropy")
#: Added by the search trial to each report: how the trial ends if it ends there.
TRIAL_KEYS = ("status",)


def tiny_config(synth: Path, results: Path) -> dict[str, Any]:
    return {
        "seed": 0,
        "data": {"root": str(synth), "targets": ["CK"], "image_size": 48, "batch_size": 16,
                 "eval_batch_size": 64, "num_workers": 0},
        "model": {"width": 0.125, "global_blocks": [1, 1], "local_blocks": 1},
        "schedule": {"steps": 6, "lr_decay_steps": 20},
        "eval": {"interval": 2},
        "search": {"num_samples": 4, "max_concurrent": 1, "startup_trials": 4, "start_from_defaults": False,
                   "checkpoint_every": 2, "asha": {"grace_period": 1, "reduction_factor": 2},
                   "use_default_space": False,
                   "space": {"lr": {"distribution": "choice", "choices": [0.003, 0.03, 1.0e6]},
                             "hyper_align": {"distribution": "loguniform", "low": 0.01, "high": 1.6}}},
        "resources": {"cpu": 1, "gpu": 0, "threads": 1},
        "output": {"results_dir": str(results), "name": "eq"},
    }


def _run(command: list[str], cwd: Path) -> None:
    print("$", shlex.join(command), flush=True)
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):  # 1: a split or run ended without a result, still recorded
        sys.exit(f"{shlex.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")


def _evaluation(report: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: report.get(k) for k in keys}


def _with_status(report: dict[str, Any]) -> dict[str, Any]:
    """A trial report of a recording made before reports carried their status (0/1
    `final_evaluation` and `diverged`) with the status those flags meant, to compare like with like."""
    if "status" in report or "final_evaluation" not in report:
        return report
    flags = {k: report[k] for k in ("final_evaluation", "diverged")}
    status = "diverged" if flags["diverged"] else "completed" if flags["final_evaluation"] else "stopped early"
    return {**{k: v for k, v in report.items() if k not in flags}, "status": status}


def record(work: Path, final_command: list[str]) -> dict[str, Any]:
    from lacmfer.data.synth import generate_synthfer

    synth, results = work / "synth", work / "results"
    generate_synthfer(synth, scale="tiny", seed=0, progress=False)
    config = work / "eq.yaml"
    config.write_text(yaml.safe_dump(tiny_config(synth, results)), encoding="utf-8")
    _run([sys.executable, "tune.py", "--config", str(config)], REPO)
    exp = results / "eq"
    trials: dict[str, Any] = {}
    statuses = {row["trial_id"]: row["status"] for row in pq.read_table(exp / "trials.parquet").to_pylist()}
    runs = [[json.loads(line) for line in f.read_text(encoding="utf-8").splitlines()]
            for f in (exp / "CK").glob("*/result.json")]
    # Named by their sampled values (the seeded sampler proposes the same ones), not by random ids.
    for reports in runs:
        sampled = reports[0]["config"]
        name = f"lr {sampled['lr']:g}, hyper_align {sampled['hyper_align']:.6g}"
        trials[name] = {"status": statuses[reports[0]["trial_id"]],
                        "reports": [_evaluation(r, KEYS + TRIAL_KEYS) for r in reports]}

    best = exp / "best" / "CK.yaml"
    _run([*final_command, "--config", str(best), "--seeds", "0", "1", "--sequential", "--no-progress"], REPO)
    _run([*final_command, "--config", str(best), "--seeds", "2", "--no-progress", "--resume"], REPO)
    _run([*final_command, "--config", str(best), "--seeds", "0", "--sequential", "--no-progress",
          "--set", "schedule.lr=1e6", "--set", "output.name=eq-diverging"], REPO)
    final: dict[str, Any] = {}
    for run_dir in sorted(results.glob("*/final/CK/lacmfer/seed*")):
        m = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        final[f"{run_dir.parents[3].name}/seed{m['seed']}"] = {
            "status": m["status"], "steps": m["steps"], "selected_step": (m["selected"] or {}).get("step"),
            "history": [_evaluation(e, KEYS) for e in m["history"]]}
    return {"search": trials, "final": final}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def show(recorded: dict[str, Any]) -> None:
    for name, trial in sorted(recorded["search"].items()):
        print(f"search trial {name}: {trial['status']}")
        for r in trial["reports"]:
            print("  " + ", ".join(f"{k} {r[k]:.6g}" for k in KEYS) + f", status {r['status']}")
    for name, run in recorded["final"].items():
        print(f"final {name}: {run['status']}, {run['steps']} steps, selected step {run['selected_step']}")
        for e in run["history"]:
            print("  " + ", ".join(f"{k} {e[k]:.6g}" for k in KEYS))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--record", type=Path, help="write the figures of this checkout here")
    what.add_argument("--compare", type=Path, help="fail unless this checkout gives the recorded figures")
    p.add_argument("--final-command", default=f"{sys.executable} train.py", help="final training's command")
    p.add_argument("--work", type=Path, help="keep the data and results here (default: a temporary folder)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="lacmfer-equivalence-") as tmp:
        figures = record(args.work or Path(tmp), shlex.split(args.final_command))
    show(figures)
    if args.record:
        args.record.write_text(json.dumps(figures, indent=1), encoding="utf-8")
        return 0
    recorded = json.loads(args.compare.read_text(encoding="utf-8"))
    for trial in recorded["search"].values():
        trial["reports"] = [_with_status(r) for r in trial["reports"]]
    for part in ("search", "final"):
        if recorded[part].keys() != figures[part].keys():
            print(f"DIFFERENT {part} runs: recorded {sorted(recorded[part])}, now {sorted(figures[part])}")
            return 1
        for name, value in recorded[part].items():
            if not _same(value, figures[part].get(name)):
                print(f"DIFFERENT: {part} {name}:\n  recorded {value}\n  now      {figures[part].get(name)}")
                return 1
    print(f"identical: {len(recorded['search'])} trials and {len(recorded['final'])} final runs, every evaluation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
