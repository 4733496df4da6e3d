"""Split drivers writing to one Optuna storage at once (every split in flight): no lock error, no lost trial.

Each writer is a process, as each split's driver is, and writes as `OptunaStudySearcher`
does (ask, the Tune trial id, sampled values, an intermediate value per evaluation, tell)
with the TPE sampler of `search.tuner` (constant liar: every proposal reads the running
trials too), all starting together. The storage is opened first by the test, as the top
driver does before it starts the split drivers: processes creating SQLite's tables at the
same time fail all but one (a UNIQUE constraint on alembic_version).
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import optuna
import pytest

from lacmfer.config import config_from_dict
from search.storage import ExperimentLocations

WRITERS, TRIALS, EVALUATIONS = 3, 12, 4


def _config(results: Path, storage: str | None):
    return config_from_dict({"search": {"storage": storage}, "output": {"results_dir": str(results), "name": "shared"}})


def _search(results: str, storage: str | None, split: str, start: Any) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=5, multivariate=True, constant_liar=True)
    study = optuna.create_study(study_name=f"shared/{split}", storage=ExperimentLocations.of(_config(Path(results), storage)).optuna_storage(),
                                sampler=sampler, direction="maximize", load_if_exists=True)
    start.wait(timeout=120)  # a writer that failed before it does not hang the others
    for i in range(TRIALS):
        trial = study.ask()
        trial.set_user_attr("tune_trial_id", f"{split}_{i}")
        x, y = trial.suggest_float("x", 0.1, 1.6, log=True), trial.suggest_float("y", 0.2, 0.8)
        for step in range(1, EVALUATIONS + 1):
            trial.report(x * y * step, step)
        study.tell(trial, x * y * EVALUATIONS)


@pytest.mark.parametrize("storage", ["sqlite (default)", "journal"])
def test_splits_writing_one_storage_at_once_lose_nothing(tmp_path, storage):
    path = None if storage.startswith("sqlite") else str(tmp_path / "optuna.journal")
    ExperimentLocations.of(_config(tmp_path, path)).optuna_storage()  # its tables, as the top driver creates them
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(WRITERS)
    writers = [context.Process(target=_search, args=(str(tmp_path), path, f"S{k}", start)) for k in range(WRITERS)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=300)
    assert [w.exitcode for w in writers] == [0] * WRITERS, "a writer failed (see its traceback above)"

    read = ExperimentLocations.of(_config(tmp_path, path)).optuna_storage()
    assert sorted(optuna.study.get_all_study_names(read)) == [f"shared/S{k}" for k in range(WRITERS)]
    for k in range(WRITERS):
        trials = optuna.load_study(study_name=f"shared/S{k}", storage=read).trials
        assert len(trials) == TRIALS and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        assert sorted(t.user_attrs["tune_trial_id"] for t in trials) == sorted(f"S{k}_{i}" for i in range(TRIALS))
        assert all(len(t.intermediate_values) == EVALUATIONS for t in trials)
