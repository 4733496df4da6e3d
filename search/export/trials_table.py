"""trials.parquet: one row per trial × split, every searched value and the metrics that
summarise the trial (best and last), for analysis outside the search. Its columns and
types come from the search space, so the schema is the same whichever trials ran
(`trials_schema`); the experiment, objective, scope and oracle flag are its metadata."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lacmfer.config import ExperimentConfig, ParamSpec
from lacmfer.hparams import HPARAMS
from lacmfer.names import ORACLE_OBJECTIVE
from search.analysis import OBJECTIVE_KEY, ORACLE_METRIC, TrialRecord
from search.export.results import SplitExport

TRIALS_FILE = "trials.parquet"


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


def trials_parquet(cfg: ExperimentConfig, records: dict[str, list[TrialRecord]], splits: list[SplitExport],
                   scope: str) -> bytes:
    """The bytes of trials.parquet: every split's trials in order, each split's exported
    trial marked (`splits`, one per split of `records`)."""
    params = param_columns(cfg, [r for rs in records.values() for r in rs])
    exported = {split.target: split.best for split in splits}
    rows = [trial_row(r, scope, params, exported=r is exported[target])
            for target, split_records in records.items() for r in split_records]
    schema = trials_schema(params).with_metadata(
        {"experiment": cfg.output.name, "objective": cfg.eval.objective, "scope": scope,
         "oracle": str(cfg.eval.objective == ORACLE_OBJECTIVE).lower()}
    )
    parquet = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), parquet)
    return parquet.getvalue().to_pybytes()
