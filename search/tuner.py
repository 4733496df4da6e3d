"""The Tuner of one target split: Optuna TPE proposes, ASHA stops, fractional resources.

Every trial reports the metric `objective` (higher is better for every validator, see
`lacmfer.validators`), so the search always maximises it.
"""

from __future__ import annotations

import math
import warnings
import zlib
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from lacmfer.config import ExperimentConfig
from search.spaces import SearchSpace, default_point
from search.storage import experiment_location, optuna_storage
from trainables.lacmfer_trainable import lacmfer_trainable

METRIC, MODE = "objective", "max"


class StoppedAsPrunedOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna the truth about trials that did not finish.

    Stock OptunaSearch tells a trial stopped by ASHA as COMPLETE with its last,
    partial score: TPE then models an early, low score as the value of those
    hyperparameters, and importance analysis mixes short and full runs. Here a trial is
    COMPLETE only when its last report is its schedule's final evaluation; a trial
    stopped before that is PRUNED (its intermediate values stay recorded for TPE), and a
    diverged or errored one is FAIL. The value told for a complete trial follows
    `scope`: the best evaluation (default) or the last one.
    """

    def __init__(self, *args: Any, scope: str = "best", **kwargs: Any):
        self._scope = scope
        self._best: dict[str, float] = {}
        super().__init__(*args, **kwargs)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self.metric)
        if value is not None and math.isfinite(value):
            self._best[trial_id] = max(self._best.get(trial_id, -math.inf), value)
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
        ot_trial = self._ot_trials[trial_id]
        state = optuna.trial.TrialState
        value = None
        if error or not result or result.get("diverged", 0.0) >= 1.0:
            outcome = state.FAIL
        elif result.get("final_evaluation", 0.0) < 1.0:
            outcome = state.PRUNED
        else:
            outcome = state.COMPLETE
            value = self._best.get(trial_id) if self._scope == "best" else result.get(self.metric)
            if value is None or not math.isfinite(value):
                outcome, value = state.FAIL, None
        self._ot_study.tell(ot_trial, value, state=outcome)
        self._completed_trials.add(trial_id)
        self._best.pop(trial_id, None)


def split_seed(seed: int, target: str) -> int:
    """The sampler seed of one split: reproducible, and different per split, so the splits'
    random start-up trials do not all try the same points."""
    return (seed * 1_000_003 + zlib.crc32(target.encode())) % 2**31


def evaluations_per_trial(cfg: ExperimentConfig) -> int:
    return math.ceil(cfg.schedule.steps / cfg.eval.interval)


def study_name(cfg: ExperimentConfig, target: str) -> str:
    return f"{cfg.output.name}/{target}"


def optuna_storage_url(exp_dir: Path) -> str:
    return f"sqlite:///{exp_dir / 'optuna.db'}"


def trainable_for(cfg: ExperimentConfig, target: str) -> Any:
    """The trainable with its config and resources bound (also what `Tuner.restore` needs)."""
    bound = tune.with_parameters(lacmfer_trainable, base_config=cfg.to_dict(), target=target)
    return tune.with_resources(bound, {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu})


def run_config(cfg: ExperimentConfig, target: str) -> tune.RunConfig:
    return tune.RunConfig(
        name=target,
        # An absolute path (a relative one fails inside pyarrow) or a URI such as s3://...,
        # which Tune opens with pyarrow as search.storage does.
        storage_path=str(experiment_location(cfg)),
        # Our own TensorBoard runs live in <trial>/tb; JSON and CSV keep Tune's records
        # without a second, duplicate set of TensorBoard curves.
        callbacks=[JsonLoggerCallback(), CSVLoggerCallback()],
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        # Upload each trial's working folder (its tb/ events) with its checkpoints: on a
        # cluster, and for reused actors, it does not live in the storage folder otherwise.
        sync_config=tune.SyncConfig(sync_artifacts=True),
        failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures),
        verbose=1,
    )


def build_tuner(cfg: ExperimentConfig, target: str, max_concurrent: int) -> tune.Tuner:
    """A fresh Tuner and Optuna study for `target`."""
    s = cfg.search
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # `group` is stable in use
        sampler = optuna.samplers.TPESampler(
            seed=split_seed(s.seed, target),
            multivariate=s.multivariate,
            group=s.multivariate,  # decomposes the conditional space (cluster_gamma)
            n_startup_trials=s.startup_trials,
            constant_liar=True,  # concurrent trials do not all propose the same point
        )
    searcher = StoppedAsPrunedOptunaSearch(
        space=SearchSpace(s.space),
        metric=METRIC,
        mode=MODE,
        points_to_evaluate=[default_point(cfg)] if s.start_from_defaults and s.space else None,
        sampler=sampler,
        study_name=study_name(cfg, target),
        storage=optuna_storage(cfg),
        scope=s.scope,
    )
    max_t = s.asha.max_t or evaluations_per_trial(cfg)
    scheduler = ASHAScheduler(
        time_attr="training_iteration",  # one iteration = one evaluation
        max_t=max_t,
        grace_period=min(s.asha.grace_period, max_t),
        reduction_factor=s.asha.reduction_factor,
    )
    return tune.Tuner(
        trainable_for(cfg, target),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=max_concurrent),
            scheduler=scheduler,
            num_samples=s.num_samples,
            # Safe: the trainable builds every piece of state (model, optimiser, RNG seeds,
            # TensorBoard writer) from its config, and only saves process start-up.
            reuse_actors=True,
            trial_name_creator=lambda trial: f"{target}_{trial.trial_id}",
            trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=run_config(cfg, target),
    )


def restore_tuner(cfg: ExperimentConfig, target: str) -> tune.Tuner:
    """Continue an interrupted split: finished trials kept, unfinished resumed, errored retried."""
    return tune.Tuner.restore(
        str(experiment_location(cfg) / target),
        trainable=trainable_for(cfg, target),
        resume_unfinished=True,
        resume_errored=True,
    )
