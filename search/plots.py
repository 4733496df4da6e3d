"""Pictures of a search, per split, as PNG files under `results/<exp>/plots/`, linked from summary.md.

- `<target>_history.png`: the objective of each complete trial in trial order with the best
  so far (Optuna's `plot_optimization_history`, from the split's study);
- `<target>_importance.png`: hyperparameter importance (Optuna's `plot_param_importances`,
  complete trials only, with the evaluator and minimum of the summary's table);
- `<target>_curves.png`: every trial's objective at each evaluation, coloured by status
  (completed, stopped early, diverged; from the trials' `result.json`);
- `<target>_validators.png`: each label-free validator against the oracle target accuracy
  over all evaluations of all trials: the points behind the validator ranking, with the
  evaluation each validator picks marked (its oracle gap in the title).

Optuna draws what it has a plot for; the last two are drawn here because Optuna knows
neither the statuses of our trials nor the other validators. matplotlib runs headless
(Agg); every picture has a fixed size in pixels (`FIGURE_SIZE_IN` × `DPI`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from lacmfer.config import ExperimentConfig
from lacmfer.names import non_oracle_objectives
from lacmfer.reports.final_report import save_png
from lacmfer.reports.oracle_gap import Pick
from search.analysis import (
    OBJECTIVE_KEY,
    ORACLE_METRIC,
    TrialRecord,
    evaluation_pairs,
    importance_evaluator,
    param_importances,
)

PLOTS_DIR = "plots"
FIGURE_SIZE_IN, DPI = (8.0, 4.5), 100
STYLE = "ggplot"  # the style Optuna's matplotlib plots set, so every picture looks alike
#: The pictures of a split: file-name kind → title in summary.md.
PICTURES = {
    "history": "objective per trial, best so far",
    "curves": "learning curves by status",
    "validators": "validators against oracle target accuracy",
    "importance": "hyperparameter importance",
}
STATUS_COLOURS = {"completed": "tab:green", "stopped early": "tab:orange", "diverged": "tab:red"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: a search on a cluster has no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Save at the fixed size, atomically (a reader never sees half a PNG)."""
    fig.set_size_inches(*FIGURE_SIZE_IN)
    return save_png(fig, path, DPI)


def load_split_study(storage: str | optuna.storages.BaseStorage | None, name: str) -> optuna.Study | None:
    """The study `name` in `storage` (`ExperimentLocations.readable_optuna_storage`), or None."""
    if storage is None:
        return None
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def _complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value)]


def plot_history(study: optuna.Study, objective: str, path: Path) -> Path | None:
    """Optuna's optimisation history; None when the study has no complete trial."""
    if not _complete(study):
        return None
    from optuna.visualization.matplotlib import plot_optimization_history

    # The style context also undoes Optuna's global `plt.style.use` when it ends.
    with warnings.catch_warnings(), _pyplot().style.context(STYLE):
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        ax = plot_optimization_history(study, target_name=objective)
        ax.set_title(f"{objective} of each complete trial, best so far")
        return _save(ax.figure, path)


def plot_importance(study: optuna.Study, path: Path) -> Path | None:
    """Optuna's importance bars, by the evaluator and rule of the summary's table
    (`search.analysis.param_importances`); None where that table has none."""
    if not param_importances(study):
        return None
    from optuna.visualization.matplotlib import plot_param_importances

    with warnings.catch_warnings(), _pyplot().style.context(STYLE):
        warnings.simplefilter("ignore")  # experimental backend; small studies warn about accuracy
        ax = plot_param_importances(study, evaluator=importance_evaluator())
        return _save(ax.figure, path)


