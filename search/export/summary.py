"""summary.md: the page a user reads first. Per split: best value, oracle accuracy, chosen
values, counts, importance, the validator ranking; across splits, each validator's oracle
gap (what selecting by it would have cost); then the slot usage of each run (search.slots)
and the search plots' section (search.plots). Rendered as text; the export writes it."""

from __future__ import annotations

import math

from lacmfer.config import ExperimentConfig
from lacmfer.names import ENSEMBLE_MEMBERS, ORACLE_OBJECTIVE
from lacmfer.reports.oracle_gap import DECILES
from search.analysis import ORACLE_METRIC, RANK_AVERAGE, STATUSES, mean_oracle_gap
from search.export.results import SplitExport
from search.export.wording import ORACLE_BANNER, SCOPE_TEXT, fmt
from search.slots import slots_section
from search.storage import ExperimentLocations

SUMMARY_FILE = "summary.md"


def _split_section(cfg: ExperimentConfig, split: SplitExport, scope: str) -> list[str]:
    objective = cfg.eval.objective
    oracle = objective == ORACLE_OBJECTIVE
    total = sum(split.counts.values())
    lines = [f"## {split.target}", ""]
    lines.append(f"Trials: {total} — " + ", ".join(f"{split.counts[s]} {s}" for s in STATUSES) + ".")
    lines.append("")
    if split.best is None:
        lines += ["No completed or stopped-early trial with a finite objective: no config exported.", ""]
    else:
        ev = split.best_evaluation
        lines.append(f"- Best {objective} ({scope} evaluation): **{fmt(split.best_value)}** — trial "
                     f"`{split.best.trial_id}` ({split.best.status}, {split.best.evaluations} evaluations)")
        acc = fmt(ev.get(ORACLE_METRIC, math.nan))
        if oracle:
            lines.append(f"- Oracle target accuracy at that evaluation: {acc} — **ORACLE: this IS the selection "
                         "metric (target test labels)**")
        else:
            lines.append(f"- Oracle target accuracy at that evaluation: {acc} (target test labels; reported "
                         "only, not used for selection)")
        lines.append(f"- Config: `best/{split.target}.yaml` → "
                     f"`python train.py --config {split.best_config}`")
        lines += ["", "| hyperparameter | value |", "|---|---|"]
        lines += [f"| {k} | {fmt(v)} |" for k, v in split.best.params.items()] or ["| (none searched) | |"]
        lines.append("")
    lines += ["### Hyperparameter importance (Optuna, completed trials only)", ""]
    if split.importances:
        lines += ["| hyperparameter | importance |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in split.importances.items()]
        lines.append("")
    lines += [f"{split.importance_note}.", ""]
    lines += ["### Validator ranking (which label-free objective to trust)", ""]
    if all(math.isnan(c) for _, c in split.ranking):
        lines += ["Not available: needs evaluations with target labels (target_acc) and validators that vary.", ""]
    else:
        lines += [("| validator | weighted Spearman with target_acc | target_acc of its pick | oracle gap | "
                   "pick in worst decile |"), "|---|---|---|---|---|"]
        rows = [*split.ranking, (RANK_AVERAGE, math.nan)]
        for name, c in rows:
            chosen = split.picks.get(name)
            label = f"{name}{' (the objective)' if name == objective else ''}"
            if name == RANK_AVERAGE:
                label += " (export-time rule)"
            pick_cells = ("n/a | n/a | n/a" if chosen is None else
                          f"{fmt(chosen.accuracy)} | {_gap(chosen.gap)} | {'yes' if chosen.worst_decile else 'no'}")
            lines.append(f"| {label} | {'—' if name == RANK_AVERAGE else fmt(c)} | {pick_cells} |")
        best = next((p.best for p in split.picks.values() if p is not None), math.nan)
        lines += ["", (f"Over {split.ranking_points} evaluations of all {total} trials, computed as Musgrave et al. "
                       "(2022) do: weights max(validator rank, oracle rank)² (normalised dense ranks) emphasise the "
                       "top checkpoints, a NaN validator score ranks as the worst. 1 = orders checkpoints "
                       "exactly like the oracle target accuracy; computed with target labels, for choosing an "
                       f"objective, not a model. {_PICK_TEXT} The best target_acc of these evaluations is "
                       f"{fmt(best)}."), ""]
    return lines


_PICK_TEXT = (
    "Each validator's pick is the evaluation with its highest value among those same evaluations (the ones "
    "with target_acc); oracle gap = target_acc of the pick − the best target_acc among them, in points; "
    f"worst decile = at least {DECILES - 1}/{DECILES} of them are better. `{RANK_AVERAGE}` picks the evaluation "
    f"with the best mean rank under {', '.join(ENSEMBLE_MEMBERS)}, a rule over all of a split's checkpoints "
    "(so applied at export, not an objective)."
)


def _gap(value: float) -> str:
    """An oracle gap (a difference of accuracies in [0, 1]) in percentage points."""
    return "n/a" if not math.isfinite(value) else f"{100 * value:+.2f}"


def oracle_gap_section(splits: list[SplitExport], objective: str) -> list[str]:
    """summary.md's table of every validator's oracle gap on each split, their mean and worst-decile share."""
    with_picks = [s for s in splits if any(p is not None for p in s.picks.values())]
    if not with_picks:
        return []
    validators = list(with_picks[0].picks)
    lines = ["## Oracle gap of each validator", "",
             ("What selecting by each validator would have cost, in points of target_acc, per split (see the "
              "split sections for the rule); mean over splits, and the share of splits where its pick was in the "
              "worst decile of the split's evaluations. Computed with target labels, to choose an objective."), "",
             "| validator | " + " | ".join(s.target for s in with_picks) + " | mean gap | worst decile |",
             "|---|" + "---|" * (len(with_picks) + 2)]
    for name in validators:
        picks = [s.picks.get(name) for s in with_picks]
        mean, worst, made = mean_oracle_gap(picks)
        label = f"{name}{' (the objective)' if name == objective else ''}"
        lines.append(f"| {label} | " + " | ".join("n/a" if p is None else _gap(p.gap) for p in picks)
                     + f" | {_gap(mean)} | " + ("n/a" if made == 0 else f"{worst:.0%} of {made}") + " |")
    lines.append("")
    return lines


def summary_markdown(cfg: ExperimentConfig, splits: list[SplitExport], missing: list[str], scope: str) -> str:
    """summary.md's tables: every split's counts and best, the oracle gaps, then each split's section."""
    objective = cfg.eval.objective
    lines = [f"# Search summary: {cfg.output.name}", ""]
    if objective == ORACLE_OBJECTIVE:
        lines += [f"> **{ORACLE_BANNER}**", ""]
    lines += [f"Objective: `{objective}` (maximised); a trial's value is its {SCOPE_TEXT[scope]}.", ""]
    lines += [("| split | trials | completed | stopped early | failed | diverged | best objective | "
               "target_acc at best (oracle) | trial |"), "|---|---|---|---|---|---|---|---|---|"]
    for s in splits:
        acc = s.best_evaluation.get(ORACLE_METRIC, math.nan) if s.best_evaluation else None
        lines.append(f"| {s.target} | {sum(s.counts.values())} | "
                     + " | ".join(str(s.counts[k]) for k in STATUSES)
                     + f" | {fmt(s.best_value)} | {fmt(acc)} | {s.best.trial_id if s.best else '—'} |")
    lines.append("")
    if missing:
        lines += [f"Not run (no experiment folder): {', '.join(missing)}.", ""]
    lines += oracle_gap_section(splits, objective)
    for split in splits:
        lines += _split_section(cfg, split, scope)
    return "\n".join(lines)


def summary_text(places: ExperimentLocations, cfg: ExperimentConfig, splits: list[SplitExport], missing: list[str],
                 scope: str, plots_section: str) -> str:
    """The whole of summary.md: `summary_markdown`, the slots' table, and `plots_section`
    (`search.plots.SearchPlots.section`)."""
    text = summary_markdown(cfg, splits, missing, scope)
    text += "\n".join(["", *slots_section(places.slots_record, places.timeline)])
    return text + "\n" + plots_section
