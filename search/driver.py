"""The per-split driver: one Tuner and one Optuna study per target, in turn.

Connects to Ray (local by default, a cluster with an address), checks that a trial can
be scheduled at all, runs or resumes each split, checks that every split finished
(Ctrl-C makes `Tuner.fit()` return normally with a partial result), then exports.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray import tune

from lacmfer.config import ExperimentConfig, config_text
from lacmfer.errors import UserError
from search.cluster import concurrent_slots, connect, preflight, ray_environment
from search.storage import experiment_location, upload_study_copy
from search.tuner import build_tuner, evaluations_per_trial, restore_tuner

@dataclass(frozen=True)
class SplitOutcome:
    target: str
    finished: bool
    trials: int
    terminated: int
    errors: int


def prepare_experiment(cfg: ExperimentConfig, resume: bool) -> None:
    """Write the resolved config, refusing to mix a new search into an old folder."""
    exp_dir = experiment_location(cfg)
    saved = exp_dir / "config.yaml"
    if saved.exists() and not resume:
        raise UserError(
            f"{exp_dir} already holds an experiment: continue it with --resume --name {cfg.output.name}, "
            "or start another with --name NEW"
        )
    if not resume:
        saved.write_text(config_text(cfg, header="resolved config of this search (python tune.py)"))


def run_split(cfg: ExperimentConfig, target: str, max_concurrent: int, resume: bool) -> SplitOutcome:
    path = experiment_location(cfg) / target
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
        connect(address, cfg.cluster.runtime_env)
        preflight(cfg)
        try:
            return _run_splits(cfg, resume)
        finally:
            upload_study_copy(cfg)


def _run_splits(cfg: ExperimentConfig, resume: bool) -> list[SplitOutcome]:
    slots = concurrent_slots(cfg)
    max_concurrent = min(cfg.search.max_concurrent or slots, cfg.search.num_samples)
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
