"""The protocol table of final training: `final/report.md`, `final/report.parquet` and a bar chart.

Per target and method, over the seeds: target test accuracy at the evaluation the
objective selects (the weights kept in `checkpoint_selected.pt`), at the last step, and
the best over all evaluations, which only target test labels can pick (the oracle that
the field's released code reports; marked as such). The mean over targets is the
field's summary number; the oracle gap is selected minus best (what selecting without
target labels cost). Means and standard deviations are over the runs that completed;
diverged and failed runs are counted and named, never averaged. A second table gives
every validator's oracle gap: what selecting each run's evaluation by it would have cost
(`lacmfer.reports.oracle_gap`), so the objective can be compared with the others. A third gives
the method against each baseline paired by (target, seed): both are trained on the same
seeds and configs, so the paired difference and its t-interval are the comparison a
paper can claim, where overlapping ± std columns say little.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from lacmfer.files import atomic_path, write_text_atomic
from lacmfer.names import ORACLE_METRIC, RunStatus, is_oracle, non_oracle_objectives
from lacmfer.reports.oracle_gap import Pick, pick

if TYPE_CHECKING:  # a report reads results, it trains nothing: no torch for a type
    from lacmfer.run.final_run import FinalResult

MEAN_ROW = "mean"
#: The accuracies of a run, each a function of its result (metrics.json): name → (column title, oracle?)
STATISTICS: dict[str, tuple[str, bool]] = {
    "selected": ("selected", False),
    "last": ("last step", False),
    "oracle_best": ("best of all evaluations (ORACLE)", True),
    "oracle_gap": ("selected − best of all evaluations (oracle gap, points)", True),
}
REPORT_MD, REPORT_PARQUET, BAR_CHART = "report.md", "report.parquet", "plots/accuracy.png"
BAR_CHART_SIZE_IN, BAR_CHART_DPI = (10.0, 4.0), 100


def run_accuracy(result: FinalResult, statistic: str) -> float:
    """Target test accuracy of a completed run under `statistic`, or for `oracle_gap` the
    difference selected − oracle_best (NaN when it has none)."""
    if result.status is not RunStatus.COMPLETED:
        return math.nan
    if statistic == "selected":
        selected = result.selected
        return selected["target_acc"] if selected else math.nan
    if statistic == "last":
        return result.last["target_acc"]
    if statistic == "oracle_gap":
        return run_accuracy(result, "selected") - run_accuracy(result, "oracle_best")
    return max((m["target_acc"] for m in result.history if math.isfinite(m["target_acc"])), default=math.nan)


def validator_pick(result: FinalResult, validator: str) -> Pick | None:
    """The evaluation of a completed run that `validator` would select, judged by target_acc (None: no pick)."""
    if result.status is not RunStatus.COMPLETED:
        return None
    pool = [m for m in result.history if math.isfinite(m.get(ORACLE_METRIC, math.nan))]
    if not pool:
        return None
    return pick([m.get(validator, math.nan) for m in pool], [m[ORACLE_METRIC] for m in pool])


def validator_gap_markdown(results: Sequence[FinalResult], targets: Sequence[str], methods: Sequence[str],
                           objective: str) -> list[str]:
    """Per method: each validator's oracle gap per target (mean over seeds, points), their mean, and
    the share of runs where its pick was in the run's worst decile of evaluations."""
    lines = ["## Oracle gap of each validator", "",
             ("Had each run kept the evaluation with the best value of a validator instead of the objective: the "
              "target test accuracy there minus the run's best of all evaluations (ORACLE), in points, mean over "
              "seeds; worst decile: the share of runs whose pick had at least 90 % of the run's evaluations "
              "above it. The objective's row is the table above."), ""]
    for method in methods:
        lines += [f"### {method}", "", "| validator | " + " | ".join(targets) + " | mean | worst decile |",
                  "|---|" + "---|" * (len(targets) + 2)]
        for name in non_oracle_objectives():
            picks = {t: [validator_pick(r, name) for r in results if r.target == t and r.method == method]
                     for t in targets}
            means = [_mean_std([p.gap for p in picks[t] if p is not None])[0] for t in targets]
            made = [p for t in targets for p in picks[t] if p is not None]
            mean = statistics.fmean(means) if means and all(math.isfinite(m) for m in means) else math.nan
            worst = f"{sum(p.worst_decile for p in made) / len(made):.0%} of {len(made)}" if made else "n/a"
            label = f"{name} (the objective)" if name == objective else name
            lines.append(f"| {label} | " + " | ".join(_pct(m, math.nan) for m in means)
                         + f" | {_pct(mean, math.nan)} | {worst} |")
        lines.append("")
    return lines


