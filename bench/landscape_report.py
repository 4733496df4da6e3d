"""LA-CMFER's landscape on the recording: does any region beat source-only, which parameters matter?

    python bench/landscape_report.py [--recording bench/landscape.parquet] [--out results/landscape-report]

Reads the recording of `bench/record_landscape.py` and writes, per split, in markdown and a PNG:

- the noise: per configuration trained on several seeds, the standard deviation over seeds of
  the final target accuracy (oracle) and of the accuracy at the checkpoint the objective
  selects; pooled over those configurations;
- source-only and the defaults (mean over their seeds) against the distribution over the
  Sobol configurations (seed 0): quantiles, and how many configurations beat source-only at
  the final checkpoint and at the objective's pick, at all and by more than twice the noise
  of a difference (one seed-0 run against source-only's mean over n seeds:
  sd·√(1 + 1/n));
- the objective's pick among configurations (the configuration whose best objective is
  highest) against the oracle's best;
- how the objective ranks near-source-only configurations: the Spearman correlation of each
  loss weight (log) with the final objective and with the final oracle accuracy;
- which parameters matter: the project's importance (`search.analysis.param_importances`,
  PED-ANOVA) and Optuna's fANOVA, on the Sobol configurations told as COMPLETE trials whose
  value is the final oracle accuracy, and again the final objective;
- where the best region lies: each parameter's median over the top eighth by oracle accuracy
  against its median over every configuration;
- the validator study on this pool (every evaluation of every configuration): each label-free
  validator's pick (which run, which step), its oracle gap and whether it is in the pool's
  worst decile.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pyarrow.parquet as pq
from scipy.stats import spearmanr

from lacmfer.config import load_config
from lacmfer.names import non_oracle_objectives
from search.analysis import TrialRecord, param_importances, validator_picks
from search.spaces import SearchSpace

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = ("hyper_align", "hyper_inter", "hyper_intra", "hyper_tgt")


def runs_of(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Split → its runs, each {config_id, seed, adaptation, values, history}."""
    by_run: dict[tuple, list[dict]] = defaultdict(list)
    for row in pq.read_table(path).to_pylist():
        by_run[row["target"], row["config_id"], row["seed"]].append(row)
    splits: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (target, config_id, seed), rows in sorted(by_run.items()):
        rows.sort(key=lambda r: r["training_iteration"])
        values = {k.removeprefix("param."): v for k, v in rows[0].items() if k.startswith("param.") and v is not None}
        splits[target].append({"config_id": config_id, "seed": seed, "adaptation": rows[0]["adaptation"],
                               "values": values, "history": rows})
    return splits


def selected(history: list[dict]) -> dict:
    """The evaluation the objective selects (the earliest best finite objective), as a run's export does."""
    finite = [h for h in history if math.isfinite(h["objective"])]
    return max(finite, key=lambda h: h["objective"]) if finite else history[-1]


def final_acc(run: dict) -> float:
    return run["history"][-1]["target_acc"]


def picked_acc(run: dict) -> float:
    return selected(run["history"])["target_acc"]


def noise_configs(count: int) -> set[str]:
    """The configurations the recording trains on every seed whatever their results (its `--noise`)."""
    return {"defaults", "source_only", *(f"sobol_{k:02d}" for k in range(max(0, count - 2)))}


def noise(runs: list[dict], planned: set[str]) -> tuple[float, float, int]:
    """Pooled standard deviation over seeds of (final, picked) accuracy, and the configurations it pools:
    only the `planned` ones (those confirmed for their seed-0 result would inflate it)."""
    by_config: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        if run["config_id"] in planned:
            by_config[run["config_id"]].append(run)
    repeated = [rs for rs in by_config.values() if len(rs) > 1]
    if not repeated:
        return math.nan, math.nan, 0
    final = math.sqrt(statistics.fmean(statistics.variance([final_acc(r) for r in rs]) for rs in repeated))
    picked = math.sqrt(statistics.fmean(statistics.variance([picked_acc(r) for r in rs]) for rs in repeated))
    return final, picked, len(repeated)


def study_of(runs: list[dict], space: SearchSpace, value: str) -> optuna.Study:
    """The Sobol configurations as COMPLETE trials of an in-memory study, valued by `value`."""
    study = optuna.create_study(direction="maximize")
    for run in runs:
        study.enqueue_trial({k: v for k, v in run["values"].items() if k in space.space})
        trial = study.ask()
        space(trial)
        last = run["history"][-1]
        study.tell(trial, last["target_acc"] if value == "oracle" else selected(run["history"])["objective"])
    return study


def importances(study: optuna.Study) -> tuple[dict[str, float], dict[str, float]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fanova = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    return param_importances(study), dict(fanova)


def pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.2f}"


def _shares(runs: list[dict], name: str, choices: list) -> str:
    return ", ".join(f"{c} {sum(r['values'].get(name) == c for r in runs)}" for c in choices)


def _median(runs: list[dict], name: str) -> float:
    return statistics.median(r["values"][name] for r in runs if name in r["values"])


