"""The words every file of an export shares (best configs, summary.md, the console report):
the oracle banner, what a scope means, and how a value is printed."""

from __future__ import annotations

import math
from typing import Any

SCOPE_TEXT = {
    "best": "best evaluation (the max of the objective over the trial's evaluations)",
    "last": "last evaluation (the objective at the trial's last evaluation)",
}
ORACLE_BANNER = (
    "ORACLE SELECTION: the objective is oracle_target_acc, i.e. model selection on target TEST "
    "labels. Not a valid unsupervised result; for reference only."
)


def fmt(value: Any) -> str:
    """A value as the export prints it: floats to 4 decimals, n/a for None and non-finite ones."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
