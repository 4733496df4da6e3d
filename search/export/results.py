"""What an export found: one `SplitExport` per split (read by the best configs, the trials
table and summary.md) and the `ExportSummary` returned to the caller, whose `str()` is the
console report. Data only: nothing here reads or writes a file."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lacmfer.names import ORACLE_OBJECTIVE
from lacmfer.reports.oracle_gap import Pick
from search.analysis import OBJECTIVE_KEY, ORACLE_METRIC, STATUSES, TrialRecord
from search.export.wording import ORACLE_BANNER, fmt
from search.storage import Location


@dataclass
class SplitExport:
    """What the export found and wrote for one split."""

    target: str
    counts: dict[str, int]
    best: TrialRecord | None = None
    best_evaluation: dict[str, float] | None = None
    best_config: Location | None = None
    importances: dict[str, float] = field(default_factory=dict)
    importance_note: str | None = None
    ranking: list[tuple[str, float]] = field(default_factory=list)
    ranking_points: int = 0
    picks: dict[str, Pick | None] = field(default_factory=dict)

    @property
    def best_value(self) -> float | None:
        return None if self.best_evaluation is None else self.best_evaluation[OBJECTIVE_KEY]


@dataclass
class ExportSummary:
    """The result of `export_experiment`; `str()` gives the console report."""

    exp_dir: Location
    objective: str
    scope: str
    splits: list[SplitExport]
    missing_targets: list[str]
    trials_table: Location
    summary: Location
    removed_checkpoints: int = 0
    removed_bytes: int = 0

    @property
    def oracle(self) -> bool:
        return self.objective == ORACLE_OBJECTIVE

    def __str__(self) -> str:
        lines = [f"export of {self.exp_dir}: objective {self.objective}, scope {self.scope}"]
        if self.oracle:
            lines.append(f"!!! {ORACLE_BANNER} !!!")
        for split in self.splits:
            counts = ", ".join(f"{split.counts[s]} {s}" for s in STATUSES)
            if split.best is None:
                lines.append(f"  {split.target:<8} no trial to export ({counts})")
                continue
            oracle = fmt(split.best_evaluation.get(ORACLE_METRIC, math.nan))
            lines.append(
                f"  {split.target:<8} {self.objective} {fmt(split.best_value)} (trial {split.best.trial_id}, "
                f"{split.best.status}), target_acc {oracle} -> {split.best_config}   [{counts}]"
            )
        if self.missing_targets:
            lines.append(f"  not run: {', '.join(self.missing_targets)}")
        lines.append(f"summary: {self.summary}   trials: {self.trials_table}")
        if self.removed_checkpoints:
            lines.append(f"removed {self.removed_checkpoints} checkpoint(s) of trials not exported "
                         f"({self.removed_bytes / 2**20:.1f} MiB; search.keep_checkpoints: true keeps them)")
        return "\n".join(lines)
