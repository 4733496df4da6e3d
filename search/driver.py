"""The per-split driver: one Tuner and one Optuna study per target, in turn.

Connects to Ray (local by default, a cluster with an address), checks that a trial can
be scheduled at all, runs or resumes each split, checks that every split finished
(Ctrl-C makes `Tuner.fit()` return normally with a partial result), then exports.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import ray
from ray import tune

from lacmfer.config import ExperimentConfig, save_config
from lacmfer.errors import UserError
from search.tuner import build_tuner, evaluations_per_trial, restore_tuner

# Ray reads these when it starts and when a Tuner runs; they are set only around a search
# (run_search), so importing this module changes nothing for other Ray users.
RAY_ENVIRONMENT = {
    "RAY_AUTH_MODE": "disabled",  # a local search needs no token (and Ray warns without it)
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # see search.tuner.run_config
    # Every evaluation checkpoints (ASHA, failures and resume need it); Ray would warn each time.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}


@contextlib.contextmanager
def ray_environment() -> Iterator[None]:
    """Set RAY_ENVIRONMENT (where the user has not) for the duration of a search."""
    added = {k: v for k, v in RAY_ENVIRONMENT.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@dataclass(frozen=True)
class SplitOutcome:
    target: str
    finished: bool
    trials: int
    terminated: int
    errors: int


def connect(address: str | None) -> None:
    """Join the Ray cluster at `address` (or RAY_ADDRESS), else start a local one."""
    if ray.is_initialized():  # e.g. a test that declared logical GPUs itself
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="WARNING")
    else:
        ray.init(include_dashboard=False, logging_level="WARNING")


def concurrent_slots(cfg: ExperimentConfig) -> int:
    """How many trials fit at once; a trial that can never be placed is a clear error.

    Ray would otherwise keep such a trial PENDING forever (e.g. a GPU asked of a
    cluster that declares none).
    """
    cpu, gpu = cfg.resources.cpu, cfg.resources.gpu
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    total_gpu = sum(n.get("GPU", 0.0) for n in nodes)
    if gpu > 0 and total_gpu == 0:
        raise UserError(
            f"resources.gpu: each trial asks for {gpu} GPU but the Ray cluster has no GPU "
            "(set resources.gpu: 0 or --gpus-per-trial 0 to train on CPUs)"
        )
    per_node = [
        min(math.floor(n.get("CPU", 0.0) / cpu + 1e-9), math.floor(n.get("GPU", 0.0) / gpu + 1e-9) if gpu else 10**9)
        for n in nodes
    ]
    slots = sum(per_node)
    if slots == 0:
        biggest = max(nodes, key=lambda n: n.get("CPU", 0.0), default={})
        raise UserError(
            f"resources: a trial needs cpu {cpu}, gpu {gpu} but no Ray node has that much "
            f"(largest node: cpu {biggest.get('CPU', 0)}, gpu {biggest.get('GPU', 0)})"
        )
    return slots


def default_max_concurrent(num_samples: int, slots: int) -> int:
    """Trials at once when `search.max_concurrent` is unset: at most ⌊√num_samples⌋, at
    least 1, and no more than fit on the cluster.

    TPE proposes each trial from the results it has; a trial started while c others run
    is proposed without their results. √n at once keeps both the batch width and the
    number of rounds of feedback (n / c) at √n: 4 trials run 2 at a time, 16 run 4, 100
    run 10, however big the cluster is.
    """
    return max(1, min(slots, math.isqrt(num_samples)))


def prepare_experiment(cfg: ExperimentConfig, resume: bool) -> None:
    """Write the resolved config, refusing to mix a new search into an old folder."""
    exp_dir = cfg.experiment_dir
    saved = exp_dir / "config.yaml"
    if saved.exists() and not resume:
        raise UserError(
            f"{exp_dir} already holds an experiment: continue it with --resume --name {cfg.output.name}, "
            "or start another with --name NEW"
        )
    if not resume:
        save_config(cfg, saved, header="resolved config of this search (python tune.py)")


def run_split(cfg: ExperimentConfig, target: str, max_concurrent: int, resume: bool) -> SplitOutcome:
    path = cfg.experiment_dir / target
    if resume and path.exists():
        if not tune.Tuner.can_restore(str(path)):
            raise UserError(f"{path}: no Tune experiment state to resume from")
        tuner = restore_tuner(cfg, target)
    else:
        tuner = build_tuner(cfg, target, max_concurrent)
    grid = tuner.fit()
    terminated, errors = grid.num_terminated, grid.num_errors
    finished = len(grid) >= cfg.search.num_samples and terminated + errors == len(grid)
    return SplitOutcome(target, finished, len(grid), terminated, errors)


def run_search(cfg: ExperimentConfig, address: str | None = None, resume: bool = False) -> list[SplitOutcome]:
    """Search every split of `cfg.data.targets`; stops at the first split that did not finish."""
    with ray_environment():
        prepare_experiment(cfg, resume)
        connect(address)
        return _run_splits(cfg, resume)


def _run_splits(cfg: ExperimentConfig, resume: bool) -> list[SplitOutcome]:
    slots = concurrent_slots(cfg)
    max_concurrent = min(cfg.search.max_concurrent or default_max_concurrent(cfg.search.num_samples, slots),
                         cfg.search.num_samples)
    print(
        f"searching {len(cfg.data.targets)} split(s) × {cfg.search.num_samples} trials, "
        f"{max_concurrent} at a time (cpu {cfg.resources.cpu}, gpu {cfg.resources.gpu} per trial), "
        f"{evaluations_per_trial(cfg)} evaluations per full trial, objective {cfg.eval.objective}"
    )
    outcomes = []
    for target in cfg.data.targets:
        outcome = run_split(cfg, target, max_concurrent, resume)
        outcomes.append(outcome)
        if not outcome.finished:
            break  # interrupted: resume continues here
    return outcomes
