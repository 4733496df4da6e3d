"""The Tuner of one target split: an Optuna sampler proposes (TPE by default), a Tune
scheduler stops (ASHA by default; `search.algorithms`), fractional resources.

Every trial reports the metric `objective` (higher is better for every validator, see
`lacmfer.method.validators`), so the search always maximises it.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.search import ConcurrencyLimiter, Searcher

from lacmfer.config import ExperimentConfig
from lacmfer.names import RunStatus
from lacmfer.run.outcome import Evaluation, run_status
from search.algorithms import make_sampler, make_scheduler, split_seed
from search.spaces import SearchSpace, default_point
from search.storage import ExperimentLocations, Location
from trainables.lacmfer_trainable import lacmfer_trainable

METRIC, MODE = "objective", "max"


#: Optuna user attribute holding the Tune trial id, so an Optuna trial can be matched to
#: its Tune trial (export, tests, and a resumed driver closing orphaned trials).
TUNE_TRIAL_ID = "tune_trial_id"
#: Optuna constraint set (> 0: infeasible) on diverged trials; see `OptunaStudySearcher`.
DIVERGED_CONSTRAINT = "diverged"


class OptunaStudySearcher(Searcher):
    """Tune's searcher over an Optuna study it owns, telling Optuna what each trial really did.

    Tune asks `suggest` for each new trial: the study's `ask` gives an Optuna trial (an
    enqueued point first) that the define-by-run `space` samples. Only public API is used
    on both sides (Tune's `Searcher` hooks; Optuna's ask, `Trial.report`, tell and
    add_trial), so a Ray release cannot change it silently.

    - Every evaluation reaches Optuna as an intermediate value at its
      `training_iteration`, including the last one and the one on which ASHA stopped
      the trial: Tune does not call `on_trial_result` for a result on which the scheduler
      says STOP (ASHA does at every cut and at `max_t`), it hands that result to
      `on_trial_complete` instead, so it is taken from there.
    - What a trial is told follows its status (`lacmfer.run.outcome.run_status` of its last
      report and of Tune's error flag). It is COMPLETE only when completed (its last report
      is its schedule's final evaluation); its value follows `scope` over all its
      evaluations: the best (default) or the last.
      Tune's stock OptunaSearch tells an ASHA-stopped trial COMPLETE with its partial
      score, which TPE and importance analysis would take as the value of those
      hyperparameters; here it is PRUNED (its intermediate values stay recorded).
    - A stopped-early trial is PRUNED, and so is a diverged one, with a positive `diverged` constraint. TPE ignores FAIL
      trials altogether, so a diverging learning rate told FAIL would be proposed
      again. Optuna 5's TPESampler (`_split_trials`) ranks trials with a positive
      constraint as infeasible, after every complete and pruned trial, so they land in
      its "bad" group and push proposals away. PRUNED alone is not enough: pruned trials
      are ranked first by how far they got, so a trial diverging at its fourth
      evaluation would rank above one ASHA stopped at its first. `study.best_trial` and
      importance read COMPLETE trials only, so the constraint changes nothing there.
    - An errored trial is FAIL: an error is usually the machine's (a lost node, memory),
      not evidence about the hyperparameters, and Tune retries it within max_failures.
      When a resumed experiment retries it again, the retry is added as a new trial
      (`_tell_retry`).

    The study lives in `storage` under `study_name` (created, or continued when it
    exists); `save`/`restore` keep which Optuna trial belongs to which Tune trial, so a
    restored Tuner tells the trials it resumes.
    """

    def __init__(self, space: SearchSpace, metric: str, mode: str, sampler: optuna.samplers.BaseSampler,
                 study_name: str | None = None, storage: str | optuna.storages.BaseStorage | None = None,
                 points_to_evaluate: Sequence[dict[str, Any]] | None = None, scope: str = "best"):
        super().__init__(metric=metric, mode=mode)
        self._space = space
        self._scope = scope
        self.study = optuna.create_study(study_name=study_name, storage=storage, sampler=sampler,
                                         direction="maximize" if mode == "max" else "minimize", load_if_exists=True)
        for point in points_to_evaluate or ():
            self.study.enqueue_trial(point)
        #: Tune trial id → its Optuna trial; and the Tune trials whose Optuna trial is told.
        self._trials: dict[str, optuna.Trial] = {}
        self._told: set[str] = set()
        self._evaluations: dict[str, dict[int, float]] = {}
        # Trials told FAIL for an error, with their evaluations kept: a resumed experiment
        # (`resume_errored`) retries them from their last checkpoint.
        self._errored: set[str] = set()

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if trial_id not in self._trials:
            trial = self.study.ask()
            # Before sampling (a storage write per parameter): a killed driver seldom leaves a trial without it.
            trial.set_user_attr(TUNE_TRIAL_ID, trial_id)
            self._trials[trial_id] = trial
        trial = self._trials[trial_id]
        constants = self._space(trial)  # a parameter sampled again returns its value
        return {**trial.params, **constants}

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__dict__, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._record(trial_id, result)

    def _record(self, trial_id: str, result: dict) -> None:
        """Report one evaluation to Optuna at its step, once."""
        retried = trial_id in self._errored
        if trial_id not in self._trials or (trial_id in self._told and not retried):
            return
        value, step = result.get(self.metric), result.get("training_iteration")
        if value is None or step is None:
            return
        seen = self._evaluations.setdefault(trial_id, {})
        if int(step) in seen:
            return
        seen[int(step)] = float(value)
        if retried:
            return  # its Optuna trial is FAIL for good; `_tell_retry` adds the retry when it ends
        try:
            self._trials[trial_id].report(float(value), int(step))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # told already by a driver that was killed after telling (resume)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self._trials:
            return  # not one of ours (RetriedTrialsConcurrencyLimiter passes every end on)
        if trial_id in self._errored:
            return self._tell_retry(trial_id, result, error)
        if trial_id in self._told:
            return  # Tune may end a trial twice; the first end was told
        if result and not error:
            self._record(trial_id, result)  # the evaluation ASHA stopped it on, or its last
        if error:
            self._errored.add(trial_id)
        evaluations = self._evaluations.get(trial_id, {}) if error else self._evaluations.pop(trial_id, {})
        trial = self._trials[trial_id]
        status = _status(result, error)
        outcome, value = self._outcome(status, result, evaluations)
        if status is RunStatus.DIVERGED and outcome == optuna.trial.TrialState.PRUNED:
            try:
                trial.set_constraint(DIVERGED_CONSTRAINT, 1.0)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass
        # skip_if_finished: a driver killed after telling left the trial finished already.
        self.study.tell(trial, value, state=outcome, skip_if_finished=True)
        self._told.add(trial_id)

    def _outcome(self, status: RunStatus, result: dict | None, evaluations: dict[int, float]
                 ) -> tuple[optuna.trial.TrialState, float | None]:
        """The Optuna state and value of a trial that ended with `status` and `result` (see the class doc)."""
        state = optuna.trial.TrialState
        if status is RunStatus.FAILED or not result or not evaluations:
            return state.FAIL, None
        if status is not RunStatus.COMPLETED:  # stopped early or diverged
            return state.PRUNED, None
        finite = [v for v in evaluations.values() if math.isfinite(v)]
        value = max(finite, default=None) if self._scope == "best" else evaluations[max(evaluations)]
        if value is None or not math.isfinite(value):
            return state.FAIL, None
        return state.COMPLETE, value

    def _tell_retry(self, trial_id: str, result: dict | None, error: bool) -> None:
        """End a trial that a resumed experiment retried after an error.

        Its first Optuna trial is FAIL and cannot change, so the retry is added as a new
        trial with the same values, the same Tune trial id and the evaluations of both
        attempts (the retry went on from the first attempt's last checkpoint). A retry
        that fails again adds nothing.
        """
        if error:
            return
        if result:
            self._record(trial_id, result)
        evaluations = self._evaluations.pop(trial_id, {})
        self._errored.discard(trial_id)
        status = _status(result, error=False)
        outcome, value = self._outcome(status, result, evaluations)
        if outcome == optuna.trial.TrialState.PRUNED:  # as Optuna's tell does: the last value, if finite
            last = evaluations[max(evaluations)]
            value = last if math.isfinite(last) else None
        first = self._trials[trial_id]
        retry = optuna.trial.create_trial(
            state=outcome, value=value, params=first.params, distributions=first.distributions,
            intermediate_values=evaluations, user_attrs={TUNE_TRIAL_ID: trial_id, "retry_of": first.number},
        )
        if status is RunStatus.DIVERGED and outcome == optuna.trial.TrialState.PRUNED:
            retry.set_constraint(DIVERGED_CONSTRAINT, 1.0)
        self.study.add_trial(retry)


def _status(result: dict | None, error: bool) -> RunStatus:
    """How a trial ended, from the last result Tune handed over (None when it had none) and its error flag."""
    return run_status(Evaluation.from_report(result) if result else None, raised=error)


class RetriedTrialsConcurrencyLimiter(ConcurrencyLimiter):
    """ConcurrencyLimiter that also passes on the end of a trial it no longer tracks.

    A trial that errored and that a resumed experiment retries (`resume_errored`) has
    ended once already; the stock limiter drops its second end, so the searcher would
    never hear how the retry went.
    """

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.live_trials:
            return super().on_trial_complete(trial_id, result=result, error=error)
        return self.searcher.on_trial_complete(trial_id, result=result, error=error)


def trainable_for(cfg: ExperimentConfig, target: str) -> Any:
    """The trainable with its config and resources bound (also what `Tuner.restore` needs)."""
    bound = tune.with_parameters(lacmfer_trainable, base_config=cfg.to_dict(), target=target)
    return tune.with_resources(bound, {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu})


def run_config(cfg: ExperimentConfig, places: ExperimentLocations, target: str, round_index: int = 1,
               callbacks: Sequence[tune.Callback] = ()) -> tune.RunConfig:
    """Where and how Tune stores a round of a split (`ExperimentLocations.round`)."""
    path = places.round(target, round_index)
    return tune.RunConfig(
        name=path.name,
        # An absolute path (a relative one fails inside pyarrow) or a URI such as s3://...,
        # which Tune opens with pyarrow as search.storage does.
        storage_path=str(path.parent),
        # Our own TensorBoard runs live in <trial>/tb; JSON and CSV keep Tune's records
        # without a second, duplicate set of TensorBoard curves.
        callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), *callbacks],
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        # Upload each trial's working folder (its tb/ events) with its checkpoints: on a
        # cluster, and for reused actors, it does not live in the storage folder otherwise.
        sync_config=tune.SyncConfig(sync_artifacts=True),
        failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures),
        # Silent: the driver shows one progress line for every split (search.slots).
        verbose=0,
    )


def build_tuner(cfg: ExperimentConfig, places: ExperimentLocations, target: str, max_concurrent: int, *,
                round_index: int = 1,
                num_samples: int | None = None, callbacks: Sequence[tune.Callback] = ()) -> tune.Tuner:
    """A fresh Tuner for `num_samples` trials (default: search.num_samples) of `target`.

    Round 1 creates the split's Optuna study; a later round (a resumed search given a
    larger num_samples) continues the same study, so TPE learns from every earlier
    trial, in a Tune experiment of its own (`ExperimentLocations.round`). ASHA's rungs
    start empty in each round: a new round's trials are cut against each other.
    """
    s = cfg.search
    sampler = make_sampler(s, split_seed(s.seed, target, round_index))
    searcher = OptunaStudySearcher(
        space=SearchSpace(s.space),
        metric=METRIC,
        mode=MODE,
        points_to_evaluate=[default_point(cfg)] if s.start_from_defaults and s.space and round_index == 1 else None,
        sampler=sampler,
        study_name=places.study_name(target),
        storage=places.optuna_storage(),
        scope=s.scope,
    )
    scheduler = make_scheduler(s, cfg.evaluations_per_run)
    return tune.Tuner(
        trainable_for(cfg, target),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            search_alg=RetriedTrialsConcurrencyLimiter(searcher, max_concurrent=max_concurrent),
            scheduler=scheduler,
            num_samples=num_samples or s.num_samples,
            # Safe: the trainable builds every piece of state (model, optimiser, RNG seeds,
            # TensorBoard writer) from its config, and only saves process start-up.
            reuse_actors=True,
            trial_name_creator=lambda trial: f"{target}_{trial.trial_id}",
            trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=run_config(cfg, places, target, round_index, callbacks),
    )


def restore_tuner(cfg: ExperimentConfig, target: str, path: Path | Location) -> tune.Tuner:
    """Continue the Tune experiment at `path` (a round of `target`): finished trials kept,
    unfinished resumed, errored retried."""
    return tune.Tuner.restore(
        str(path),
        trainable=trainable_for(cfg, target),
        resume_unfinished=True,
        resume_errored=True,
    )
