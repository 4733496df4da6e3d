"""Export of a finished (or interrupted) search: best configs, the trials table, a summary.

`export_experiment(results/<exp>)` reads what the search wrote

    config.yaml       the resolved base config (`load_config` reads it)
    <target>/         one Tune experiment folder per split (listed in data.targets), with
                      round-<k>/ folders when a resume added trials (`ExperimentLocations.round`)
    optuna.db         Optuna storage, one study per split named `<output.name>/<target>`

and writes, each file atomically (a local temp file + rename; one PUT in object
storage), after everything was computed:

    best/<target>.yaml   a complete config: base + the best trial's values, one target,
                         runnable as is by `python train.py --config ...`
    trials.parquet       one row per trial × split (schema: `trials_schema`)
    summary.md           per split: best value, oracle accuracy, chosen values, counts,
                         importance, the validator ranking and each validator's oracle
                         gap (what selecting by it would cost), linking the pictures of
    plots/               each split's search (search.plots)

Works offline: no Ray cluster is started (Tune's files are read as files). The
experiment may be a local folder or in object storage (see search/storage.py).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lacmfer.config import ExperimentConfig, ParamSpec, config_text
from lacmfer.errors import UserError
from lacmfer.hparams import HPARAMS, to_config_values
from lacmfer.names import ENSEMBLE_MEMBERS, ORACLE_OBJECTIVE
from lacmfer.reports.oracle_gap import DECILES, Pick
from search.analysis import (
    MIN_COMPLETE_FOR_IMPORTANCE,
    OBJECTIVE_KEY,
    ORACLE_METRIC,
    RANK_AVERAGE,
    STATUSES,
    TrialRecord,
    check_scope,
    mean_oracle_gap,
    param_importances,
    read_split,
    select_best,
    validator_picks,
    validator_ranking,
)
from search.plots import PLOTS_DIR, load_split_study, write_search_plots
from search.slots import slots_section
from search.storage import OPTUNA_DB, DamagedStudyStorage, ExperimentLocations, Location, reading_study_storage

SCOPE_TEXT = {
    "best": "best evaluation (the max of the objective over the trial's evaluations)",
    "last": "last evaluation (the objective at the trial's last evaluation)",
}
ORACLE_BANNER = (
    "ORACLE SELECTION: the objective is oracle_target_acc, i.e. model selection on target TEST "
    "labels. Not a valid unsupervised result; for reference only."
)


@dataclass
class SplitExport:
    """What the export found and wrote for one split."""

    target: str
    counts: dict[str, int]
    best: TrialRecord | None = None
    best_evaluation: dict[str, float] | None = None
    best_config: Location | None = None
    importances: dict[str, float] = field(default_factory=dict)
    importance_note: str | None = None
    ranking: list[tuple[str, float]] = field(default_factory=list)
    ranking_points: int = 0
    picks: dict[str, Pick | None] = field(default_factory=dict)

    @property
    def best_value(self) -> float | None:
        return None if self.best_evaluation is None else self.best_evaluation[OBJECTIVE_KEY]


@dataclass
class ExportSummary:
    """The result of `export_experiment`; `str()` gives the console report."""

    exp_dir: Location
    objective: str
    scope: str
    splits: list[SplitExport]
    missing_targets: list[str]
    trials_table: Location
    summary: Location
    removed_checkpoints: int = 0
    removed_bytes: int = 0

    @property
    def oracle(self) -> bool:
        return self.objective == ORACLE_OBJECTIVE

    def __str__(self) -> str:
        lines = [f"export of {self.exp_dir}: objective {self.objective}, scope {self.scope}"]
        if self.oracle:
            lines.append(f"!!! {ORACLE_BANNER} !!!")
        for split in self.splits:
            counts = ", ".join(f"{split.counts[s]} {s}" for s in STATUSES)
            if split.best is None:
                lines.append(f"  {split.target:<8} no trial to export ({counts})")
                continue
            oracle = _fmt(split.best_evaluation.get(ORACLE_METRIC, math.nan))
            lines.append(
                f"  {split.target:<8} {self.objective} {_fmt(split.best_value)} (trial {split.best.trial_id}, "
                f"{split.best.status}), target_acc {oracle} -> {split.best_config}   [{counts}]"
            )
        if self.missing_targets:
            lines.append(f"  not run: {', '.join(self.missing_targets)}")
        lines.append(f"summary: {self.summary}   trials: {self.trials_table}")
        if self.removed_checkpoints:
            lines.append(f"removed {self.removed_checkpoints} checkpoint(s) of trials not exported "
                         f"({self.removed_bytes / 2**20:.1f} MiB; search.keep_checkpoints: true keeps them)")
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------- the trials table


def _arrow_type(values: list[Any]) -> pa.DataType:
    """Arrow type of a column of Python values (bool, int, float or else string)."""
    values = [v for v in values if v is not None]
    if values and all(isinstance(v, bool) for v in values):
        return pa.bool_()
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return pa.int64()
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return pa.float64()  # also the type of an all-null column
    return pa.string()


def param_type(spec: ParamSpec | None, observed: list[Any]) -> pa.DataType:
    """A search column's type, from its declared distribution so it does not depend on
    which trials happened to run; from the observed values for undeclared names."""
    if spec is None:
        return _arrow_type(observed)
    if spec.distribution in ("loguniform", "uniform"):
        return pa.float64()
    if spec.distribution == "int":
        return pa.int64()
    if spec.distribution == "choice":
        return _arrow_type(list(spec.choices or []))
    return _arrow_type([spec.value])


def param_columns(cfg: ExperimentConfig, records: list[TrialRecord]) -> dict[str, pa.DataType]:
    """Search-space names in the config's order, then any other sampled names."""
    names = list(cfg.search.space)
    names += [n for n in HPARAMS if n not in names and any(n in r.params for r in records)]
    return {n: param_type(cfg.search.space.get(n), [r.params.get(n) for r in records]) for n in names}


