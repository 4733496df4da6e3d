"""What the export finds in each split, from the trials' records and the split's study:
counts by status, the best trial and its evaluation (by the scope), importances, the
validator ranking and each validator's pick. Computes; writes nothing."""

from __future__ import annotations

import math

import optuna

from search.analysis import (
    ORACLE_METRIC,
    STATUSES,
    TrialRecord,
    select_best,
    validator_picks,
    validator_ranking,
)
from search.export.best_configs import best_config_location
from search.export.importance import absent_study, split_importances
from search.export.results import SplitExport
from search.storage import DamagedStudyStorage, ExperimentLocations


def split_exports(places: ExperimentLocations, records: dict[str, list[TrialRecord]], scope: str,
                  studies: dict[str, optuna.Study | None], database_found: bool,
                  damaged: DamagedStudyStorage | None = None) -> list[SplitExport]:
    """Each split's export, in the order of `records`; `studies`, `database_found` and
    `damaged` as `read_studies` returned them."""
    splits = []
    for target, split_records in records.items():
        split = SplitExport(target, {s: sum(r.status == s for r in split_records) for s in STATUSES})
        split.best = select_best(split_records, scope)
        if split.best is not None:
            split.best_evaluation = split.best.selected(scope)
            split.best_config = best_config_location(places, target)
        split.importances, split.importance_note = split_importances(
            studies[target], absent_study(places, target, database_found, damaged))
        split.ranking = validator_ranking(split_records, oracle=ORACLE_METRIC)
        split.ranking_points = sum(
            math.isfinite(report.get(ORACLE_METRIC, math.nan)) for r in split_records for report in r.history
        )
        split.picks = validator_picks(split_records, oracle=ORACLE_METRIC)
        splits.append(split)
    return splits
