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

Pictures are drawn in memory (`render_search_plots`: PNG bytes and the summary's section)
so that the export can draw them all before it writes any file; `SearchPlots.files` says
where each goes, and which picture of an earlier export is out of date and must go.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from lacmfer.config import ExperimentConfig
from lacmfer.names import non_oracle_objectives
from lacmfer.reports.oracle_gap import Pick
from search.analysis import (
    OBJECTIVE_KEY,
    ORACLE_METRIC,
    TrialRecord,
    evaluation_pairs,
    importance_evaluator,
    param_importances,
)
from search.storage import Location, location

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


def _png(fig: Any) -> bytes:
    """The figure as PNG bytes at the fixed size, laid out; the figure is closed."""
    plt = _pyplot()
    fig.set_size_inches(*FIGURE_SIZE_IN)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI)
    plt.close(fig)
    return png.getvalue()


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


def plot_history(study: optuna.Study, objective: str) -> bytes | None:
    """Optuna's optimisation history; None when the study has no complete trial."""
    if not _complete(study):
        return None
    from optuna.visualization.matplotlib import plot_optimization_history

    # The style context also undoes Optuna's global `plt.style.use` when it ends.
    with warnings.catch_warnings(), _pyplot().style.context(STYLE):
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        ax = plot_optimization_history(study, target_name=objective)
        ax.set_title(f"{objective} of each complete trial, best so far")
        return _png(ax.figure)


def plot_importance(study: optuna.Study) -> bytes | None:
    """Optuna's importance bars, by the evaluator and rule of the summary's table
    (`search.analysis.param_importances`); None where that table has none."""
    if not param_importances(study):
        return None
    from optuna.visualization.matplotlib import plot_param_importances

    with warnings.catch_warnings(), _pyplot().style.context(STYLE):
        warnings.simplefilter("ignore")  # experimental backend; small studies warn about accuracy
        ax = plot_param_importances(study, evaluator=importance_evaluator())
        return _png(ax.figure)


def plot_learning_curves(records: Sequence[TrialRecord], objective: str) -> bytes | None:
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
        return _png(fig)


def plot_validators(records: Sequence[TrialRecord], ranking: Sequence[tuple[str, float]], objective: str,
                    picks: Mapping[str, Pick | None] | None = None) -> bytes | None:
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
        return _png(fig)


@dataclass(frozen=True)
class SearchPlots:
    """Every split's pictures, drawn in memory, and the summary.md section linking them."""

    #: File name under plots/ → PNG bytes; None for a picture that could not be drawn
    #: (that of an earlier export is out of date).
    pictures: dict[str, bytes | None]
    section: str

    def files(self, folder: Location) -> list[tuple[Location, bytes | None]]:
        """Where each picture goes under the experiment's `folder`: its bytes, or None where
        an earlier export's picture is to be removed."""
        return [(folder / PLOTS_DIR / name, png) for name, png in self.pictures.items()]


def render_search_plots(cfg: ExperimentConfig, studies: Mapping[str, optuna.Study | None],
                        records: dict[str, list[TrialRecord]], rankings: dict[str, Sequence[tuple[str, float]]],
                        picks: Mapping[str, Mapping[str, Pick | None]] | None = None) -> SearchPlots:
    """Draw every split's pictures in memory; nothing is written.

    `studies`: each split's Optuna study (`load_split_study`), None where there is none."""
    objective = cfg.eval.objective
    pictures: dict[str, bytes | None] = {}
    lines = ["## Plots", ""]
    for target, split_records in records.items():
        study = studies[target]
        drawn = {
            "history": plot_history(study, objective) if study else None,
            "curves": plot_learning_curves(split_records, objective),
            "validators": plot_validators(split_records, rankings.get(target, []), objective,
                                          (picks or {}).get(target)),
            "importance": plot_importance(study) if study else None,
        }
        lines += [f"### {target}", ""]
        for kind, title in PICTURES.items():
            name = f"{target}_{kind}.png"
            pictures[name] = drawn[kind]
            if drawn[kind] is None:
                lines.append(f"- {title}: not enough trials or evaluations to draw it.")
            else:
                lines.append(f"![{target}: {title}]({PLOTS_DIR}/{name})")
        lines.append("")
    return SearchPlots(pictures, "\n".join(lines))


def write_search_plots(out_dir: Path, cfg: ExperimentConfig, studies: Mapping[str, optuna.Study | None],
                       records: dict[str, list[TrialRecord]], rankings: dict[str, Sequence[tuple[str, float]]],
                       picks: Mapping[str, Mapping[str, Pick | None]] | None = None) -> str:
    """Draw every split's pictures (`render_search_plots`) into `out_dir/plots/`, each file
    atomically, removing those that can no longer be drawn; returns the summary.md section."""
    plots = render_search_plots(cfg, studies, records, rankings, picks)
    for path, png in plots.files(location(out_dir)):
        if png is None:
            path.unlink()
        else:
            path.write_bytes(png)
    return plots.section
