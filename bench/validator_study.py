"""Which label-free objective selects checkpoints closest to the oracle: the validator study.

    python bench/validator_study.py EXPERIMENT [EXPERIMENT ...] [--seen EXPERIMENT ...]
        [--out results/validator-study.md]

The protocol is docs/RESULTS.md, "Which label-free objective". A pool is every evaluation
of every trial of one split's search (an experiment folder of `python tune.py`), or every
evaluation of one final-training run (`<experiment>/final/<target>/<method>/seed<k>/`).
For each validator and the pool-level `rank_average` rule: the weighted Spearman with the
oracle target accuracy (Musgrave et al. 2022), the oracle gap of its pick (points, ≤ 0)
and whether the pick falls in the pool's worst decile (`lacmfer.reports.oracle_gap`), per split,
then the mean over split-searches. Positional experiments are the fresh pools that decide
the default objective; `--seen` ones are reported and used only by the decision's
"not worse on the seen pool" clause. A missing experiment is skipped with a note (the
protocol runs the six-split search only if machine time remains).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from lacmfer import names
from lacmfer.reports.oracle_gap import Pick
from search.analysis import RANK_AVERAGE, TrialRecord, mean_oracle_gap, read_split, validator_picks, validator_ranking
from search.storage import ExperimentLocations

#: The default objective today, which the decision compares every candidate with.
INCUMBENT = names.SOURCE_VALIDATOR
#: A candidate replaces the incumbent only with a mean oracle gap this much smaller (points).
MARGIN = 1.0


def split_pools(experiment: Path) -> dict[str, list[TrialRecord]]:
    """Every split of a search experiment → its trials (the split's checkpoint pool)."""
    targets = sorted(set(pq.read_table(experiment / "trials.parquet", columns=["target"]).column(0).to_pylist()))
    places = ExperimentLocations.read(experiment)[1]
    return {f"{experiment.name}/{target}": read_split(places, target) for target in targets}


def final_run_pools(experiment: Path) -> dict[str, list[TrialRecord]]:
    """Every final-training run of an experiment → a one-record pool of its evaluations."""
    pools = {}
    for path in sorted((experiment / "final").glob("*/*/seed*/metrics.json")):
        run = json.loads(path.read_text())
        key = f"{experiment.name}/{run['target']}/{run['method']}/seed{run['seed']}"
        pools[key] = [TrialRecord(key, run["target"], {}, "completed", run["history"])]
    return pools


def judge(pools: dict[str, list[TrialRecord]]) -> tuple[dict[str, dict[str, Pick | None]], dict[str, dict[str, float]]]:
    """Per pool: each validator's pick, and each validator's weighted Spearman."""
    picks = {key: validator_picks(records) for key, records in pools.items()}
    spearman = {key: dict(validator_ranking(records)) for key, records in pools.items()}
    return picks, spearman


def summary_rows(picks: dict[str, dict[str, Pick | None]], spearman: dict[str, dict[str, float]]
                 ) -> dict[str, tuple[float, float, float, int]]:
    """Validator → (mean weighted Spearman, mean oracle gap, worst-decile share, picks)."""
    rows = {}
    for name in (*names.non_oracle_objectives(), RANK_AVERAGE):
        rhos = [s[name] for s in spearman.values() if name in s and not math.isnan(s[name])]
        gap, worst, made = mean_oracle_gap(p[name] for p in picks.values())
        rows[name] = (statistics.fmean(rhos) if rhos else math.nan, 100 * gap, worst, made)
    return rows


def _fmt(value: float, spec: str) -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def table(title: str, picks: dict[str, dict[str, Pick | None]], spearman: dict[str, dict[str, float]],
          per_pool: bool) -> list[str]:
    """A markdown table: one row per validator, its mean figures and (optionally) its gap per pool."""
    rows = summary_rows(picks, spearman)
    keys = list(picks) if per_pool else []
    lines = [f"### {title}", "", f"{len(picks)} pools.", "",
             "| validator | weighted Spearman (mean) | oracle gap (mean, points) | worst decile | "
             + "".join(f"{k} | " for k in keys),
             "|---|---|---|---|" + "---|" * len(keys)]
    for name, (rho, gap, worst, made) in sorted(rows.items(), key=lambda kv: -kv[1][1] if not math.isnan(kv[1][1])
                                                else math.inf):
        label = f"{name} (today's default)" if name == INCUMBENT else name
        cells = "".join(f"{_fmt(100 * p.gap, '+.2f') if (p := picks[k][name]) else 'n/a'} | " for k in keys)
        lines.append(f"| {label} | {_fmt(rho, '.3f')} | {_fmt(gap, '+.2f')} | "
                     f"{_fmt(100 * worst, '.0f')}% of {made} | {cells}")
    return [*lines, ""]


def decide(fresh: dict[str, tuple[float, float, float, int]], seen: dict[str, tuple[float, float, float, int]] | None
           ) -> tuple[str, str]:
    """The protocol's rule: (the default objective, why)."""
    _, base_gap, base_worst, _ = fresh[INCUMBENT]
    qualified = []
    for name, (_, gap, worst, _) in fresh.items():
        if name in (INCUMBENT, RANK_AVERAGE) or math.isnan(gap):
            continue
        seen_ok = seen is None or not (seen[name][1] < seen[INCUMBENT][1])
        if gap >= base_gap + MARGIN and worst <= base_worst and seen_ok:
            qualified.append((gap, name))
    if not qualified:
        return INCUMBENT, (f"no candidate's mean oracle gap is {MARGIN:g} point(s) smaller than {INCUMBENT}'s "
                           f"({base_gap:+.2f}) on the fresh pools with a worst-decile share no higher and no loss "
                           "on the seen pool")
    gap, name = max(qualified)
    return name, f"{name}: mean oracle gap {gap:+.2f} against {INCUMBENT}'s {base_gap:+.2f} on the fresh pools"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="+", type=Path, help="fresh search experiments (decide)")
    parser.add_argument("--seen", nargs="*", type=Path, default=[], help="experiments seen before the protocol")
    parser.add_argument("--out", type=Path, default=Path("results/validator-study.md"))
    args = parser.parse_args(argv)

    lines, notes = ["# Validator study", "", f"`python {' '.join(sys.argv)}`", ""], []
    groups: dict[str, dict[str, dict[str, list[TrialRecord]]]] = defaultdict(dict)
    for label, experiments in (("fresh", args.experiments), ("seen", args.seen)):
        for experiment in experiments:
            if not (experiment / "trials.parquet").is_file():
                notes.append(f"- {experiment}: no search results, skipped")
                continue
            groups[f"{label} searches"].update(split_pools(experiment))
            groups[f"{label} final runs"].update(final_run_pools(experiment))
    summaries = {}
    for title, pools in groups.items():
        if pools:
            picks, spearman = judge(pools)
            summaries[title] = summary_rows(picks, spearman)
            lines += table(f"{title}: every evaluation of {'each split' if 'search' in title else 'each run'}",
                           picks, spearman, per_pool="search" in title)
    objective, why = decide(summaries["fresh searches"], summaries.get("seen searches"))
    lines += ["### Decision", "", f"Default `eval.objective`: **{objective}** — {why}.", "", *notes]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