def trials_schema(params: dict[str, pa.DataType]) -> pa.Schema:
    """Column order and types of trials.parquet (stable for a given search space)."""
    return pa.schema(
        [("target", pa.string()), ("trial_id", pa.string())]
        + list(params.items())
        + [
            ("status", pa.string()),
            ("evaluations", pa.int64()),
            ("objective_best", pa.float64()),
            ("objective_last", pa.float64()),
            ("target_acc_best", pa.float64()),
            ("target_acc_last", pa.float64()),
            ("target_acc_selected", pa.float64()),
            ("source_val_acc_last", pa.float64()),
            ("time_total_s", pa.float64()),
            ("error", pa.string()),
            ("exported", pa.bool_()),
        ]
    )


def _cell(value: Any, dtype: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_string(dtype):
        return str(value)
    if pa.types.is_floating(dtype):
        return float(value)
    if pa.types.is_integer(dtype) and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def trial_row(record: TrialRecord, scope: str, params: dict[str, pa.DataType], exported: bool) -> dict[str, Any]:
    """One row of trials.parquet. Absent values are null; a NaN that was reported stays NaN."""
    last = record.last or {}
    best_objective = record.best(OBJECTIVE_KEY)
    best_oracle = record.best(ORACLE_METRIC)
    selected = record.selected(scope)
    return {
        "target": record.target,
        "trial_id": record.trial_id,
        **{name: _cell(record.params.get(name), dtype) for name, dtype in params.items()},
        "status": record.status,
        "evaluations": record.evaluations,
        "objective_best": None if best_objective is None else best_objective[OBJECTIVE_KEY],
        "objective_last": last.get(OBJECTIVE_KEY),
        "target_acc_best": None if best_oracle is None else best_oracle[ORACLE_METRIC],
        "target_acc_last": last.get(ORACLE_METRIC),
        "target_acc_selected": None if selected is None else selected.get(ORACLE_METRIC),
        "source_val_acc_last": last.get("source_val_acc"),
        "time_total_s": last.get("time_total_s"),
        "error": record.error,
        "exported": exported,
    }


# ---------------------------------------------------------------- best configs


def best_config(cfg: ExperimentConfig, record: TrialRecord) -> ExperimentConfig:
    """The base config with the trial's sampled values and its single target."""
    values = to_config_values(record.params)
    values["data.targets"] = [record.target]
    return cfg.with_values(values, source=f"trial {record.trial_id} of split {record.target}")


def best_header(cfg: ExperimentConfig, places: ExperimentLocations, split: SplitExport, scope: str,
                path: Location) -> str:
    """The YAML comment of an exported config: where it came from and what it means."""
    record, evaluation = split.best, split.best_evaluation
    assert record is not None and evaluation is not None
    objective = cfg.eval.objective
    oracle = objective == ORACLE_OBJECTIVE
    index = next(i for i, report in enumerate(record.history, start=1) if report is evaluation)
    step = evaluation.get("step")
    lines = [f"!!! {ORACLE_BANNER} !!!"] if oracle else []
    lines += [
        f"Best config of search '{cfg.output.name}' for target {record.target} (exported by search.export).",
        f"Run it as is: python train.py --config {path}",
        f"objective: {objective} (eval.objective, unchanged)",
        f"scope: {scope} = {SCOPE_TEXT[scope]}",
        f"value: {evaluation[OBJECTIVE_KEY]:.6g} at evaluation {index} of {record.evaluations}"
        + (f" (step {int(step)})" if step is not None and math.isfinite(step) else ""),
        f"trial: {record.trial_id} ({record.status}) in {places.split(record.target)}",
        f"oracle target accuracy (target_acc, test labels) at that evaluation: "
        f"{_fmt(evaluation.get(ORACLE_METRIC, math.nan))}"
        + (" -- USED for selection (oracle objective)" if oracle else " -- reported only, not used for selection"),
        "searched values: " + (", ".join(f"{k}={v!r}" for k, v in record.params.items()) or "(none)"),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- importance


def split_importances(study: optuna.Study | None, absent: str) -> tuple[dict[str, float], str | None]:
    """(importances, note): the note says why there are none (`absent` when there is no
    study), or how many trials were used."""
    if study is None:
        return {}, f"not available: {absent}"
    states = [t.state for t in study.get_trials(deepcopy=False)]
    complete = states.count(optuna.trial.TrialState.COMPLETE)
    counts = f"{complete} complete of {len(states)} Optuna trials"
    try:
        importances = param_importances(study)
    except (ValueError, RuntimeError) as err:  # importance is auxiliary: report, do not abort the export
        return {}, f"not available: {err}"
    if not importances:
        return {}, (f"not computed: needs at least {MIN_COMPLETE_FOR_IMPORTANCE} complete trials and 2 varying "
                    f"parameters ({counts}); too few trials rank parameters by chance")
    return importances, f"from {counts} (pruned and failed trials are left out)"


# ---------------------------------------------------------------- summary.md


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
        lines.append(f"- Best {objective} ({scope} evaluation): **{_fmt(split.best_value)}** — trial "
                     f"`{split.best.trial_id}` ({split.best.status}, {split.best.evaluations} evaluations)")
        acc = _fmt(ev.get(ORACLE_METRIC, math.nan))
        if oracle:
            lines.append(f"- Oracle target accuracy at that evaluation: {acc} — **ORACLE: this IS the selection "
                         "metric (target test labels)**")
        else:
            lines.append(f"- Oracle target accuracy at that evaluation: {acc} (target test labels; reported "
                         "only, not used for selection)")
        lines.append(f"- Config: `best/{split.target}.yaml` → "
                     f"`python train.py --config {split.best_config}`")
        lines += ["", "| hyperparameter | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in split.best.params.items()] or ["| (none searched) | |"]
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
                          f"{_fmt(chosen.accuracy)} | {_gap(chosen.gap)} | {'yes' if chosen.worst_decile else 'no'}")
            lines.append(f"| {label} | {'—' if name == RANK_AVERAGE else _fmt(c)} | {pick_cells} |")
        best = next((p.best for p in split.picks.values() if p is not None), math.nan)
        lines += ["", f"Over {split.ranking_points} evaluations of all {total} trials, computed as Musgrave et al. "
                  "(2022) do: weights max(validator rank, oracle rank)² (normalised dense ranks) emphasise the top "
                  "checkpoints, a NaN validator score ranks as the worst. 1 = orders checkpoints "
                  "exactly like the oracle target accuracy; computed with target labels, for choosing an "
                  f"objective, not a model. {_PICK_TEXT} The best target_acc of these evaluations is "
                  f"{_fmt(best)}.", ""]
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


def summary_markdown(cfg: ExperimentConfig, splits: list[SplitExport], missing: list[str], scope: str,
                     ) -> str:
    objective = cfg.eval.objective
    lines = [f"# Search summary: {cfg.output.name}", ""]
    if objective == ORACLE_OBJECTIVE:
        lines += [f"> **{ORACLE_BANNER}**", ""]
    lines += [f"Objective: `{objective}` (maximised); a trial's value is its {SCOPE_TEXT[scope]}.", ""]
    lines += ["| split | trials | completed | stopped early | failed | diverged | best objective | "
              "target_acc at best (oracle) | trial |", "|---|---|---|---|---|---|---|---|---|"]
    for s in splits:
        acc = s.best_evaluation.get(ORACLE_METRIC, math.nan) if s.best_evaluation else None
        lines.append(f"| {s.target} | {sum(s.counts.values())} | "
                     + " | ".join(str(s.counts[k]) for k in STATUSES)
                     + f" | {_fmt(s.best_value)} | {_fmt(acc)} | {s.best.trial_id if s.best else '—'} |")
    lines.append("")
    if missing:
        lines += [f"Not run (no experiment folder): {', '.join(missing)}.", ""]
    lines += oracle_gap_section(splits, objective)
    for split in splits:
        lines += _split_section(cfg, split, scope)
    return "\n".join(lines)


# ---------------------------------------------------------------- the export


def _plots(places: ExperimentLocations, cfg: ExperimentConfig, studies: dict[str, optuna.Study | None],
           records: dict[str, list[TrialRecord]], rankings: dict[str, Sequence[tuple[str, float]]],
           picks: dict[str, dict[str, Pick | None]]) -> str:
    """The search's pictures in `<experiment>/plots/` (`search.plots`); returns their summary.md section.

    In object storage they are drawn in a local folder and uploaded; the split's earlier
    pictures there are replaced.
    """
    if places.folder.is_local:
        return write_search_plots(places.folder.local_path(), cfg, studies, records, rankings, picks)
    with tempfile.TemporaryDirectory(prefix="lacmfer-plots-") as staging:
        staging = Path(staging)
        text = write_search_plots(staging, cfg, studies, records, rankings, picks)
        plots = places.folder / PLOTS_DIR
        for old in plots.fs.get_file_info(pafs.FileSelector(plots.path, allow_not_found=True)):
            if old.base_name.startswith(tuple(f"{target}_" for target in records)):
                plots.fs.delete_file(old.path)
        for picture in sorted((staging / PLOTS_DIR).glob("*.png")):
            (plots / picture.name).upload(picture)
    return text


def _split_exports(
    places: ExperimentLocations, cfg: ExperimentConfig, records: dict[str, list[TrialRecord]], scope: str,
    params: dict[str, pa.DataType], studies: dict[str, optuna.Study | None], database_found: bool,
    damaged: DamagedStudyStorage | None = None,
) -> tuple[list[SplitExport], dict[str, tuple[ExperimentConfig, str]], list[dict[str, Any]]]:
    """Each split's export (best trial, importances, validators), its best config with its
    header, and the trials' parquet rows."""
    db = places.storage or places.folder / OPTUNA_DB
    splits, configs, rows = [], {}, []
    for target, split_records in records.items():
        counts = {s: sum(r.status == s for r in split_records) for s in STATUSES}
        split = SplitExport(target, counts)
        split.best = select_best(split_records, scope)
        if split.best is not None:
            split.best_evaluation = split.best.selected(scope)
            split.best_config = places.folder / "best" / f"{target}.yaml"
            configs[target] = (best_config(cfg, split.best), best_header(cfg, places, split, scope, split.best_config))
        absent = (f"{db} is not a readable Optuna storage ({damaged.reason})" if damaged is not None
                  else f"no study '{places.study_name(target)}' in {db}" if database_found else f"{db} not found")
        split.importances, split.importance_note = split_importances(studies[target], absent)
        split.ranking = validator_ranking(split_records, oracle=ORACLE_METRIC)
        split.ranking_points = sum(
            math.isfinite(report.get(ORACLE_METRIC, math.nan)) for r in split_records for report in r.history
        )
        split.picks = validator_picks(split_records, oracle=ORACLE_METRIC)
        splits.append(split)
        rows += [trial_row(r, scope, params, exported=r is split.best) for r in split_records]
    return splits, configs, rows


def read_studies(places: ExperimentLocations, targets: Sequence[str]
                 ) -> tuple[dict[str, optuna.Study | None], bool, DamagedStudyStorage | None]:
    """Each split's study, copied into memory in one read of the storage (with results in
    object storage, one download of the database); whether a storage was found; and the
    error of a damaged one, whose studies are then all None (the export goes on without them)."""
    try:
        with places.readable_optuna_storage() as storage, reading_study_storage(places.storage_description()):
            studies: dict[str, optuna.Study | None] = {}
            for target in targets:
                name = places.study_name(target)
                study = load_split_study(storage, name)
                if study is not None:  # read now, inside the guard: a damaged page fails here, not in a plot
                    memory = optuna.storages.InMemoryStorage()
                    optuna.copy_study(from_study_name=name, from_storage=storage, to_storage=memory)
                    study = optuna.load_study(study_name=name, storage=memory)
                studies[target] = study
            return studies, storage is not None, None
    except DamagedStudyStorage as err:
        return dict.fromkeys(targets), True, err


def write_export(places: ExperimentLocations, cfg: ExperimentConfig, records: dict[str, list[TrialRecord]],
                 scope: str = "best", missing: list[str] | None = None) -> ExportSummary:
    """Write best configs, trials.parquet and summary.md from the records of each split.

    Everything is computed first and written last, each file atomically, so an error
    leaves the previous export untouched. A split without an exportable trial gets no
    best config (a stale one from an earlier export is removed).
    """
    check_scope(scope)
    missing = list(missing or [])
    params = param_columns(cfg, [r for rs in records.values() for r in rs])
    studies, database_found, damaged = read_studies(places, list(records))
    splits, configs, rows = _split_exports(places, cfg, records, scope, params, studies, database_found, damaged)
    summary_text = summary_markdown(cfg, splits, missing, scope)
    summary_text += "\n".join(["", *slots_section(places.slots_record, places.timeline)])
    summary_text += "\n" + _plots(places, cfg, studies, records, {s.target: s.ranking for s in splits},
                                  {s.target: s.picks for s in splits})
    schema = trials_schema(params).with_metadata(
        {"experiment": cfg.output.name, "objective": cfg.eval.objective, "scope": scope,
         "oracle": str(cfg.eval.objective == ORACLE_OBJECTIVE).lower()}
    )
    table = pa.Table.from_pylist(rows, schema=schema)

    exp_dir = places.folder
    for split in splits:
        path = exp_dir / "best" / f"{split.target}.yaml"
        if split.target in configs:
            path.write_text(config_text(*configs[split.target]))
        else:
            path.unlink()
    trials_path, summary_path = exp_dir / "trials.parquet", exp_dir / "summary.md"
    parquet = pa.BufferOutputStream()
    pq.write_table(table, parquet)
    trials_path.write_bytes(parquet.getvalue().to_pybytes())
    summary_path.write_text(summary_text)
    if damaged is not None:
        raise UserError(f"search.storage {damaged.description}: not a readable Optuna storage ({damaged.reason}); "
                        f"exported without it to {exp_dir}: best configs, trials.parquet and summary.md, with no "
                        "importances and no search plots; `tune.py --rebuild-study` rebuilds it from the trials' reports")
    return ExportSummary(exp_dir, cfg.eval.objective, scope, splits, missing, trials_path, summary_path)


def remove_checkpoints(split_dir: Path, keep_trial_id: str | None) -> tuple[int, int]:
    """Delete the checkpoint folders of every trial in `split_dir` (one round's Tune
    experiment folder) but `keep_trial_id`'s.

    A trial folder is recognised by the `trial_id` of its first report (result.json).
    Returns (checkpoints removed, bytes freed).
    """
    removed = freed = 0
    for result in sorted(Path(split_dir).glob("*/result.json")):
        with open(result, encoding="utf-8") as lines:
            first = lines.readline()
        if not first.strip() or json.loads(first).get("trial_id") == keep_trial_id:
            continue
        for checkpoint in sorted(result.parent.glob("checkpoint_*")):
            freed += sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file())
            shutil.rmtree(checkpoint)
            removed += 1
    return removed, freed


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
        for split in summary.splits:
            if split.target in finished:
                for folder in places.rounds(split.target):
                    removed, freed = remove_checkpoints(folder.local_path(), split.best and split.best.trial_id)
                    summary.removed_checkpoints += removed
                    summary.removed_bytes += freed
    return summary
