"""The Ray Tune function trainable: one trial trains one `lacmfer.Trainer` on one split.

Used by the Tuner builder as

    tune.with_resources(
        tune.with_parameters(lacmfer_trainable, base_config=cfg.to_dict(), target="CK"),
        {"cpu": 1, "gpu": 0.25},
    )

A trial's `config` holds only the sampled search values, keyed by search-space names
(`lacmfer.hparams.HPARAMS`); everything else comes from `base_config`. At every
evaluation the trial writes TensorBoard scalars, then reports the trainer's flat metrics
with a checkpoint of the exact trainer state every `search.checkpoint_every` evaluations
and at the last one, so a failed trial can be retried and an interrupted experiment
resumed from there (ASHA needs no checkpoint to stop a trial).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from lacmfer.config import ExperimentConfig, config_from_dict
from lacmfer.device import Placement, out_of_memory_message, scheduled_placement
from lacmfer.final_run import diverged as run_diverged
from lacmfer.hparams import to_config_values
from lacmfer.tb_logging import BEST_OF, RunLogger, run_hparams
from lacmfer.trainer import Trainer

#: Files of a trial checkpoint: the trainer state (loadable by `Trainer.load_state_dict`)
#: and the trial's own progress (the best-so-far values behind the `hparam/*` scalars).
TRAINER_STATE_FILE = "trainer.pt"
PROGRESS_FILE = "progress.json"


def trial_config(base_config: Mapping[str, Any], sampled: Mapping[str, Any]) -> ExperimentConfig:
    """The run config of a trial: `base_config` with each sampled value set at its dotted key.

    Keys that are not search-space names are ignored (a conditional parameter may also be
    absent). Values are validated by the schema, so an out-of-range sample fails the trial
    with a message naming the key.
    """
    base = config_from_dict(dict(base_config), source="base config")
    return base.with_values(to_config_values(sampled), source=f"trial values {dict(sampled)}")


def _with_trial_threads(cfg: ExperimentConfig) -> ExperimentConfig:
    """Torch threads = the trial's whole CPUs when the config leaves them unset.

    Without this, every trial would start as many threads as the node has cores, and
    trials packed with fractional CPUs would oversubscribe the node.
    """
    if cfg.resources.threads is not None:
        return cfg
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1.0)
    return cfg.with_values({"resources.threads": int(max(1.0, cpus))}, source="trial resources")


def ray_gpu_assignment() -> tuple[list[str], float]:
    """The GPUs Ray assigned to this worker (node-wide ids) and the share of a GPU it reserved.

    Read from Ray rather than from what torch can see: Ray 2.60 no longer hides the GPUs
    of a node from a worker that reserved none.
    """
    share = float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))
    return [str(gpu_id) for gpu_id in ray.get_gpu_ids()], share


def trial_placement(cfg: ExperimentConfig) -> Placement:
    """Where this trial trains: the GPU Ray assigned to it (with its memory share), else the CPU."""
    gpu_ids, share = ray_gpu_assignment()
    return scheduled_placement(cfg.resources.device, gpu_ids, share)


def trial_artifact_dir() -> Path:
    """The folder that Tune uploads into the trial's storage folder `<storage>/<experiment>/<trial>/`.

    That is the trial working directory: Tune makes it the current directory of the trial
    process and, with `tune.SyncConfig(sync_artifacts=True)` in the run config, uploads it
    from whichever node runs the trial, at every checkpoint and when the trial ends.
    `get_context().get_trial_dir()` is used only when that chdir is turned off: in Ray
    2.60 it names the working directory for a reused actor but the driver's staging
    folder for an actor's first trial, which only the head node uploads, so the events
    of trials started on other nodes would never reach the storage.
    """
    if not bool(int(os.environ.get("RAY_CHDIR_TO_TRIAL_DIR", "1"))):
        return Path(tune.get_context().get_trial_dir())
    return Path.cwd()


def save_checkpoint(directory: Path, trainer: Trainer, best: Mapping[str, float]) -> None:
    """Write a trial checkpoint (trainer state + best-so-far values) into `directory`."""
    torch.save(trainer.state_dict(), directory / TRAINER_STATE_FILE)
    progress = {"step": trainer.step_count, "best": dict(best)}
    (directory / PROGRESS_FILE).write_text(json.dumps(progress), encoding="utf-8")


def load_checkpoint(directory: Path, trainer: Trainer) -> dict[str, float]:
    """Restore `trainer` exactly from a trial checkpoint; returns the best-so-far values."""
    # map_location: a trial may resume on a node without the GPU it was saved from;
    # `Trainer.load_state_dict` moves every tensor to the trainer's own device.
    trainer.load_state_dict(torch.load(directory / TRAINER_STATE_FILE, map_location="cpu"))
    progress = json.loads((directory / PROGRESS_FILE).read_text(encoding="utf-8"))
    return {name: float(value) for name, value in progress["best"].items()}


def checkpoint_due(trainer: Trainer, every: int) -> bool:
    """Checkpoint at every `every`-th evaluation and at the last one of the schedule."""
    return trainer.finished or trainer.evaluation_index % every == 0


def lacmfer_trainable(config: dict[str, Any], *, base_config: dict[str, Any], target: str) -> None:
    """Train one trial on `target`, reporting `Trainer.evaluate()` at every evaluation.

    Every report holds the trainer's metrics plus `final_evaluation` (1.0 on the last
    evaluation of the schedule, else 0.0: a trial whose last report has 0.0 was stopped
    early or diverged) and `diverged` (1.0 when `loss_total` or the predictions are NaN or
    inf). A diverged trial reports once with its objective set to NaN and ends itself.
    """
    cfg = _with_trial_threads(trial_config(base_config, config))
    placement = trial_placement(cfg)
    try:
        _train(cfg, target, placement)
    except torch.cuda.OutOfMemoryError as err:
        # The trial's own failure, with what to change; a neighbour sharing the GPU is unaffected.
        raise RuntimeError(out_of_memory_message(placement)) from err


def _train(cfg: ExperimentConfig, target: str, placement: Placement) -> None:
    """The body of `lacmfer_trainable`: train, evaluate, report and checkpoint."""
    context = tune.get_context()
    trainer = Trainer(cfg, target, placement=placement)

    best: dict[str, float] = {}
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            best = load_checkpoint(Path(directory), trainer)

    # A resumed trial hides what its earlier attempt wrote after the checkpoint (the
    # checkpoint's own evaluation, at `step_count`, stays) and keeps the hparams summary
    # of its first attempt: the checkpoint being there means that attempt's event file
    # was uploaded with it (artifacts are synced at every checkpoint).
    purge_step = trainer.step_count + 1 if checkpoint is not None else None
    hyperparameters = {**run_hparams(cfg, target), "trial_id": context.get_trial_id()}
    logger = RunLogger(trial_artifact_dir() / "tb", hyperparameters, BEST_OF, purge_step=purge_step)
    logger.restore_best(best)
    try:
        for metrics in trainer.training_loop():
            diverged = run_diverged(metrics)  # the rule final training uses too
            if diverged:
                # NaN weights still give finite accuracies (argmax of NaN is a fixed class),
                # so the objective must be replaced. NaN rather than a very low number, as
                # nothing downstream ranks NaN as good or crashes on it: ASHA's rung cutoffs
                # use nanpercentile (NaN ignored); the searcher records it as an
                # intermediate value and tells the trial PRUNED and infeasible, which TPE
                # ranks last (search.tuner.OptunaStudySearcher), so it never
                # enters TPE or importance as a result; Tune's best-result
                # lookup skips NaN. A finite sentinel would enter TPE's density model and
                # the importance analysis as a real, extreme value.
                metrics["objective"] = math.nan
                logger.mark("diverged")
            logger.log(metrics, trainer.step_count)
            metrics["final_evaluation"] = float(trainer.step_count >= cfg.schedule.steps)
            metrics["diverged"] = float(diverged)
            if diverged:
                # No checkpoint: NaN weights are not worth resuming from.
                tune.report(metrics)
                return
            if not checkpoint_due(trainer, cfg.search.checkpoint_every):
                tune.report(metrics)
                continue
            with tempfile.TemporaryDirectory(prefix="lacmfer-ckpt-") as directory:
                save_checkpoint(Path(directory), trainer, logger.best)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
    except Exception:
        # Shown in the HParams table. Not for Tune's stop (SystemExit, below) or a
        # resumed retry's purged steps: the mark is written at the failing step.
        logger.mark("failed")
        logger.log({}, trainer.step_count)
        raise
    finally:
        # Also runs when Tune stops the trial: ASHA's stop raises SystemExit inside report().
        logger.close()