def plot_learning_curves(records: Sequence[TrialRecord], objective: str, path: Path) -> Path | None:
    """The objective of every trial at each evaluation, one line per trial, coloured by status."""
    curves = [r for r in records if r.history and r.status in STATUS_COLOURS]
    if not curves:
        return None
    plt = _pyplot()
    with plt.style.context(STYLE):
        fig, ax = plt.subplots()
        for record in curves:
            steps = [report.get("step", i) for i, report in enumerate(record.history, start=1)]
            values = [report.get(OBJECTIVE_KEY, math.nan) for report in record.history]
            ax.plot(steps, values, marker="o", markersize=3, color=STATUS_COLOURS[record.status], alpha=0.8)
        for status, colour in STATUS_COLOURS.items():
            count = sum(r.status == status for r in curves)
            ax.plot([], [], color=colour, label=f"{status} ({count})")
        ax.set_xlabel("step")
        ax.set_ylabel(objective)
        ax.set_title(f"learning curves: {objective} at each evaluation")
        ax.grid(alpha=0.3)
        ax.legend()
        return _save(fig, path)


def plot_validators(records: Sequence[TrialRecord], ranking: Sequence[tuple[str, float]], objective: str,
                    path: Path, picks: Mapping[str, Pick | None] | None = None) -> Path | None:
    """Each validator against oracle target accuracy over all evaluations, the evaluation it
    picks marked with a star (`search.analysis.validator_picks`); None without target labels."""
    pairs = {name: evaluation_pairs(records, name, ORACLE_METRIC) for name in non_oracle_objectives()}
    if not any(xs.size for xs, _ in pairs.values()):
        return None
    correlation = dict(ranking)
    picks = picks or {}
    plt = _pyplot()
    with plt.style.context(STYLE):
        columns = math.ceil(len(pairs) / 2)
        fig, grid = plt.subplots(2, columns, sharey=True)
        axes = grid.reshape(-1)
        for ax, (name, (xs, ys)) in zip(axes, pairs.items(), strict=False):
            ax.scatter(xs, ys, s=6, alpha=0.6, color="tab:blue" if name != objective else "tab:purple")
            rho = correlation.get(name, math.nan)
            chosen = picks.get(name)
            title = f"{name}{' (obj.)' if name == objective else ''}\nρw " + (f"{rho:.2f}" if math.isfinite(rho)
                                                                                else "n/a")
            if chosen is not None:
                ax.scatter([xs[chosen.index]], [ys[chosen.index]], s=60, marker="*", color="tab:red", zorder=3)
                title += f", gap {100 * chosen.gap:+.1f}"
            ax.set_title(title, fontsize=7)
            ax.tick_params(labelsize=5)
        for ax in axes[len(pairs):]:
            ax.set_visible(False)
        for row in grid:
            row[0].set_ylabel("target acc (ORACLE)", fontsize=7)
        fig.suptitle("validators against oracle target accuracy, every evaluation of every trial; "
                     "★ the evaluation each validator picks (gap in points)", fontsize=8)
        return _save(fig, path)


def write_search_plots(out_dir: Path, cfg: ExperimentConfig, studies: Mapping[str, optuna.Study | None],
                       records: dict[str, list[TrialRecord]], rankings: dict[str, Sequence[tuple[str, float]]],
                       picks: Mapping[str, Mapping[str, Pick | None]] | None = None) -> str:
    """Draw every split's pictures into `out_dir/plots/` (the experiment's folder, or a local
    staging folder for object storage); returns the summary.md section linking them.

    `studies`: each split's Optuna study (`load_split_study`), None where there is none."""
    folder, objective = Path(out_dir) / PLOTS_DIR, cfg.eval.objective
    lines = ["## Plots", ""]
    for target, split_records in records.items():
        study = studies[target]
        paths = {kind: folder / f"{target}_{kind}.png" for kind in PICTURES}
        drawn = {
            "history": plot_history(study, objective, paths["history"]) if study else None,
            "curves": plot_learning_curves(split_records, objective, paths["curves"]),
            "validators": plot_validators(split_records, rankings.get(target, []), objective, paths["validators"],
                                          (picks or {}).get(target)),
            "importance": plot_importance(study, paths["importance"]) if study else None,
        }
        lines += [f"### {target}", ""]
        for kind, title in PICTURES.items():
            if drawn[kind] is None:
                paths[kind].unlink(missing_ok=True)  # a picture of an earlier export would be out of date
                lines.append(f"- {title}: not enough trials or evaluations to draw it.")
            else:
                lines.append(f"![{target}: {title}]({PLOTS_DIR}/{paths[kind].name})")
        lines.append("")
    return "\n".join(lines)
