"""The Ray Tune function trainable: one trial is one `lacmfer.run.lifecycle.Run` on one split.

Used by the Tuner builder as

    tune.with_resources(
        tune.with_parameters(lacmfer_trainable, base_config=cfg.to_dict(), target="CK"),
        {"cpu": 1, "gpu": 0.25},
    )

A trial's `config` holds only the sampled search values, keyed by search-space names
(`lacmfer.hparams.HPARAMS`); everything else comes from `base_config`. The run trains,
logs, marks divergence and checkpoints (`lacmfer.run.lifecycle`); this adapter reports each of its
evaluations with `tune.report`, with the run's checkpoint every `search.checkpoint_every`
evaluations and at the last one, so a failed trial is retried and an interrupted
experiment resumed from there (ASHA needs no checkpoint to stop a trial).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray import tune

from lacmfer.config import ExperimentConfig, config_with_values
from lacmfer.hparams import to_config_values
from trainables.ray_session import ray_placement


def trial_config(base_config: Mapping[str, Any], sampled: Mapping[str, Any]) -> ExperimentConfig:
    """The run config of a trial: `base_config` with each sampled value set at its dotted key.

    Keys that are not search-space names are ignored (a conditional parameter may also be
    absent). Values are validated by the schema, so an out-of-range sample fails the trial
    with a message naming the key.
    """
    return config_with_values(base_config, to_config_values(sampled), source=f"trial values {dict(sampled)}")


def trial_artifact_dir() -> Path:
    """The folder Tune uploads into the trial's storage folder: the trial's working directory.

    Tune makes it the trial process's current directory and, with `sync_artifacts=True`,
    uploads it from whichever node runs the trial. `get_trial_dir()` only when that chdir is
    off: in Ray 2.60 it names the driver's staging folder for an actor's first trial.
    """
    if not bool(int(os.environ.get("RAY_CHDIR_TO_TRIAL_DIR", "1"))):
        return Path(tune.get_context().get_trial_dir())
    return Path.cwd()


def lacmfer_trainable(config: dict[str, Any], *, base_config: dict[str, Any], target: str) -> None:
    """Train one trial on `target`, reporting `Trainer.evaluate()` at every evaluation.

    Every report holds the trainer's metrics plus `status` (`Evaluation.to_report`): how the
    trial ends if it ends there (`lacmfer.run.outcome.run_status`), `completed` on the
    schedule's last evaluation, `diverged` when `loss_total` or the predictions are NaN or
    inf, else `stopped early`. A diverged trial reports once with its objective set to NaN
    and ends itself.
    """
    # Ray logs every checkpoint it persists at INFO in the trial's process and forwards it to
    # the driver's console: a line per evaluation of every trial, burying the progress line.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    # Imported in the trial's worker only: the split drivers that hold this function for Tune need no torch.
    from lacmfer.run.lifecycle import Keeping, Run, out_of_memory_as_error, with_threads
    from lacmfer.run.tb_logging import run_hparams

    cfg = with_threads(trial_config(base_config, config))
    placement = ray_placement(cfg.resources.device)
    with out_of_memory_as_error(placement):
        hyperparameters = {**run_hparams(cfg, target), "trial_id": tune.get_context().get_trial_id()}
        run = Run(cfg, target, trial_artifact_dir(), hyperparameters, Keeping.trial(cfg.search.checkpoint_every),
                  placement=placement)
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                run.resume(Path(directory))
        # closing: ASHA's stop raises SystemExit inside `tune.report`; the run's events are closed at once.
        with contextlib.closing(run.evaluations()) as evaluations:
            for evaluation in evaluations:
                report = evaluation.to_report()
                if evaluation.checkpoint is None:
                    tune.report(report)
                else:
                    tune.report(report, checkpoint=tune.Checkpoint.from_directory(evaluation.checkpoint))
