"""How a run ended, in the types a search trial and a final-training run share.

    Evaluation   one evaluation: the trainer's metrics, whether it was the schedule's last,
                 whether it diverged; as a Tune report (`to_report`) and back (`from_report`)
    run_status   the one decision of how a run ended (`lacmfer.names.RunStatus`), from its
                 last evaluation and whether it raised
    RunResult    how a run ended: its status, every evaluation's metrics, its error; a search
                 trial's is `search.analysis.TrialRecord`, a final run's `lacmfer.run.final_run.FinalResult`

The run (`lacmfer.run.lifecycle.Run.status`), the trial's reports, the searcher (what Optuna
is told), the analysis of a search (and through it the export) and final training all decide
through `run_status`. Bad input that every run found where it trained ends `tune.py` and
`train.py` alike, through `raise_bad_input_of_every_run`. No torch and no Ray here: the
analysis of a finished search reads this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lacmfer.errors import UserError
from lacmfer.names import RUN_STATUSES, RunStatus

#: The report key holding the status the run ends with if it ends at that evaluation. A
#: string: Tune keeps non-numeric report values as they are, and its schedulers read only the metric.
STATUS_KEY = "status"
#: How the last line of Tune's error.txt starts for bad input found only where a trial ran.
USER_ERROR_LINE_PREFIX = f"{UserError.__module__}.{UserError.__qualname__}: "


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a run."""

    metrics: dict[str, float]  # `Trainer.evaluate()`, the objective NaN when diverged
    final: bool = False  # the last evaluation of the schedule
    diverged: bool = False  # NaN/inf loss or predictions: the run ends here

    def to_report(self) -> dict[str, float | str]:
        """The metrics and, under `STATUS_KEY`, the status of the run if it ends here (a Tune report)."""
        return {**self.metrics, STATUS_KEY: run_status(self).value}

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> Evaluation:
        """The evaluation behind a report (a line of Tune's result.json, a result Tune hands the
        searcher). Its numeric entries are the metrics: a Tune report also holds its config, dates
        and host names."""
        metrics = {k: float(v) for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if STATUS_KEY not in report:
            return cls(metrics, *_flags_of_an_older_report(report))
        status = RunStatus(report[STATUS_KEY])
        return cls(metrics, final=status is RunStatus.COMPLETED, diverged=status is RunStatus.DIVERGED)


def _flags_of_an_older_report(report: Mapping[str, Any]) -> tuple[bool, bool]:
    """(final, diverged) of a report written before reports carried their status, as 0/1
    `final_evaluation` and `diverged`: the result.json of an older search, which `--resume`
    and `--export-only` still read."""
    return report.get("final_evaluation", 0.0) >= 1.0, report.get("diverged", 0.0) >= 1.0


def run_status(last: Evaluation | None, *, raised: bool = False) -> RunStatus:
    """How a run ended: failed if it raised (on every attempt); else by its last evaluation:
    diverged if that diverged, completed if it was the schedule's last, stopped early otherwise
    (ASHA stopped it, the search was interrupted, or it never reported)."""
    if raised:
        return RunStatus.FAILED
    if last is not None and last.diverged:
        return RunStatus.DIVERGED
    if last is not None and last.final:
        return RunStatus.COMPLETED
    return RunStatus.STOPPED_EARLY


@dataclass(kw_only=True)
class RunResult:
    """How one run ended. `steps`, `time_s` and `resumed_at` are known to the run itself only
    (a final run's, not a search trial's, whose Tune files hold them per report)."""

    status: RunStatus  # from `run_status`; a status string is taken as its RunStatus
    history: list[dict[str, float]] = field(default_factory=list)  # every evaluation's metrics, in order
    error: str | None = None  # a failed run's exception, one line
    user_error: bool = False  # it failed on bad input found only where it trained (a UserError)
    steps: int | None = None
    time_s: float | None = None
    resumed_at: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.status not in RUN_STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {', '.join(RUN_STATUSES)}")
        self.status = RunStatus(self.status)

    @property
    def evaluations(self) -> int:
        return len(self.history)

    @property
    def last(self) -> dict[str, float] | None:
        return self.history[-1] if self.history else None

    def best(self, metric: str, mode: str = "max") -> dict[str, float] | None:
        """The evaluation with the best finite value of `metric` (the earliest on ties), or None."""
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        sign = 1.0 if mode == "max" else -1.0
        best: dict[str, float] | None = None
        for evaluation in self.history:
            value = evaluation.get(metric, math.nan)
            if math.isfinite(value) and (best is None or sign * value > sign * best[metric]):
                best = evaluation
        return best

    @property
    def bad_input(self) -> str | None:
        """The message of the UserError the run failed on, or None. A trial's error is Tune's
        line, which names the exception's type first; a final run's is the message itself."""
        return (self.error or "").removeprefix(USER_ERROR_LINE_PREFIX) if self.user_error else None


def raise_bad_input_of_every_run(results: Sequence[RunResult], where: str) -> None:
    """Raise the UserError of bad input that every run found where it trained, so the command
    ends as for bad input found before any run: one line, exit 2 (`lacmfer.errors.exit_on_user_error`),
    not N failed runs. Nothing when there is no run or any run ended otherwise.

    The first run's message stands for all; `where` says where the others' messages are.
    """
    if not results or not all(r.user_error for r in results):
        return
    messages = list(dict.fromkeys(r.bad_input or "" for r in results))
    others = f" (and {len(messages) - 1} other error(s), {where})" if len(messages) > 1 else ""
    raise UserError(messages[0] + others)
