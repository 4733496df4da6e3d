"""What an adaptation method is: the `Method` interface, what it returns and the registry.

A method is an `nn.Module` chosen by `loss.adaptation` (`register_method`). The Trainer
draws the batches, runs the network and steps the optimiser; the method turns one step's
network outputs into a `StepLosses`. Modules a method builds in `__init__` (a domain
classifier, branches per source; `NetworkShape` says what they can be built on) are its
own parameters: trained with the network, in the optimiser at `lr_mult` × `schedule.lr`,
moved to the device and checkpointed. Its `predict` turns the network's outputs into
what evaluation reads. The built-in methods: `lacmfer.method.methods` (LA-CMFER, its
ablation, source-only) and `lacmfer.method.baselines` (DANN, MFSAN).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from lacmfer.config import ExperimentConfig
from lacmfer.method.model import LACMFEROutput
from lacmfer.method.schedules import alignment_warmup, clustering_schedule
from lacmfer.names import METHOD_NAMES, add_name


@dataclass
class StepLosses:
    """What a method computes for one step; every tensor is a scalar on the device."""

    total: Tensor
    terms: dict[str, Tensor]
    metrics: dict[str, Tensor] = field(default_factory=dict)
    #: The weighted supervised (`sup`) and alignment (`align`: a(t)·hyper_align·L_inter)
    #: parts of `total`, for the trainer's gradient-ratio instrument (docs/METHOD.md §3.9).
    parts: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkShape:
    """What a method's own modules are built on: the width of each view's features
    (`LACMFEROutput.feat_g`/`feat_l`), the classes, and the ids of the split's source
    domains (the values of the source batch's `domains`), in `data.domains` order."""

    feature_dim: int
    num_classes: int
    source_domains: tuple[int, ...]


class Method(nn.Module):
    """Base class: the supervised loss on the source batch, and the clustering weight.

    `losses()` must return the same term and metric names at every step (the Trainer
    averages them over an evaluation interval). Modules assigned in `__init__` are the
    method's own parameters (see the module docstring); the built-in LA-CMFER family has none.
    """

    #: False: the Trainer draws and forwards no target batch (source-only training).
    uses_target: ClassVar[bool] = True
    #: True: `losses()` also receives the source batch's domain ids as `domains`.
    uses_source_domains: ClassVar[bool] = False
    #: The learning rate of the method's own parameters, as a multiple of `schedule.lr`.
    lr_mult: ClassVar[float] = 1.0

    def __init__(self, cfg: ExperimentConfig, shape: NetworkShape):
        super().__init__()
        self.cfg = cfg
        self.shape = shape

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The optimiser's group of the method's own parameters (none when it has none)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"name": "method", "params": params, "lr": lr * self.lr_mult}] if params else []

    def predict(self, outputs: LACMFEROutput) -> LACMFEROutput:
        """What evaluation reads of a batch's network outputs: features and each view's logits.
        The network's own by default; a method with classifiers of its own returns theirs."""
        return outputs

    def cluster_weight(self, step: int) -> float:
        """λ_cid(t) = hyper_inter · r(t), r the clustering schedule (docs/METHOD.md §3.5, §5)."""
        s = self.cfg.schedule
        r = clustering_schedule(step, s.steps, s.cluster_start, s.cluster_ramp, s.cluster_gamma)
        return self.cfg.loss.hyper_inter * r

    def align_weight(self, step: int) -> float:
        """hyper_align · a(t), a the alignment warm-up (docs/METHOD.md §3.8)."""
        warmup = alignment_warmup(step, self.cfg.schedule.steps, self.cfg.loss.align_warmup)
        return self.cfg.loss.hyper_align * warmup

    def supervised(self, source: LACMFEROutput, labels: Tensor) -> Tensor:
        """L_sup: label-smoothed cross-entropy of both views on the source batch (§3.1)."""
        eps = self.cfg.loss.label_smoothing
        return (F.cross_entropy(source.logits_g, labels, label_smoothing=eps)
                + F.cross_entropy(source.logits_l, labels, label_smoothing=eps))

    def losses(self, source: LACMFEROutput, labels: Tensor, target: LACMFEROutput | None, step: int,
               domains: Tensor | None = None) -> StepLosses:
        """The step's losses; `domains` (the source batch's domain ids) is given when `uses_source_domains`."""
        raise NotImplementedError


#: `loss.adaptation` name → method class.
METHODS: dict[str, type[Method]] = {}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: make a method selectable as `loss.adaptation: <name>`."""

    def register(cls: type[Method]) -> type[Method]:
        add_name(METHOD_NAMES, name)
        METHODS[name] = cls
        return cls

    return register
