"""The LA-CMFER trainer: one target split, one model, step by step (no Ray here).

Read top to bottom: build data, model, optimiser and schedules; `step()` draws a source
and a target batch, runs the network and minimises the loss of the adaptation method
(`lacmfer.method.methods`, docs/METHOD.md §3); `evaluate()` adds the interval's mean
losses to every validator of docs/METHOD.md §6 (`lacmfer.run.evaluator`). Nothing in
`step()` waits for the device: loss values are summed on the device and read only by
`evaluate()`, so a GPU step is queued without a host sync.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from lacmfer.config import ExperimentConfig
from lacmfer.data.augment import BatchAugment
from lacmfer.data.loaders import BatchStream, SplitData, domain_ids, load_split_data
from lacmfer.method.methods import NetworkShape, build_method
from lacmfer.method.model import LACMFERNet, LACMFEROutput
from lacmfer.method.pretrained import load_pretrained_trunk
from lacmfer.method.schedules import inverse_decay_scheduler
from lacmfer.names import OBJECTIVE_KEY, objective_metric
from lacmfer.run.device import Placement, claim, local_placement
from lacmfer.run.evaluator import Evaluator

HEADLINE_METRICS = ("objective", "target_acc", "source_val_acc", "loss_total", "step")
_SOURCE_STREAM, _TARGET_STREAM = 0, 1  # seed words of the training streams (2, 3: lacmfer.run.evaluator)


class Trainer:
    """Trains LA-CMFER on one leave-one-domain-out split.

    `Trainer(config, "RAF")` adapts from the other domains to RAF. `data` may be given to
    share decoded sets between trainers (tests, final training over seeds). `placement`
    is where to train (a search trial passes the GPU its scheduler assigned); by default
    `resources.device` decides (`lacmfer.run.device.local_placement`).
    """

    def __init__(self, config: ExperimentConfig, target: str, *, data: SplitData | None = None, progress: bool = False,
                 placement: Placement | None = None):
        self.cfg = config
        self.target = target
        self.placement = placement or local_placement(config.resources.device)
        self.device = claim(self.placement)
        if config.resources.threads:
            torch.set_num_threads(config.resources.threads)
        self.data = data if data is not None else load_split_data(config, target, progress=progress)

        torch.manual_seed(config.seed)  # model initialisation is part of the seed
        m = config.model
        self.model = LACMFERNet(width=m.width, global_blocks=m.global_blocks, local_blocks=m.local_blocks,
                                cbam=m.cbam, branch_init=m.branch_init)
        load_pretrained_trunk(self.model, config, progress)
        self.model.to(self.device)
        if m.channels_last:
            self.model.to(memory_format=torch.channels_last)
        ids = domain_ids(config.data)
        self.method = build_method(config, NetworkShape(self.model.feature_dim, self.model.num_classes,
                                                        tuple(ids[name] for name in self.data.split.sources)))
        self.method.to(self.device)

        s = config.schedule
        self.optimizer = torch.optim.SGD(
            self.model.param_groups(s.lr, s.trunk_lr_mult) + self.method.param_groups(s.lr),
            lr=s.lr,
            momentum=s.momentum,
            nesterov=s.nesterov and s.momentum > 0,
            weight_decay=s.weight_decay,
        )
        self.scheduler = inverse_decay_scheduler(self.optimizer, s.lr_gamma, s.lr_power, s.lr_decay_steps)

        d = config.data
        pin = self.device.type == "cuda"
        self.source_stream = BatchStream(self.data.source_train, d.batch_size, config.seed,
                                         _SOURCE_STREAM, d.source_sampling, d.num_workers, pin)
        self.target_stream = BatchStream(self.data.target_train, d.batch_size, config.seed,
                                         _TARGET_STREAM, "pooled", d.num_workers, pin)
        self.augment = BatchAugment(d.augment, d.image_size)
        self.evaluator = Evaluator(config, self.data, self.device)
        self.step_count = 0
        # Running sums of the logged step values (`loss_<term>` and the method's batch
        # metrics), by name, on the device: read once per evaluation interval.
        self._loss_sums: dict[str, Tensor] = {}
        self._loss_steps = 0
        # The gradient-ratio instrument, measured every `eval.grad_ratio_every` steps.
        self._grad_ratio_sum: Tensor | None = None
        self._grad_ratio_count = 0

    # ------------------------------------------------------------------ training

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        # CPU autocast too: the bf16 path then runs (and is tested) without a GPU.
        if self.cfg.resources.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _memory_format(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.model.channels_last else x

    def _draw(self, stream: BatchStream) -> tuple[Tensor, Tensor, Tensor]:
        """The next batch of a stream on the device, augmented there: (images, labels, domain ids)."""
        batch = next(stream)
        # Pinned on CUDA (see BatchStream), so both copies are queued without waiting.
        images = batch.images.to(self.device, non_blocking=True)
        labels = batch.labels.to(self.device, non_blocking=True)
        return self._memory_format(self.augment(images, batch.seed)), labels, batch.domains

    def cluster_weight(self) -> float:
        """λ_cid(t) = hyper_inter · r(t) at the current step (docs/METHOD.md §3.5)."""
        return self.method.cluster_weight(self.step_count)

    def _forward(self, x_s: Tensor, x_t: Tensor | None) -> tuple[LACMFEROutput, LACMFEROutput | None]:
        """Source and target outputs in float32 (the losses' precision).

        `model.bn: per_domain` (the released code) forwards each domain on its own, so
        BatchNorm normalises each with its own batch statistics; `joint` forwards one
        concatenated batch (an ablation).
        """
        joint = x_t is not None and self.cfg.model.bn == "joint"
        with self._autocast():
            if x_t is None:
                outputs = [self.model(x_s)]
            elif joint:
                outputs = [self.model(torch.cat([x_s, x_t]))]
            else:
                outputs = [self.model(x_s), self.model(x_t)]
        outputs = [LACMFEROutput(*(t.float() for t in out)) for out in outputs]
        if joint:
            n_s = x_s.shape[0]
            return LACMFEROutput(*(t[:n_s] for t in outputs[0])), LACMFEROutput(*(t[n_s:] for t in outputs[0]))
        return outputs[0], outputs[1] if x_t is not None else None

    def step(self) -> dict[str, Tensor]:
        """One SGD step; returns `total` and the method's loss terms (on the device)."""
        self.model.train()
        self.method.train()
        x_s, y_s, domains = self._draw(self.source_stream)
        # The target stream's labels are never used; source-only draws no target batch.
        x_t = self._draw(self.target_stream)[0] if self.method.uses_target else None
        source, target = self._forward(x_s, x_t)
        extra = {"domains": domains.to(self.device)} if self.method.uses_source_domains else {}
        out = self.method.losses(source, y_s, target, self.step_count, **extra)
        every = self.cfg.eval.grad_ratio_every
        if every and self.step_count % every == 0 and "align" in out.parts and out.parts["align"].requires_grad:
            self._measure_grad_ratio(out.parts["sup"], out.parts["align"])

        self.optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.step_count += 1

        terms = {"total": out.total, **out.terms}
        logged = {f"loss_{k}": v for k, v in terms.items()} | out.metrics
        for key, value in logged.items():
            value = value.detach().float()
            self._loss_sums[key] = self._loss_sums[key] + value if key in self._loss_sums else value
        self._loss_steps += 1
        return {k: v.detach() for k, v in terms.items()}

    def _measure_grad_ratio(self, sup: Tensor, align: Tensor) -> None:
        """Add ‖∇_trunk align‖ / ‖∇_trunk sup‖ of this step to the interval's sum (docs/METHOD.md §3.9)."""
        params = [p for p in self.model.trunk.parameters() if p.requires_grad]
        norms = []
        for part in (sup, align):
            grads = torch.autograd.grad(part, params, retain_graph=True, allow_unused=True)
            norms.append(torch.linalg.vector_norm(torch.stack(
                [torch.linalg.vector_norm(g) for g in grads if g is not None] or [sup.new_zeros(())])))
        ratio = (norms[1] / norms[0].clamp_min(torch.finfo(norms[0].dtype).tiny)).detach().float()
        self._grad_ratio_sum = ratio if self._grad_ratio_sum is None else self._grad_ratio_sum + ratio
        self._grad_ratio_count += 1

    def train_until(self, step: int) -> None:
        while self.step_count < step:
            self.step()

    # ---------------------------------------------------------------- evaluation

    @property
    def evaluation_index(self) -> int:
        """1-based number of the evaluation at the current step (they run every interval and at the end)."""
        return -(-self.step_count // self.cfg.eval.interval)

    @property
    def finished(self) -> bool:
        return self.step_count >= self.cfg.schedule.steps

    def _test_due(self) -> bool:
        """Whether this evaluation reads the whole target test set: every `eval.test_every`-th, the
        last, and all of them when the objective is the oracle."""
        e = self.cfg.eval
        return self.finished or self.evaluation_index % e.test_every == 0 or e.objective == "oracle_target_acc"

    def _network(self, x: Tensor) -> LACMFEROutput:
        """What evaluation reads of a batch of network inputs: the method's prediction."""
        with self._autocast():
            return self.method.predict(self.model(self._memory_format(x)))

    def evaluate(self) -> dict[str, float]:
        """The training state (step, learning rates, the interval's mean losses) and every
        validator of `self.evaluator` (docs/METHOD.md §6), as a flat dict of floats."""
        metrics: dict[str, float] = {"step": float(self.step_count)}
        lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
        metrics["lr"] = float(lrs.get("branches", self.optimizer.param_groups[-1]["lr"]))
        metrics["lr_trunk"] = float(lrs.get("trunk", metrics["lr"]))
        metrics["cluster_weight"] = self.cluster_weight()
        if self._loss_steps:
            means = (torch.stack(list(self._loss_sums.values())) / self._loss_steps).tolist()  # the one host sync
            metrics.update(zip(self._loss_sums, means, strict=True))
            self._loss_sums = {}
            self._loss_steps = 0
        if self._grad_ratio_sum is not None:
            metrics["grad_ratio"] = self._grad_ratio_sum.item() / self._grad_ratio_count
            self._grad_ratio_sum, self._grad_ratio_count = None, 0

        self.model.eval()
        self.method.eval()
        metrics.update(self.evaluator.evaluate(self._network, read_test=self._test_due()))
        metrics[OBJECTIVE_KEY] = metrics[objective_metric(self.cfg.eval.objective)]
        # Headline metrics first: progress tables (Ray's included) show the first columns.
        return {k: metrics[k] for k in HEADLINE_METRICS if k in metrics} | metrics

    def training_loop(self) -> Iterator[dict[str, float]]:
        """Train to the end, yielding `evaluate()` every `eval.interval` steps and at the end."""
        interval, steps = self.cfg.eval.interval, self.cfg.schedule.steps
        while self.step_count < steps:
            self.train_until(min(steps, (self.step_count // interval + 1) * interval))
            yield self.evaluate()

    # ------------------------------------------------------------------- resume

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimiser, schedule, RNG, samplers."""
        return {
            "step": self.step_count,
            "model": self.model.state_dict(),
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "source_stream": self.source_stream.state_dict(),
            "target_stream": self.target_stream.state_dict(),
            "loss_sums": {k: v.cpu() for k, v in self._loss_sums.items()},
            "loss_steps": self._loss_steps,
            "grad_ratio": (None if self._grad_ratio_sum is None else self._grad_ratio_sum.cpu(), self._grad_ratio_count),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step"])
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state.get("method", {}))  # older checkpoints: methods without modules
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.source_stream.load_state_dict(state["source_stream"])
        self.target_stream.load_state_dict(state["target_stream"])
        self._loss_sums = {k: v.to(self.device) for k, v in state["loss_sums"].items()}
        self._loss_steps = int(state["loss_steps"])
        ratio_sum, self._grad_ratio_count = state.get("grad_ratio", (None, 0))
        self._grad_ratio_sum = None if ratio_sum is None else ratio_sum.to(self.device)
        torch.set_rng_state(state["rng_cpu"])
        # The trainer's own GPU only: a trial may resume on another GPU, or another machine.
        if isinstance(state.get("rng_cuda"), torch.Tensor) and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
