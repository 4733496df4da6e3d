"""Training schedules: the inverse-decay learning rate, the clustering-term ramp, the alignment warm-up.

Pure functions of the step counter (docs/METHOD.md §4 and §5). Nothing here reads the config:
the trainer passes the config values as arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR

from lacmfer.names import ALIGN_WARMUPS, CLUSTER_RAMPS


@dataclass
class InverseDecay:
    """The inverse-decay multiplier `(1 + γ·min(1, t/T_decay))^(−p)` as a callable.

    It is a small object rather than a closure so that `LambdaLR.state_dict()` stores
    its parameters along with the step counter (LambdaLR saves callable objects, not
    functions).
    """

    gamma: float = 10.0
    power: float = 0.75
    decay_steps: int = 10000

    def __post_init__(self) -> None:
        if self.decay_steps <= 0:
            raise ValueError(f"decay_steps must be positive, got {self.decay_steps}")
        if self.gamma < 0:
            raise ValueError(f"gamma must be non-negative, got {self.gamma}")

    def __call__(self, step: int) -> float:
        # The min(1, ·) freezes the rate after T_decay: training may run longer than
        # the decay horizon (the paper: 20,000 steps, T_decay = 10,000).
        progress = min(1.0, max(step, 0) / self.decay_steps)
        return (1.0 + self.gamma * progress) ** (-self.power)


def inverse_decay_scheduler(
    optimizer: torch.optim.Optimizer,
    gamma: float = 10.0,
    power: float = 0.75,
    decay_steps: int = 10000,
) -> LambdaLR:
    """A `LambdaLR` applying the inverse-decay multiplier to every param group.

    Each group keeps its own base rate (LambdaLR records it as `group["initial_lr"]`);
    the multiplier is shared. Build the optimiser with the trunk group at lr/10 and the
    branch/classifier groups at lr, and the ratio holds at every step.

    Contract: call `optimizer.step()` then `scheduler.step()` once per training step;
    during training step t (counting from 0) the groups then run at
    `base · InverseDecay(gamma, power, decay_steps)(t)`. To resume, build optimiser and scheduler as for a
    fresh run, then load both state dicts: the step counter and the schedule's
    parameters come back with the scheduler's state.
    """
    return LambdaLR(optimizer, lr_lambda=InverseDecay(gamma, power, decay_steps))


def clustering_schedule(
    step: int,
    total_steps: int,
    start: float,
    ramp: str,
    gamma: float = 10.0,
) -> float:
    """Clustering-schedule factor r(t) ∈ [0, 1] (docs/METHOD.md §5); λ_cid(t) = hyper_inter · r(t).

    With f = t/T the fraction of training done: r = 0 while f < start. From f = start
    on, with q = (f − start)/(1 − start) clamped to [0, 1] (the fraction of the
    remaining training):

    - `sigmoid`: r = 2/(1 + exp(−γ·q)) − 1  (0 at q = 0, tanh(γ/2) < 1 at q = 1);
    - `linear`:  r = q;
    - `step`:    r = 1 (the term switches fully on at f = start).

    `start = 0` ramps from step 0. Raises ValueError for an unknown ramp or values out
    of range.
    """
    if ramp not in CLUSTER_RAMPS:
        raise ValueError(f"unknown cluster ramp {ramp!r}; expected one of {CLUSTER_RAMPS}")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0.0 <= start < 1.0:
        raise ValueError(f"cluster start must be in [0, 1), got {start}")
    fraction = step / total_steps
    if fraction < start:
        return 0.0
    if ramp == "step":
        return 1.0
    q = min(1.0, max(0.0, (fraction - start) / (1.0 - start)))
    if ramp == "linear":
        return q
    return 2.0 / (1.0 + math.exp(-gamma * q)) - 1.0


def alignment_warmup(step: int, total_steps: int, kind: str) -> float:
    """Factor a(t) ∈ [0, 1) or 1 on hyper_align (docs/METHOD.md §3.8).

    - `none`: a = 1 (the stored LA-CMFER model, which ignores the ramp its train.py passes);
    - `mfsan`: a = 2/(1 + exp(−10·p)) − 1 with p = t/T, the ramp that released train.py
      computes and MFSAN (Zhu et al., AAAI 2019) multiplies its alignment loss by:
      0 at the first step, 0.76 at p = 0.2, 0.9999 at the end.
    """
    if kind not in ALIGN_WARMUPS:
        raise ValueError(f"unknown alignment warm-up {kind!r}; expected one of {ALIGN_WARMUPS}")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if kind == "none":
        return 1.0
    progress = min(1.0, max(0.0, step / total_steps))
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0