#: The coverage of the paired differences' intervals.
INTERVAL_LEVEL = 0.95


def paired_differences(results: Sequence[FinalResult], target: str, method: str, baseline: str,
                       statistic: str) -> list[float]:
    """`method` − `baseline` under `statistic`, one value per seed of `target` where both runs completed."""
    runs = {(r.method, r.seed): run_accuracy(r, statistic) for r in results if r.target == target}
    pairs = [(runs[method, seed], runs[baseline, seed]) for m, seed in sorted(runs) if m == method
             if (baseline, seed) in runs]
    return [a - b for a, b in pairs if math.isfinite(a) and math.isfinite(b)]


def mean_interval(values: Sequence[float], level: float = INTERVAL_LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its two-sided Student-t interval at `level`
    (n − 1 degrees of freedom); the bounds are NaN below two values, the mean below one."""
    from scipy import stats  # only when a report is written

    if not values:
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def paired_markdown(results: Sequence[FinalResult], targets: Sequence[str], methods: Sequence[str]) -> list[str]:
    """Per baseline (every method after the first) and statistic: the first method minus the baseline,
    per target (mean over seeds) and over all (target, seed) pairs with its interval, in points."""
    method, baselines = methods[0], methods[1:]
    if not baselines:
        return []
    lines = [f"## {method} against each baseline, paired by target and seed", "",
             (f"{method} − baseline in points, on the same seeds and configs: per target the mean over its seeds; "
              f"over all (target, seed) pairs where both runs completed, the mean and its {INTERVAL_LEVEL:.0%} "
              "Student-t interval (n − 1 degrees of freedom)."), "",
             "| baseline | accuracy | " + " | ".join(targets) + " | all pairs: mean [interval] | pairs |",
             "|---|---|" + "---|" * (len(targets) + 2)]
    for baseline in baselines:
        for statistic in ("selected", "last"):
            per_target = {t: paired_differences(results, t, method, baseline, statistic) for t in targets}
            pooled = [d for t in targets for d in per_target[t]]
            mean, low, high = (100 * v for v in mean_interval(pooled))
            cells = [f"{100 * statistics.fmean(d):+.2f}" if d else "n/a" for d in per_target.values()]
            total = "n/a" if not pooled else f"{mean:+.2f}" + (f" [{low:+.2f}, {high:+.2f}]" if math.isfinite(low)
                                                               else "")
            lines.append(f"| {baseline} | {STATISTICS[statistic][0]} | " + " | ".join(cells)
                         + f" | {total} | {len(pooled)} |")
    return [*lines, ""]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass
class Cell:
    """One target × method of the table."""

    target: str
    method: str
    runs: int
    completed: int
    diverged: int
    failed: int
    values: dict[str, tuple[float, float]]  # statistic → (mean, std) over seeds


def table_cells(results: Sequence[FinalResult], targets: Sequence[str], methods: Sequence[str]) -> list[Cell]:
    """Every target × method, then the mean row of each method.

    The mean row averages the per-target means; its ± is the standard deviation over
    seeds of the target-averaged accuracy, given only when every target completed the
    same seeds (otherwise the seeds' averages would mix different targets).
    """
    cells = []
    for method in methods:
        per_target = []
        for target in targets:
            runs = [r for r in results if r.target == target and r.method == method]
            count = Counter(r.status for r in runs)
            values = {s: _mean_std([run_accuracy(r, s) for r in runs]) for s in STATISTICS}
            per_target.append((target, runs, Cell(target, method, len(runs), count[RunStatus.COMPLETED],
                                                  count[RunStatus.DIVERGED], count[RunStatus.FAILED], values)))
        cells += [cell for _, _, cell in per_target]
        mean_values = {}
        for s in STATISTICS:
            means = [cell.values[s][0] for _, _, cell in per_target]
            seeds = [{r.seed: run_accuracy(r, s) for r in runs} for _, runs, _ in per_target]
            common = set(seeds[0]) if seeds else set()
            same_seeds = all(set(d) == common and all(math.isfinite(v) for v in d.values()) for d in seeds)
            if not means or not all(math.isfinite(m) for m in means):
                mean_values[s] = (math.nan, math.nan)
            elif same_seeds and common:
                by_seed = [statistics.fmean(d[seed] for d in seeds) for seed in sorted(common)]
                mean_values[s] = (statistics.fmean(means), _mean_std(by_seed)[1])
            else:
                mean_values[s] = (statistics.fmean(means), math.nan)
        total = [cell for _, _, cell in per_target]
        cells.append(Cell(MEAN_ROW, method, sum(c.runs for c in total), sum(c.completed for c in total),
                          sum(c.diverged for c in total), sum(c.failed for c in total), mean_values))
    return cells


def _pct(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if math.isfinite(std) else "")


def _cell_text(cell: Cell, statistic: str) -> str:
    text = _pct(*cell.values[statistic])
    if cell.target != MEAN_ROW and cell.completed < cell.runs:
        text += f" (n={cell.completed})"
    return text


def report_markdown(name: str, results: Sequence[FinalResult], targets: Sequence[str],
                    methods: Sequence[str], seeds: Sequence[int], objective: str) -> str:
    cells = {(c.target, c.method): c for c in table_cells(results, targets, methods)}
    oracle_objective = is_oracle(objective)
    lines = [f"# Final training: {name}", ""]
    if oracle_objective:
        lines += [("> **ORACLE SELECTION: the objective is oracle_target_acc, i.e. the kept evaluation is chosen "
                   "on target TEST labels. Not a valid unsupervised result.**"), ""]
    lines += [
        f"Target test accuracy (%), mean ± std over seeds {', '.join(map(str, seeds))}. "
        f"**selected**: at the evaluation with the best `{objective}` (its weights are `checkpoint_selected.pt`)"
        + (" — ORACLE" if oracle_objective else ", chosen without target labels") + "; **last step**: the weights of "
        "`checkpoint.pt`; **best of all evaluations (ORACLE)**: the highest target test accuracy of any "
        "evaluation, which only the test labels can pick (what the field's released code reports), for "
        "reference only; **oracle gap**: selected − best of all evaluations, per run, in points (0: the objective "
        "found the oracle's evaluation). The mean row averages the targets; its ± is over seeds.",
        "",
    ]
    for statistic, (title, oracle) in STATISTICS.items():
        heading = f"target accuracy: {title}" + (" — ORACLE" if oracle_objective and statistic == "selected" else "")
        lines += [f"## {heading[0].upper()}{heading[1:]}", ""]
        lines += ["| target | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for target in [*targets, MEAN_ROW]:
            label = f"**{target}**" if target == MEAN_ROW else target
            lines.append(f"| {label} | " + " | ".join(_cell_text(cells[target, m], statistic) for m in methods) + " |")
        lines.append("")
    bad = [r for r in results if r.status is not RunStatus.COMPLETED]
    if bad:
        lines += ["Not averaged (n = completed runs where fewer than planned): "
                  + ", ".join(f"{r.name} {r.status}" for r in bad) + ".", ""]
    lines += paired_markdown(results, targets, methods)
    lines += validator_gap_markdown(results, targets, methods, objective)
    lines += [f"![target accuracy per target, method against baselines]({BAR_CHART})", ""]
    return "\n".join(lines)


def report_table(results: Sequence[FinalResult], targets: Sequence[str], methods: Sequence[str],
                 seeds: Sequence[int], objective: str) -> pa.Table:
    """report.parquet: one row per target (and the mean row) × method; accuracies as fractions."""
    rows = []
    for cell in table_cells(results, targets, methods):
        row: dict[str, Any] = {"target": cell.target, "method": cell.method, "runs": cell.runs,
                               "completed": cell.completed, "diverged": cell.diverged, "failed": cell.failed}
        for statistic in STATISTICS:
            row[f"acc_{statistic}_mean"], row[f"acc_{statistic}_std"] = cell.values[statistic]
        rows.append(row)
    fields = [("target", pa.string()), ("method", pa.string())] + [(k, pa.int64()) for k in
                                                                   ("runs", "completed", "diverged", "failed")]
    fields += [(f"acc_{s}_{m}", pa.float64()) for s in STATISTICS for m in ("mean", "std")]
    schema = pa.schema(fields).with_metadata({
        "objective": objective, "selected_is_oracle": str(is_oracle(objective)).lower(),
        "oracle_columns": ",".join(f"acc_{s}_{m}" for s, (_, oracle) in STATISTICS.items() if oracle
                                   for m in ("mean", "std")),
        "seeds": ",".join(map(str, seeds)),
    })
    return pa.Table.from_pylist(rows, schema=schema)


def save_png(fig: Any, path: Path, dpi: int) -> Path:
    """Lay out, save and close a matplotlib figure, atomically (a reader never sees half a PNG)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return path


def bar_chart(path: Path, results: Sequence[FinalResult], targets: Sequence[str], methods: Sequence[str],
              objective: str) -> None:
    """Bars per target (and the mean), one per method, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display needed
    import matplotlib.pyplot as plt

    cells = {(c.target, c.method): c for c in table_cells(results, targets, methods)}
    groups = [*targets, MEAN_ROW]
    width = 0.8 / len(methods)
    with plt.style.context("ggplot"):  # the look of the search's pictures (search.plots)
        fig, axes = plt.subplots(1, 2, figsize=BAR_CHART_SIZE_IN, sharey=True)
        for ax, statistic in zip(axes, ("selected", "last"), strict=True):
            for i, method in enumerate(methods):
                means = [100 * cells[g, method].values[statistic][0] for g in groups]
                stds = [100 * cells[g, method].values[statistic][1] for g in groups]
                xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(groups))]
                ax.bar(xs, [m if math.isfinite(m) else 0.0 for m in means], width,
                       yerr=stds, capsize=3, label=method)  # a NaN std draws no error bar
            ax.set_xticks(range(len(groups)), groups)
            title = f"selected by {objective}" if statistic == "selected" else "last step"
            ax.set_title(f"target accuracy, {title}")
            ax.grid(axis="y", alpha=0.3)
        axes[0].set_ylabel("target test accuracy (%)")
        axes[0].legend()
        save_png(fig, path, BAR_CHART_DPI)


def write_report(final_dir: Path, name: str, results: Sequence[FinalResult], targets: Sequence[str],
                 methods: Sequence[str], seeds: Sequence[int], objective: str) -> Path:
    """Write report.md, report.parquet and the bar chart into `final_dir`; returns report.md."""
    final_dir = Path(final_dir)
    final_dir.mkdir(parents=True, exist_ok=True)
    bar_chart(final_dir / BAR_CHART, results, targets, methods, objective)
    table = report_table(results, targets, methods, seeds, objective)
    with atomic_path(final_dir / REPORT_PARQUET) as tmp:
        pq.write_table(table, tmp)
    path = final_dir / REPORT_MD
    write_text_atomic(path, report_markdown(name, results, targets, methods, seeds, objective))
    return path
