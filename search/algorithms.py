"""The search's two algorithms by name: the Optuna sampler that proposes, the Tune scheduler that stops.

`search.sampler` and `search.scheduler` pick them (names in `lacmfer.names`); `tune.py`
and the replay of recorded searches (`bench/replay_search.py`) build them here, so both
search the same way. Random + FIFO is the baseline every other pair is measured against.
"""

from __future__ import annotations

import math
import warnings
import zlib

import optuna
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from lacmfer.config import SearchConfig


def split_seed(seed: int, target: str, round_index: int = 1) -> int:
    """The sampler seed of one split: reproducible, and different per split, so the splits'
    random start-up trials do not all try the same points (and per round of a widened
    search, so a new round does not repeat the first round's random points)."""
    return (seed * 1_000_003 + zlib.crc32(target.encode()) + round_index - 1) % 2**31


def make_sampler(search: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler `search.sampler`, seeded with `seed` (`split_seed` in a search).

    - `tpe`: multivariate TPE (`search.multivariate`) after `search.startup_trials` random
      ones, trials still running counted as bad points (constant liar), so trials proposed
      while others run (every split fills the cluster's slots) do not all ask for one point;
    - `random`: independent uniform draws (log-uniform where the range is);
    - `qmc`: a scrambled Sobol sequence, which covers the space more evenly than random
      draws; a conditional parameter (`cluster_gamma`) is drawn at random;
    - `gp`: Gaussian-process Bayesian optimisation after `search.startup_trials` random ones.
    """
    name = search.sampler
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        # `group`, QMC and GP are marked experimental by Optuna; their use here is stable.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed,
                multivariate=search.multivariate,
                group=search.multivariate,  # decomposes the conditional space (cluster_gamma)
                # Per split (one study each), counted in finished trials: TPE leaves random
                # sampling once `startup_trials` are COMPLETE or PRUNED, not merely asked.
                n_startup_trials=search.startup_trials,
                constant_liar=True,
            )
        if name == "qmc":
            # The warnings are about seeding several processes alike; each split has its own seed.
            return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed,
                                              warn_independent_sampling=False, warn_asynchronous_seeding=False)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=search.startup_trials,
                                             warn_independent_sampling=False)
    raise ValueError(f"search.sampler: unknown {name!r}")  # the config schema allows only the names above


def hyperband_brackets(grace_period: int, max_t: int, reduction_factor: float) -> int:
    """Hyperband's bracket count: one per first rung grace·η^k that still lies within max_t."""
    return 1 + max(0, math.floor(math.log(max_t / grace_period) / math.log(reduction_factor) + 1e-9))


def _rungs(search: SearchConfig, evaluations_per_run: int) -> tuple[int, int]:
    """(max_t, grace period) on evaluation counts: every evaluation of a run unless `asha.max_t` says."""
    max_t = search.asha.max_t or evaluations_per_run
    return max_t, min(search.asha.grace_period, max_t)


def make_scheduler(search: SearchConfig, evaluations_per_run: int) -> TrialScheduler:
    """The Tune scheduler `search.scheduler` on evaluation counts (`training_iteration`).

    - `asha`: asynchronous successive halving, rungs at grace_period × reduction_factor^k
      evaluations; a trial below its rung's top 1/reduction_factor is stopped;
    - `fifo`: no early stopping, every trial runs its whole schedule;
    - `hyperband`: asynchronous Hyperband, ASHA with every bracket whose first rung fits
      (`hyperband_brackets`); Tune places each new trial in one of them.
    """
    if search.scheduler == "fifo":
        return FIFOScheduler()
    max_t, grace = _rungs(search, evaluations_per_run)
    brackets = 1 if search.scheduler == "asha" else hyperband_brackets(grace, max_t, search.asha.reduction_factor)
    return AsyncHyperBandScheduler(time_attr="training_iteration", max_t=max_t, grace_period=grace,
                                   reduction_factor=search.asha.reduction_factor, brackets=brackets)


def describe(search: SearchConfig, evaluations_per_run: int) -> list[str]:
    """The sampler and the scheduler as `tune.py --dry-run` shows them."""
    sampler = {
        "tpe": f"tpe (Optuna TPE, {'multivariate, ' if search.multivariate else ''}"
               f"{search.startup_trials} random start-up trials per split, constant liar)",
        "random": "random (Optuna RandomSampler)",
        "qmc": "qmc (Optuna QMCSampler, scrambled Sobol)",
        "gp": f"gp (Optuna GPSampler, {search.startup_trials} random start-up trials per split)",
    }[search.sampler]
    max_t, grace = _rungs(search, evaluations_per_run)
    rungs = f"grace period {grace}, reduction factor {search.asha.reduction_factor:g}, max_t {max_t} evaluations"
    scheduler = {
        "asha": f"asha (Ray Tune ASHAScheduler: {rungs})",
        "fifo": "fifo (Ray Tune FIFOScheduler: every trial runs its whole schedule)",
        "hyperband": f"hyperband (Ray Tune AsyncHyperBandScheduler, "
                     f"{hyperband_brackets(grace, max_t, search.asha.reduction_factor)} brackets: {rungs})",
    }[search.scheduler]
    return [f"sampler:   {sampler}", f"scheduler: {scheduler}"]
