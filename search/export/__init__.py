"""Export of a finished (or interrupted) search: best configs, the trials table, a summary.

`export_experiment(results/<exp>)` reads what the search wrote

    config.yaml       the resolved base config (`load_config` reads it)
    <target>/         one Tune experiment folder per split (listed in data.targets), with
                      round-<k>/ folders when a resume added trials (`ExperimentLocations.round`)
    optuna.db         Optuna storage, one study per split named `<output.name>/<target>`

and writes (the module that computes each file in brackets)

    best/<target>.yaml   [best_configs] a complete config: base + the best trial's values,
                         one target, runnable as is by `python train.py --config ...`
    trials.parquet       [trials_table] one row per trial × split (schema: `trials_schema`)
    summary.md           [summary] per split: best value, oracle accuracy, chosen values,
                         counts, importance [importance], the validator ranking and each
                         validator's oracle gap (what selecting by it would cost), linking
    plots/               the pictures of each split's search [search.plots]

then, in the splits whose search is finished, deletes the checkpoints of the trials it did
not export [pruning].

Computed first, written last. The content of every file (each best config's text, the
Parquet bytes, each picture's PNG bytes, summary.md's text) is computed in memory before
the first file is touched, so an error until then (a best config that cannot be built, a
picture that cannot be drawn, the summary's rendering) changes and deletes nothing of the
previous export, locally or in object storage. The write phase (`_write`) then writes the
new files, each whole (a local temp file + rename; one PUT in object storage), removes the
stale ones (the best config of a split without an exportable trial, a picture that can no
longer be drawn), and writes summary.md last. It is no transaction: if writing itself fails
halfway (a full disk, a lost connection), some files are this export's and the others the
previous one's, none is half-written, and summary.md is still the previous one: the other
files may be newer than summary.md, never older. Exporting again completes it (the files
depend only on what the search wrote).

Works offline: no Ray cluster is started (Tune's files are read as files). The
experiment may be a local folder or in object storage (see search/storage.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lacmfer.config import ExperimentConfig
from lacmfer.errors import UserError
from search.analysis import TrialRecord, check_scope, read_split
from search.export.best_configs import best_config_files
from search.export.importance import read_studies
from search.export.pruning import prune_finished_splits
from search.export.results import ExportSummary
from search.export.splits import split_exports
from search.export.summary import SUMMARY_FILE, summary_text
from search.export.trials_table import TRIALS_FILE, trials_parquet
from search.plots import render_search_plots
from search.storage import ExperimentLocations, Location

__all__ = ["ExportSummary", "export_experiment", "read_studies", "write_export"]


def _write(files: list[tuple[Location, bytes | None]], summary: Location, summary_bytes: bytes) -> None:
    """The write phase (see the module docstring): each of `files` whole, in order, then
    the removal of those given None, then `summary`."""
    for path, data in files:
        if data is not None:
            path.write_bytes(data)
    for path, data in files:
        if data is None:
            path.unlink()
    summary.write_bytes(summary_bytes)


def write_export(places: ExperimentLocations, cfg: ExperimentConfig, records: dict[str, list[TrialRecord]],
                 scope: str = "best", missing: list[str] | None = None) -> ExportSummary:
    """Write best configs, trials.parquet, the plots and summary.md from the records of each split.

    Everything is computed first and written last, each file atomically (see the module
    docstring for what that guarantees). A split without an exportable trial gets no best
    config (a stale one from an earlier export is removed).
    """
    check_scope(scope)
    missing = list(missing or [])
    exp_dir = places.folder
    studies, database_found, damaged = read_studies(places, list(records))
    splits = split_exports(places, records, scope, studies, database_found, damaged)
    trials_path, summary_path = exp_dir / TRIALS_FILE, exp_dir / SUMMARY_FILE
    files = best_config_files(cfg, places, splits, scope)
    files.append((trials_path, trials_parquet(cfg, records, splits, scope)))
    plots = render_search_plots(cfg, studies, records, {s.target: s.ranking for s in splits},
                                {s.target: s.picks for s in splits})
    files += plots.files(exp_dir)
    summary = summary_text(places, cfg, splits, missing, scope, plots.section)
    _write(files, summary_path, summary.encode("utf-8"))  # the first change to the experiment's files
    if damaged is not None:
        raise UserError(f"search.storage {damaged.description}: not a readable Optuna storage ({damaged.reason}); "
                        f"exported without it to {exp_dir}: best configs, trials.parquet and summary.md, with no "
                        "importances and no search plots; `tune.py --rebuild-study` rebuilds it from the trials' reports")
    return ExportSummary(exp_dir, cfg.eval.objective, scope, splits, missing, trials_path, summary_path)


def export_experiment(exp_dir: Path | str, scope: str | None = None, finished: Sequence[str] = ()) -> ExportSummary:
    """Export `results/<exp>`: see the module docstring for what is read and written.

    `scope` is how a trial's objective is summarised, `best` (its best evaluation) or
    `last`; default: the search's own `search.scope`, which is also what Optuna was told.
    In the `finished` splits (whose search will not be resumed), checkpoints of trials
    other than the exported best are removed unless `search.keep_checkpoints` is set.
    """
    cfg, places = ExperimentLocations.read(exp_dir)
    exp_dir = places.folder
    scope = scope or cfg.search.scope
    check_scope(scope)
    present = [t for t in cfg.data.targets if (exp_dir / t).is_dir()]
    if not present:
        raise UserError(f"{exp_dir}: no split folder found (expected one of {', '.join(cfg.data.targets)})")
    records = {t: read_split(places, t) for t in present}
    missing = [t for t in cfg.data.targets if t not in present]
    summary = write_export(places, cfg, records, scope, missing)
    if not cfg.search.keep_checkpoints and exp_dir.is_local:  # object storage: kept (README)
        summary.removed_checkpoints, summary.removed_bytes = prune_finished_splits(places, summary.splits, finished)
    return summary
