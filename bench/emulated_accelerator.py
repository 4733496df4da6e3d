"""Bench-only plugin: the LA-CMFER method on an emulated accelerator (bench/bench_cluster.py).

On a GPU cluster a trial's training step is mostly accelerator time, during which its CPU
is idle; on a CPU-only machine every step is CPU time, so many trials at once only divide
the cores. This plugin registers `loss.adaptation: lacmfer_emulated_accelerator`: the real
LA-CMFER method (`lacmfer.method.methods.LACMFER`, unchanged) whose loss also waits a fixed
`device_step_s` (time.sleep, no CPU) at every training step, standing for the accelerator's
time. Evaluation is not slowed down. The seconds come from the environment variable
`LACMFER_EMULATED_DEVICE_STEP_S`, which the bench sets before it starts the Ray nodes, so
the drivers and every Ray worker see the same value; it is imported through the config's
`plugins:` key, wherever the config is validated (lacmfer/plugins.py).
"""

from __future__ import annotations

import os
import time

from torch import Tensor

from lacmfer.method.methods import LACMFER, StepLosses, register_method
from lacmfer.method.model import LACMFEROutput

DEVICE_STEP_ENV = "LACMFER_EMULATED_DEVICE_STEP_S"

# Fail at import, in the driver or in a worker, rather than measure steps without device time.
DEVICE_STEP_S = float(os.environ[DEVICE_STEP_ENV])


@register_method("lacmfer_emulated_accelerator")
class LACMFEROnEmulatedAccelerator(LACMFER):
    """LA-CMFER whose every training step also takes `DEVICE_STEP_S` of (emulated) accelerator time."""

    def losses(self, source: LACMFEROutput, labels: Tensor, target: LACMFEROutput | None, step: int) -> StepLosses:
        time.sleep(DEVICE_STEP_S)
        return super().losses(source, labels, target, step)
