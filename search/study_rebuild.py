"""A split's Optuna study rebuilt from the trials' own reports, for a damaged or lost `optuna.db`.

    python tune.py --rebuild-study --name <experiment>

Everything the searcher told Optuna is in the trials' Tune reports (`result.json`, the
check `tests/test_search.py` makes trial by trial): each Tune trial becomes one Optuna
trial with its sampled values, every evaluation's objective as an intermediate value at
its `training_iteration`, and the state and value `search.tuner.OptunaStudySearcher`
gives a trial that ended so: completed → COMPLETE with its best (or last, `search.scope`)
finite objective; stopped early → PRUNED with its last finite value; diverged → PRUNED
and infeasible (the `diverged` constraint TPE ranks last); failed → FAIL. Trials are
added in the order Tune created them, which is the order they were proposed in (Tune's
trial ids are random, so not in their sorted order).

What it cannot give back: Optuna trials no Tune trial ran (a killed driver's last
proposal, told FAIL on resume anyway) and the FAIL first attempt of a trial retried after
an error (the retry is its trial here). Only a search whose splits all finished is
rebuilt: a Tune experiment with unfinished trials keeps its searcher's links into the old
database, which a rebuilt one does not have.
"""

from __future__ import annotations

import math
import os

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from lacmfer.config import ExperimentConfig, ParamSpec
from lacmfer.errors import UserError
from search.analysis import STATUSES, TrialRecord, read_split
from search.spaces import SearchSpace
from search.storage import OPTUNA_DB, ExperimentLocations
from search.tuner import DIVERGED_CONSTRAINT, TUNE_TRIAL_ID

State = optuna.trial.TrialState


def distribution(spec: ParamSpec) -> BaseDistribution:
    """The Optuna distribution `search.spaces.SearchSpace` samples a parameter of `spec` from."""
    if spec.distribution == "loguniform":
        return FloatDistribution(spec.low, spec.high, log=True)
    if spec.distribution == "uniform":
        return FloatDistribution(spec.low, spec.high)
    if spec.distribution == "int":
        return IntDistribution(int(spec.low), int(spec.high))
    return CategoricalDistribution(spec.choices)


def rebuilt_trial(record: TrialRecord, space: SearchSpace, scope: str) -> optuna.trial.FrozenTrial:
    """The Optuna trial the searcher made of `record` (see the module doc)."""
    sampled = {n: v for n, v in record.params.items()
               if n in space.space and space.space[n].distribution != "constant"}
    evaluations = {int(r["training_iteration"]): float(r["objective"]) for r in record.history}
    finite = [v for v in evaluations.values() if math.isfinite(v)]
    last = evaluations[max(evaluations)] if evaluations else math.nan
    value: float | None = None
    if record.status == "completed":
        state = State.COMPLETE
        value = max(finite) if scope == "best" else last
    elif record.status in ("stopped early", "diverged"):
        state, value = State.PRUNED, (last if math.isfinite(last) else None)
    else:
        state = State.FAIL
    if state == State.COMPLETE and (value is None or not math.isfinite(value)):
        state, value = State.FAIL, None
    trial = optuna.trial.create_trial(
        state=state, value=value, params=sampled,
        distributions={n: distribution(space.space[n]) for n in sampled},
        intermediate_values=evaluations, user_attrs={TUNE_TRIAL_ID: record.trial_id},
        constraints={DIVERGED_CONSTRAINT: 1.0} if record.status == "diverged" else None,
    )
    return trial


def rebuild_study(cfg: ExperimentConfig, records: list[TrialRecord], storage: str | optuna.storages.BaseStorage,
                  study_name: str) -> optuna.Study:
    """Create `study_name` in `storage` holding one trial per record, in the records' order."""
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize")
    space = SearchSpace(cfg.search.space)
    study.add_trials([rebuilt_trial(record, space, cfg.search.scope) for record in records])
    return study


def rebuild_experiment(places: ExperimentLocations, cfg: ExperimentConfig) -> list[str]:
    """Rebuild every split's study of a finished local experiment into a fresh default `optuna.db`;
    the old file is kept beside it as `optuna.db.damaged`. Returns a line per split."""
    from ray.tune import ExperimentAnalysis

    if places.storage is not None or not places.folder.is_local:
        raise UserError(f"--rebuild-study: rebuilds the default SQLite {OPTUNA_DB} of a local experiment; this one "
                        f"keeps its studies in {places.storage_description()}")
    targets = [t for t in cfg.data.targets if places.rounds(t)]
    created: dict[str, int] = {}  # Tune trial id → its place in the order Tune created (asked) them
    for target in targets:
        for path in places.rounds(target):
            # ExperimentAnalysis lists trials in no set order; Tune's tag starts with the trial's
            # creation count within its round ("3_hyper_align=..."), which is the order asked.
            trials = sorted(ExperimentAnalysis(str(path)).trials, key=lambda t: int(t.experiment_tag.split("_", 1)[0]))
            created.update((t.trial_id, len(created)) for t in trials)
            unfinished = [t.trial_id for t in trials if t.status not in ("TERMINATED", "ERROR")]
            if unfinished:
                raise UserError(f"--rebuild-study: split {target} has unfinished trials ({', '.join(unfinished[:3])}"
                                f"{', ...' if len(unfinished) > 3 else ''}); only a finished search is rebuilt")
    database = places.default_database
    fresh = database.with_name(f"{OPTUNA_DB}.rebuilding")
    fresh.unlink(missing_ok=True)
    lines = []
    for target in targets:
        records = sorted(read_split(places, target), key=lambda r: created[r.trial_id])
        rebuild_study(cfg, records, f"sqlite:///{fresh}", places.study_name(target))
        counts = ", ".join(f"{sum(r.status == s for r in records)} {s}" for s in STATUSES
                           if any(r.status == s for r in records))
        lines.append(f"{target}: study {places.study_name(target)} rebuilt from {len(records)} trial(s) ({counts})")
    if database.exists():
        os.replace(database, database.with_name(f"{OPTUNA_DB}.damaged"))
    os.replace(fresh, database)
    return lines
