"""The Optuna side of an export: each split's study, read once into memory (for the
importances here and for the search plots), and the hyperparameter importance computed
from it, with a note that says how (or why there is none) for summary.md."""

from __future__ import annotations

from collections.abc import Sequence

import optuna

from search.analysis import MIN_COMPLETE_FOR_IMPORTANCE, param_importances
from search.plots import load_split_study
from search.storage import OPTUNA_DB, DamagedStudyStorage, ExperimentLocations, reading_study_storage


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


def absent_study(places: ExperimentLocations, target: str, database_found: bool,
                 damaged: DamagedStudyStorage | None) -> str:
    """Why a split has no study (`read_studies` found none for it), naming the storage."""
    db = places.storage or places.folder / OPTUNA_DB
    if damaged is not None:
        return f"{db} is not a readable Optuna storage ({damaged.reason})"
    return f"no study '{places.study_name(target)}' in {db}" if database_found else f"{db} not found"


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
