"""A plugin method that blocks at one step the first time it gets there, for the watchdog tests.

It lives outside the package (loaded as a plugin would be) and sleeps in a Python loop,
as a deadlocked data loader or a stuck collective would hold a run: no error, no progress.
`LACMFER_HANG_FLAG` names a file that marks the hang as done, so a retry goes on.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from lacmfer.method.methods import SourceOnly, StepLosses, register_method

HANG_AT_STEP = 12


@register_method("hangs_once")
class HangsOnce(SourceOnly):
    def losses(self, source, labels, target, step: int) -> StepLosses:
        flag = Path(os.environ["LACMFER_HANG_FLAG"])
        if step == HANG_AT_STEP and not flag.exists():
            flag.touch()
            while True:
                time.sleep(0.05)
        return super().losses(source, labels, target, step)