def report_split(target: str, runs: list[dict], space: SearchSpace, planned: set[str]) -> tuple[list[str], dict]:
    sobol = [r for r in runs if r["config_id"].startswith("sobol_") and r["seed"] == 0]
    source_only = [r for r in runs if r["config_id"] == "source_only"]
    defaults = [r for r in runs if r["config_id"] == "defaults"]
    sd_final, sd_picked, pooled = noise(runs, planned)
    n_so = len(source_only)
    so_final = statistics.fmean(final_acc(r) for r in source_only)
    so_picked = statistics.fmean(picked_acc(r) for r in source_only)
    margin_final = 2 * sd_final * math.sqrt(1 + 1 / n_so)
    margin_picked = 2 * sd_picked * math.sqrt(1 + 1 / n_so)
    finals = np.array([final_acc(r) for r in sobol])
    picks = np.array([picked_acc(r) for r in sobol])
    lines = [f"### {target}", "",
             f"{len(sobol)} Sobol configurations (seed 0); noise pooled over {pooled} configurations × "
             f"{max(len(source_only), 1)} seeds: sd {pct(sd_final)} points at the final checkpoint, "
             f"{pct(sd_picked)} at the objective's pick.", "",
             "| | final checkpoint (oracle acc.) | objective's pick (oracle acc.) |", "|---|---|---|",
             f"| source-only (mean of {n_so} seeds) | {pct(so_final)} | {pct(so_picked)} |",
             f"| defaults (mean of {len(defaults)} seeds) | {pct(statistics.fmean(final_acc(r) for r in defaults))} | "
             f"{pct(statistics.fmean(picked_acc(r) for r in defaults))} |"]
    for q in (0.0, 0.25, 0.5, 0.75, 1.0):
        lines.append(f"| Sobol configurations, {'min' if q == 0 else 'max' if q == 1 else f'q{int(100 * q)}'} | "
                     f"{pct(float(np.quantile(finals, q)))} | {pct(float(np.quantile(picks, q)))} |")
    lines.append(f"| above source-only | {int((finals > so_final).sum())} of {len(sobol)} | "
                 f"{int((picks > so_picked).sum())} of {len(sobol)} |")
    lines.append(f"| above it by > 2 sd of a difference ({pct(margin_final)} / {pct(margin_picked)} points) | "
                 f"{int((finals > so_final + margin_final).sum())} | {int((picks > so_picked + margin_picked).sum())} |")
    lines.append(f"| below it by > 2 sd of a difference | {int((finals < so_final - margin_final).sum())} | "
                 f"{int((picks < so_picked - margin_picked).sum())} |")
    lines += ["", "Sobol configurations trained on more seeds (the noise set, and those confirmed for the best "
              "seed-0 results): the mean of the other seeds, fresh draws, against source-only's mean; "
              "'beats' needs more than 2 sd of that difference.", "",
              "| configuration | seed 0, final | other seeds, mean final | difference to source-only | 2 sd | verdict |",
              "|---|---|---|---|---|---|"]
    for config_id in sorted({r["config_id"] for r in runs if r["seed"] != 0 and r["config_id"].startswith("sobol_")}):
        seeds = [r for r in runs if r["config_id"] == config_id]
        first = next((final_acc(r) for r in seeds if r["seed"] == 0), math.nan)
        fresh = [final_acc(r) for r in seeds if r["seed"] != 0]
        margin = 2 * sd_final * math.sqrt(1 / len(fresh) + 1 / n_so)
        difference = statistics.fmean(fresh) - so_final
        verdict = "beats" if difference > margin else "loses" if difference < -margin else "level"
        lines.append(f"| {config_id}{'' if config_id in planned else ' (confirmed)'} | {pct(first)} | "
                     f"{pct(statistics.fmean(fresh))} | {100 * difference:+.2f} | {pct(margin)} | {verdict} |")
    objective_pick = max(sobol, key=lambda r: selected(r["history"])["objective"])
    lines += ["", f"The objective's pick among the configurations is {objective_pick['config_id']}: "
              f"{pct(picked_acc(objective_pick))} at its selected checkpoint (the oracle's best configuration: "
              f"{pct(float(finals.max()))} final, {pct(float(picks.max()))} picked).", ""]

    lines += ["| loss weight (log) | Spearman with final objective | Spearman with final oracle acc. |", "|---|---|---|"]
    objective_final = [selected(r["history"])["objective"] for r in sobol]
    for weight in WEIGHTS:
        logs = [math.log(r["values"][weight]) for r in sobol]
        # omit: a diverged run has no finite objective
        lines.append(f"| {weight} | {spearmanr(logs, objective_final, nan_policy='omit').statistic:+.2f} | "
                     f"{spearmanr(logs, finals, nan_policy='omit').statistic:+.2f} |")
    lines.append("")

    oracle_study, objective_study = study_of(sobol, space, "oracle"), study_of(sobol, space, "objective")
    (ped_o, fan_o), (ped_j, fan_j) = importances(oracle_study), importances(objective_study)
    lines += ["| parameter | PED-ANOVA: oracle acc. | fANOVA: oracle acc. | PED-ANOVA: objective | fANOVA: objective |",
              "|---|---|---|---|---|"]
    for name in sorted(fan_o, key=lambda n: -fan_o[n]):
        lines.append(f"| {name} | {ped_o.get(name, math.nan):.2f} | {fan_o[name]:.2f} | {ped_j.get(name, math.nan):.2f} | "
                     f"{fan_j.get(name, math.nan):.2f} |")
    top = sorted(sobol, key=final_acc, reverse=True)[: max(1, len(sobol) // 8)]
    lines += ["", f"Where the best region lies: each parameter over the top {len(top)} configurations by final "
              "oracle accuracy against every configuration.", "",
              "| parameter | median, top | median, all | range searched |", "|---|---|---|---|"]
    for name in space.order:
        spec = space.space[name]
        if spec.distribution == "choice":
            lines.append(f"| {name} | {_shares(top, name, spec.choices)} | {_shares(sobol, name, spec.choices)} | "
                         f"{spec.choices} |")
        elif spec.distribution in ("loguniform", "uniform") and any(name in r["values"] for r in top):
            lines.append(f"| {name} | {_median(top, name):.3g} | {_median(sobol, name):.3g} | "
                         f"[{spec.low:g}, {spec.high:g}] |")
    lines.append("")

    records = [TrialRecord(f"{r['config_id']}/{r['seed']}", target, r["values"], "completed", r["history"])
               for r in runs if r["seed"] == 0]
    pool = [report for record in records for report in record.history if math.isfinite(report["target_acc"])]
    every = validator_picks(records)
    lines += ["Validator study on this pool (every evaluation of every seed-0 run, as `tune.py`'s export "
              "pools a split's checkpoints; oracle gap in points against the pool's best):", "",
              "| validator | its pick: configuration, step | oracle acc. there | oracle gap | worst decile |",
              "|---|---|---|---|---|"]
    for name in non_oracle_objectives():
        p = every.get(name)
        if p is None:
            continue
        lines.append(f"| {name} | {pool[p.index]['config_id']}, {int(pool[p.index]['step'])} | {pct(p.accuracy)} | "
                     f"{100 * p.gap:+.2f} | {'yes' if p.worst_decile else 'no'} |")
    lines.append("")
    figures = {"finals": finals, "picks": picks, "so_final": so_final, "so_picked": so_picked,
               "margin_final": margin_final, "defaults": [final_acc(r) for r in defaults],
               "objective": objective_final}
    return lines, figures


def plot(figures: dict[str, dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(figures), figsize=(5.5 * len(figures), 7.5), squeeze=False)
    for column, (target, f) in enumerate(figures.items()):
        ax = axes[0][column]
        ax.hist(100 * f["finals"], bins=16, color="tab:blue", alpha=0.7, label="Sobol configurations (final)")
        ax.axvline(100 * f["so_final"], color="black", label="source-only (mean)")
        ax.axvspan(100 * (f["so_final"] - f["margin_final"]), 100 * (f["so_final"] + f["margin_final"]),
                   color="black", alpha=0.12, label="± 2 sd of a difference")
        for k, d in enumerate(f["defaults"]):
            ax.axvline(100 * d, color="tab:red", linestyle="--", label="defaults (each seed)" if k == 0 else None)
        ax.set_title(f"{target}: final target accuracy (oracle)")
        ax.set_xlabel("target test accuracy (%)")
        ax.legend(fontsize=7)
        ax = axes[1][column]
        ax.scatter(100 * np.array(f["objective"]), 100 * f["picks"], s=12)
        ax.axhline(100 * f["so_picked"], color="black", label="source-only (mean, at its pick)")
        ax.set_xlabel("best objective of the run (source_val_acc, %)")
        ax.set_ylabel("target accuracy at the objective's pick (%)")
        ax.set_title(f"{target}: the objective against the oracle, per configuration")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recording", type=Path, default=REPO / "bench/landscape.parquet")
    parser.add_argument("--config", type=Path, default=REPO / "configs/default.yaml")
    parser.add_argument("--out", type=Path, default=REPO / "results/landscape-report")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = SearchSpace(load_config(args.config).search.space)
    meta = pq.read_schema(args.recording).metadata or {}
    lines = [f"`python bench/landscape_report.py {' '.join(argv or sys.argv[1:])}`".replace(" `", "`"), "",
             f"Recording made by `{meta.get(b'command', b'?').decode()}` at commit "
             f"{meta.get(b'commit', b'?').decode()[:7]}.", ""]
    figures = {}
    planned = noise_configs(int(meta.get(b"noise", b"8")))
    for target, runs in runs_of(args.recording).items():
        split_lines, figures[target] = report_split(target, runs, space, planned)
        lines += split_lines
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "landscape.md").write_text("\n".join(lines) + "\n")
    plot(figures, args.out / "landscape.png")
    print("\n".join(lines))
    print(f"\n{args.out / 'landscape.md'}, {args.out / 'landscape.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
