"""The oracle gap: what choosing a checkpoint by a validator costs against choosing it by target labels.

A pool is a set of checkpoints (evaluations) that all have an oracle target accuracy:
every evaluation of every trial of a split's search, or every evaluation of one final
training run. A validator picks the checkpoint with its highest finite score; its oracle
gap is that checkpoint's oracle accuracy minus the best oracle accuracy of the pool
(≤ 0; 0 means it found the oracle's choice), and the pick falls in the pool's worst
decile when at least 90 % of the pool's checkpoints are better (strictly: checkpoints
tied with the pick are not better, so a pick tied with the best is never in it). Musgrave et al. (2022)
and MixVal (Hu et al., NeurIPS 2023) report selection quality the same way: the accuracy
of the selected model against the best one.

No torch here: the search's export (`search.analysis`) and final training's report
(`lacmfer.reports.final_report`) both use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: A pick is "in the worst decile" when at least (DECILES − 1) / DECILES of the pool is better.
DECILES = 10


@dataclass(frozen=True)
class Pick:
    """The checkpoint a validator selects from a pool, judged by the oracle."""

    index: int  # its position in the pool
    accuracy: float  # its oracle accuracy
    best: float  # the best oracle accuracy in the pool
    better: int  # how many checkpoints of the pool have a strictly higher oracle accuracy
    pool: int  # how many checkpoints the pool has

    @property
    def gap(self) -> float:
        return self.accuracy - self.best

    @property
    def worst_decile(self) -> bool:
        return DECILES * self.better >= (DECILES - 1) * self.pool  # integers: no rounding at the boundary


def scores_and_oracle(scores: Sequence[float], oracle: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Validator scores and oracle accuracies of one pool as float arrays, checked.

    Raises ValueError when their lengths differ or an oracle value is not finite (a
    checkpoint without an oracle accuracy cannot be judged). Scores may hold NaN.
    """
    x, y = (np.asarray(a, dtype=float).reshape(-1) for a in (scores, oracle))
    if x.shape != y.shape:
        raise ValueError(f"scores and oracle must have the same length, got {x.size} and {y.size}")
    if not np.isfinite(y).all():
        raise ValueError("every oracle value must be finite")
    return x, y


def pick(scores: Sequence[float], oracle: Sequence[float]) -> Pick | None:
    """The checkpoint with the highest finite score (the first on ties); None when no score is finite.

    `oracle` holds each checkpoint's oracle accuracy; every value must be finite (a
    checkpoint without one cannot be judged, so it is not in a pool).
    """
    x, y = scores_and_oracle(scores, oracle)
    finite = np.isfinite(x)
    if not finite.any():
        return None
    index = int(np.argmax(np.where(finite, x, -np.inf)))
    return Pick(index, float(y[index]), float(y.max()), int(np.sum(y > y[index])), y.size)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n in ascending order; tied values share the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # the highest rank of each distinct value
    return (upper - (counts - 1) / 2.0)[inverse.reshape(-1)]


def rank_average(columns: Sequence[Sequence[float]]) -> np.ndarray:
    """Per checkpoint, the mean over validators of its rank in the pool (higher is better).

    `columns` holds one sequence of scores per validator, over the same checkpoints. A
    non-finite score ranks below every finite one of its validator (it would never be
    picked). This is the rank-average ensemble, a rule over a pool: the export applies
    it over all checkpoints of a split, where a single evaluation could not (see
    `lacmfer.method.validators.ensemble`). A validator with no finite score is left out.
    """
    ranks = []
    for column in columns:
        x = np.asarray(column, dtype=float).reshape(-1)
        if np.isfinite(x).any():
            ranks.append(average_ranks(np.where(np.isfinite(x), x, -np.inf)))
    if not ranks:
        return np.full(len(columns[0]) if columns else 0, math.nan)
    return np.mean(ranks, axis=0)
