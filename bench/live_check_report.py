"""The live check's table (issue 26; protocol in docs/RESULTS.md, "The live check"), from the
folders `bench/live_check.sh` wrote: per split and search seed, each arm's compute (steps its
trials trained, from trials.parquet) and its exported config's final accuracy (target test
accuracy at the selected evaluation, mean over the final seeds, from final/report.parquet),
then each arm's mean over the search seeds that both arms finished, beside source-only.

    python bench/live_check_report.py [RESULTS_DIR]      (default /tmp/live_check)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lacmfer.config import load_config  # noqa: E402

ARMS = ("random_fifo", "tpe_asha")


def compute_steps(exp: Path) -> dict[str, int]:
    """Steps trained per split: each trial's evaluations × eval.interval, the last one capped at schedule.steps."""
    cfg = load_config(exp / "config.yaml")
    steps: dict[str, int] = {}
    for row in pq.read_table(exp / "trials.parquet").to_pylist():
        trained = min(row["evaluations"] * cfg.eval.interval, cfg.schedule.steps)
        steps[row["target"]] = steps.get(row["target"], 0) + trained
    return steps


def final_accuracy(exp: Path) -> dict[tuple[str, str], float]:
    """(target, method) → mean over final seeds of the target accuracy at the selected evaluation (%)."""
    rows = pq.read_table(exp / "final" / "report.parquet").to_pylist()
    return {(r["target"], r["method"]): 100 * r["acc_selected_mean"] for r in rows if r["target"] != "mean"}


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/live_check")
    seeds = sorted({int(p.name.rsplit("_s", 1)[1]) for p in out.glob("*_s*") if (p / "final" / "report.parquet").exists()})
    done = [s for s in seeds if all((out / f"{arm}_s{s}" / "final" / "report.parquet").exists() for arm in ARMS)]
    if not done:
        sys.exit(f"{out}: no search seed with both arms trained yet")
    baseline = next(final_accuracy(out / f"{arm}_s{s}") for s in done for arm in ARMS
                    if any(m == "source_only" for _, m in final_accuracy(out / f"{arm}_s{s}")))
    targets = sorted({t for t, _ in baseline})
    print("| split | search seed | arm | trials | compute (steps) | final accuracy (%) |")
    print("|---|---|---|---|---|---|")
    means: dict[tuple[str, str], list[float]] = {}
    for target in targets:
        for s in done:
            for arm in ARMS:
                exp = out / f"{arm}_s{s}"
                trials = sum(r["target"] == target for r in pq.read_table(exp / "trials.parquet").to_pylist())
                acc = final_accuracy(exp)[(target, "lacmfer")]
                means.setdefault((target, arm), []).append(acc)
                print(f"| {target} | {s} | {arm.replace('_', '+')} | {trials} | {compute_steps(exp)[target]} | {acc:.2f} |")
    print(f"\nMean over search seeds {', '.join(map(str, done))} (each: 3 final seeds), and source-only (3 seeds):\n")
    print("| split | random+fifo | tpe+asha | source-only |")
    print("|---|---|---|---|")
    for target in targets:
        cells = [f"{statistics.mean(means[(target, arm)]):.2f}" for arm in ARMS]
        print(f"| {target} | {' | '.join(cells)} | {baseline[(target, 'source_only')]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
