"""best/<target>.yaml: for each split, a complete config (the base config with the best
trial's values and that one target) that `python train.py --config` runs as is, under a
YAML comment saying where it came from and what its value means. A split without an
exportable trial gets none: a stale file from an earlier export is to be removed."""

from __future__ import annotations

import math

from lacmfer.config import ExperimentConfig, config_text
from lacmfer.hparams import to_config_values
from lacmfer.names import ORACLE_OBJECTIVE
from search.analysis import OBJECTIVE_KEY, ORACLE_METRIC, TrialRecord
from search.export.results import SplitExport
from search.export.wording import ORACLE_BANNER, SCOPE_TEXT, fmt
from search.storage import ExperimentLocations, Location

BEST_DIR = "best"


def best_config_location(places: ExperimentLocations, target: str) -> Location:
    """Where the split's best config goes."""
    return places.folder / BEST_DIR / f"{target}.yaml"


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
        f"{fmt(evaluation.get(ORACLE_METRIC, math.nan))}"
        + (" -- USED for selection (oracle objective)" if oracle else " -- reported only, not used for selection"),
        "searched values: " + (", ".join(f"{k}={v!r}" for k, v in record.params.items()) or "(none)"),
    ]
    return "\n".join(lines)


def best_config_files(cfg: ExperimentConfig, places: ExperimentLocations, splits: list[SplitExport],
                      scope: str) -> list[tuple[Location, bytes | None]]:
    """Each split's best config file and its text; None where there is none to export (a
    stale one is removed). Raises (a UserError naming the value) if a config cannot be built."""
    files: list[tuple[Location, bytes | None]] = []
    for split in splits:
        path = best_config_location(places, split.target)
        if split.best is None:
            files.append((path, None))
        else:
            text = config_text(best_config(cfg, split.best), best_header(cfg, places, split, scope, path))
            files.append((path, text.encode("utf-8")))
    return files
