"""TensorBoard logging of one run: scalars, and hyperparameters for the HParams plugin.

The hyperparameters are written when the run starts, with best-so-far values of the
chosen metrics logged as `hparam/*` scalars at every evaluation: a run stopped early (by
ASHA, or killed) never executes code after its last report, and its row in the HParams
table must still be right.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from lacmfer import names
from lacmfer.config import ExperimentConfig

# Metric-name prefix → TensorBoard group, so related curves sit together.
_GROUPS = (("loss_", "loss/"), ("target_", "target/"), ("source_", "source/"), ("pl_", "pseudo_label/"),
           # The alignment instruments (docs/METHOD.md §3.9) side by side.
           ("hardness_", "alignment/hardness_"), ("grad_ratio", "alignment/grad_ratio"))
# The HParams-table metrics of every run (search trials and final training alike).
BEST_OF: dict[str, str] = {names.OBJECTIVE_KEY: "max", names.ORACLE_METRIC: "max"}


def best_tag(metric: str) -> str:
    """The HParams column of a best-so-far metric; target accuracy is named as the oracle it is."""
    label = names.ORACLE_OBJECTIVE if metric == names.ORACLE_METRIC else metric
    return f"hparam/{label}_best"
# HParams-table flags of a run that went wrong: `hparam/<flag>` is 0 until `RunLogger.mark`,
# then 1, so a diverged or failed run never looks like a successful one in the table
# (its best-so-far values from before the failure are still real and stay).
RUN_FLAGS: tuple[names.RunStatus, ...] = (names.RunStatus.DIVERGED, names.RunStatus.FAILED)


def scalar_tag(name: str) -> str:
    for prefix, group in _GROUPS:
        if name.startswith(prefix):
            return group + name.removeprefix(prefix)
    if name == names.OBJECTIVE_KEY or name in (*names.TARGET_VALIDATOR_NAMES, *names.EVALUATION_VALIDATOR_NAMES):
        return f"validators/{name}"
    return f"train/{name}"


def run_hparams(cfg: ExperimentConfig, target: str) -> dict[str, Any]:
    """The HParams-table columns of a run: split, seed, method, objective and every searchable value."""
    flat = {"target": target, "seed": cfg.seed, "adaptation": cfg.loss.adaptation, "objective": cfg.eval.objective}
    values = cfg.searchable_values()
    # A conditional parameter that does not apply (cluster_gamma of a linear ramp) is left
    # blank rather than shown with a default that played no part.
    for name, spec in cfg.search.space.items():
        if any(values.get(parent) != want for parent, want in (spec.only_if or {}).items()):
            values.pop(name, None)
    flat.update(values)
    return flat


def _hparam_value(value: Any) -> float | int | str | bool:
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class RunLogger:
    """One TensorBoard run under `logdir`; `best_of` names the metrics tracked as best-so-far."""

    def __init__(
        self,
        logdir: Path,
        hyperparameters: Mapping[str, Any],
        best_of: Mapping[str, str],
        purge_step: int | None = None,
    ):
        """`best_of` maps a metric name to "max" or "min"; `purge_step` drops events at or
        after that step, so a resumed run does not draw its curves twice."""
        self.writer = SummaryWriter(str(logdir), purge_step=purge_step)
        self.best_of = dict(best_of)
        self.best: dict[str, float] = {}
        self.flags: set[str] = set()
        if purge_step is None:  # a resumed run already has its hparams summary
            hp = {k: _hparam_value(v) for k, v in hyperparameters.items()}
            metrics = {best_tag(m): 0.0 for m in self.best_of} | {f"hparam/{f}": 0.0 for f in RUN_FLAGS}
            exp, ssi, sei = hparams(hp, metrics)
            for summary in (exp, ssi, sei):
                self.writer.file_writer.add_summary(summary)

    def restore_best(self, best: Mapping[str, float]) -> None:
        self.best.update(best)

    def mark(self, flag: names.RunStatus) -> None:
        """Flag the run (one of RUN_FLAGS) from the next `log` on."""
        if flag not in RUN_FLAGS:
            raise ValueError(f"flag {flag!r} is not one of {RUN_FLAGS}")
        self.flags.add(flag)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for name, value in metrics.items():
            if name != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(scalar_tag(name), value, step)
        for name, mode in self.best_of.items():
            value = metrics.get(name)
            if value is None or not math.isfinite(value):
                continue
            old = self.best.get(name)
            if old is None or (value > old if mode == "max" else value < old):
                self.best[name] = float(value)
            self.writer.add_scalar(best_tag(name), self.best[name], step)
        for flag in RUN_FLAGS:
            self.writer.add_scalar(f"hparam/{flag}", float(flag in self.flags), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
