"""Reading and analysing a finished search: trial records, validator ranking, importance.

No tensors here: a user who only wants to analyse a search needs `search`, pyarrow and
the files the search wrote, not a GPU. Ray is imported only to read Tune's experiment
state (`read_tune_experiment`; no cluster is started); the rest is numpy and Optuna.

Status of a trial (one of `STATUSES`), from its Tune status and its last report:

- `failed`: Tune marked it ERROR (an exception, retries exhausted);
- `diverged`: its last report has `diverged == 1` (the trainable ends itself on NaN/inf loss);
- `completed`: its last report has `final_evaluation == 1` (the schedule's last evaluation);
- `stopped early`: anything else that reported at least once: stopped by ASHA, or the
  driver was interrupted before the trial finished.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from lacmfer.config import SEARCHABLE
from lacmfer.errors import UserError
from search.storage import Location, location

STATUSES: tuple[str, ...] = ("completed", "stopped early", "failed", "diverged")
#: Statuses whose trials may be exported as the best config of a split.
SELECTABLE: tuple[str, ...] = ("completed", "stopped early")
#: The label-free validators every evaluation reports (higher is better for each).
LABEL_FREE_VALIDATORS: tuple[str, ...] = ("source_val_acc", "im", "entropy", "bnm", "snd")
#: Target test accuracy: the oracle, needs target labels.
ORACLE_METRIC = "target_acc"
#: The metric key that holds the configured objective's value in every report.
OBJECTIVE_KEY = "objective"
SCOPES: tuple[str, ...] = ("best", "last")


@dataclass
class TrialRecord:
    """One trial of one split: its sampled values, status and every report in order."""

    trial_id: str
    target: str
    params: dict[str, Any]
    status: str
    history: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")

    @property
    def evaluations(self) -> int:
        return len(self.history)

    @property
    def last(self) -> dict[str, float] | None:
        return self.history[-1] if self.history else None

    def best(self, metric: str, mode: str = "max") -> dict[str, float] | None:
        """The report with the best finite value of `metric` (the earliest on ties), or None."""
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        sign = 1.0 if mode == "max" else -1.0
        best: dict[str, float] | None = None
        for report in self.history:
            value = report.get(metric, math.nan)
            if math.isfinite(value) and (best is None or sign * value > sign * best[metric]):
                best = report
        return best

    def selected(self, scope: str = "best", metric: str = OBJECTIVE_KEY) -> dict[str, float] | None:
        """The evaluation that represents this trial under `scope`, or None.

        `best`: the evaluation with the highest `metric`; `last`: the last evaluation,
        when its `metric` is finite.
        """
        check_scope(scope)
        if scope == "best":
            return self.best(metric)
        last = self.last
        return last if last is not None and math.isfinite(last.get(metric, math.nan)) else None


def check_scope(scope: str) -> None:
    """A UserError unless `scope` is one of `SCOPES`."""
    if scope not in SCOPES:
        raise UserError(f"scope {scope!r}: expected one of {', '.join(SCOPES)}")


def trial_status(tune_status: str, history: Sequence[dict[str, float]]) -> str:
    """Our status from Tune's status string (`ERROR`, `TERMINATED`, ...) and the reports."""
    if tune_status == "ERROR":
        return "failed"
    last = history[-1] if history else {}
    if last.get("diverged", 0.0) >= 1.0:
        return "diverged"
    if last.get("final_evaluation", 0.0) >= 1.0:
        return "completed"
    return "stopped early"


def select_best(records: Iterable[TrialRecord], scope: str = "best") -> TrialRecord | None:
    """The trial whose config is exported for a split, or None when no trial qualifies.

    Rule: only `completed` and `stopped early` trials with a finite objective under
    `scope` qualify. Completed trials come first: the exported config trains the full
    schedule, which only they ran (ASHA stopped the others because they ranked low at a
    rung, so their values come from shorter runs); stopped-early trials are chosen only
    when no trial completed (e.g. an interrupted search). Within that, the highest value
    wins; ties go to the trial with more evaluations, then to the smaller trial id (so
    the choice is deterministic).
    """
    check_scope(scope)
    candidates = []
    for record in records:
        chosen = record.selected(scope) if record.status in SELECTABLE else None
        if chosen is not None:
            candidates.append((record.status == "completed", chosen[OBJECTIVE_KEY], record.evaluations, record))
    if not candidates:
        return None
    # max over (completed, value, evaluations); the smaller trial id among equals.
    best_key = max(c[:3] for c in candidates)
    return min((c[3] for c in candidates if c[:3] == best_key), key=lambda r: r.trial_id)


# ---------------------------------------------------------------- reading Tune's files


def _numeric(report: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of one Tune result line (drops `config`, dates, host names)."""
    return {k: float(v) for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def read_result_json(path: Path | Location) -> list[dict[str, float]]:
    """Every report of a trial from Tune's `result.json` (one JSON object per line).

    A truncated last line (the driver was killed while writing) is ignored; a broken
    line before it is a UserError naming the file and line. Reports repeated after a
    trial resumed from a checkpoint are de-duplicated by `training_iteration`, keeping
    the latest, so the history is the one the trial's final state went through.
    """
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    reports: list[dict[str, float]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)  # Python's json reads the NaN/Infinity Tune writes
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise UserError(f"{path}:{number}: not a JSON report line (a corrupted Tune result file)") from None
        reports.append(_numeric(raw))
    if reports and all("training_iteration" in r for r in reports):
        by_iteration = {r["training_iteration"]: r for r in reports}
        reports = [by_iteration[i] for i in sorted(by_iteration)]
    return reports


def _error_line(trial_dir: Path | Location) -> str:
    """The last non-empty line of Tune's `error.txt` (the exception), or a fallback."""
    error_file = trial_dir / "error.txt"
    if error_file.exists():
        lines = [ln.strip() for ln in error_file.read_text(encoding="utf-8", errors="replace").splitlines()]
        lines = [ln for ln in lines if ln]
        if lines:
            return lines[-1]
    return "the trial raised an error (no error.txt found)"


def read_trial_dir(trial_dir: Path | Location, trial_id: str, target: str, tune_status: str,
                   config: dict[str, Any]) -> TrialRecord:
    """One TrialRecord from a trial folder, its Tune status and its config (the sampled values).

    Only keys that are search-space names (`lacmfer.config.SEARCHABLE`) are kept as
    params; a conditional parameter that was not sampled is simply absent.
    """
    history = read_result_json(trial_dir / "result.json")
    params = {k: v for k, v in config.items() if k in SEARCHABLE}
    status = trial_status(tune_status, history)
    return TrialRecord(trial_id, target, params, status, history,
                       error=_error_line(trial_dir) if status == "failed" else None)


def read_tune_experiment(path: Path | str | Location, target: str) -> list[TrialRecord]:
    """Every trial of one split's Tune experiment folder (Tuner storage), in trial-id order.

    Statuses come from Ray's own reader, `ray.tune.ExperimentAnalysis`: it needs no
    running cluster, picks the newest experiment state after a resume, and is the
    authority on which trials errored (an `error.txt` stays in a trial folder after a
    retried trial succeeds, so the folder alone cannot tell). Reports are read from each
    trial's `result.json` rather than through its dataframes: `progress.csv` fixes its
    columns at the first report and pandas is not needed for a list of dicts.

    Trials that never reported and did not fail (still PENDING when the driver stopped)
    are left out: they were never run. `path` may be in object storage (`search.storage`).
    """
    path = path if isinstance(path, Location) else location(path)
    if not path.is_dir():
        raise UserError(f"{path}: no Tune experiment folder for split {target}")
    from ray.tune import ExperimentAnalysis  # Ray only where Tune's state is read

    try:
        analysis = ExperimentAnalysis(path.path, storage_filesystem=None if path.is_local else path.fs)
    except ValueError:
        raise UserError(f"{path}: no Tune experiment state (experiment_state-*.json) in this folder") from None
    records = []
    for trial in analysis.trials:
        # trial.path: the trial's folder inside the experiment's filesystem
        trial_dir = Path(trial.path) if path.is_local else path / trial.path[len(path.path):].strip("/")
        record = read_trial_dir(trial_dir, trial.trial_id, target, trial.status, dict(trial.config))
        if record.history or record.status == "failed":
            records.append(record)
    return sorted(records, key=lambda r: r.trial_id)


# ---------------------------------------------------------------- validator ranking


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n in ascending order; tied values share the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # the highest rank of each distinct value
    return (upper - (counts - 1) / 2.0)[inverse]


def top_weights(scores: np.ndarray, power: float = 2.0) -> np.ndarray:
    """Weights that emphasise high validator scores: w_i = (r_i / n) ** power.

    r_i is the average rank of scores[i] in ascending order, so the highest score gets
    weight 1 and the lowest (1/n) ** power. This follows Musgrave, Belongie & Lim,
    "Benchmarking Validation Methods for Unsupervised Domain Adaptation" (2022), who
    weight each checkpoint by a power of its normalised validator-score rank, because
    a validator is used to pick the top checkpoints and its ordering of poor ones
    matters little. (They normalise dense ranks by the maximum rank; we use average
    ranks over n, which equals theirs without ties.)
    """
    scores = np.asarray(scores, dtype=float)
    return (average_ranks(scores) / scores.size) ** power


def weighted_spearman(x: Sequence[float], y: Sequence[float], weights: Sequence[float]) -> float:
    """Weighted Spearman correlation: the weighted Pearson correlation of the ranks.

    With r = average ranks of x, s = average ranks of y (ascending, ties averaged) and
    weights w:  ρ_w = Σ w (r − r̄_w)(s − s̄_w) / sqrt(Σ w (r − r̄_w)² · Σ w (s − s̄_w)²),
    where r̄_w = Σ w r / Σ w. Equal weights give the ordinary Spearman correlation.
    Points where x, y or the weight is not finite, or the weight is ≤ 0, are skipped
    (ranks are taken over the points kept); fewer than 3 points, or a constant x or y,
    give NaN.
    """
    x, y, w = (np.asarray(a, dtype=float) for a in (x, y, weights))
    if not x.shape == y.shape == w.shape:
        raise ValueError(f"x, y and weights must have the same shape, got {x.shape}, {y.shape}, {w.shape}")
    keep = np.isfinite(x) & np.isfinite(y) & np.isfinite(w) & (w > 0)
    if keep.sum() < 3:
        return math.nan
    r, s, w = average_ranks(x[keep]), average_ranks(y[keep]), w[keep]
    if np.ptp(r) == 0 or np.ptp(s) == 0:  # checked on the ranks: centring leaves rounding noise
        return math.nan
    r = r - np.average(r, weights=w)
    s = s - np.average(s, weights=w)
    denominator = math.sqrt(float(np.sum(w * r * r) * np.sum(w * s * s)))
    return float(np.clip(np.sum(w * r * s) / denominator, -1.0, 1.0))


def evaluation_pairs(records: Iterable[TrialRecord], metric: str, oracle: str = ORACLE_METRIC
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(metric, oracle) over every evaluation of every trial where both are finite."""
    pairs = [
        (report.get(metric, math.nan), report.get(oracle, math.nan))
        for record in records for report in record.history
    ]
    pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    if not pairs:
        return np.empty(0), np.empty(0)
    xs, ys = zip(*pairs, strict=True)
    return np.asarray(xs), np.asarray(ys)


def validator_ranking(
    records: Iterable[TrialRecord],
    validators: Sequence[str] = LABEL_FREE_VALIDATORS,
    oracle: str = ORACLE_METRIC,
    power: float = 2.0,
) -> list[tuple[str, float]]:
    """How well each validator orders checkpoints like the oracle, best first.

    For each validator: the weighted Spearman correlation between its value and `oracle`
    over ALL evaluations of all given trials (every evaluation is a candidate
    checkpoint), with `top_weights(validator values, power)`, so agreement among the
    checkpoints the validator scores highest counts most. Pass the records of ONE split:
    validator values are only comparable on the same evaluation set. Validators without
    at least 3 finite points get NaN and are listed last.
    """
    records = list(records)
    ranking = []
    for name in validators:
        xs, ys = evaluation_pairs(records, name, oracle)
        corr = weighted_spearman(xs, ys, top_weights(xs, power)) if xs.size else math.nan
        ranking.append((name, corr))
    return sorted(ranking, key=lambda item: -item[1] if not math.isnan(item[1]) else math.inf)


# ---------------------------------------------------------------- Optuna importance


def param_importances(study: optuna.Study) -> dict[str, float]:
    """Hyperparameter importance of a split's study, from its COMPLETE trials only.

    Wraps `optuna.importance.get_param_importances` with Optuna's default evaluator
    (PED-ANOVA in Optuna 5, which handles conditional parameters), normalised to sum
    to 1, most important first. That function reads COMPLETE trials with a finite value
    only, so PRUNED (ASHA-stopped) and FAIL trials never enter it. Returns {} when
    there is nothing to rank: fewer than 2 complete trials, or fewer than 2 parameters
    that vary (one parameter would always get importance 1).
    """
    complete = [
        t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    varying = {name for t in complete for name, dist in t.distributions.items() if not dist.single()}
    if len(complete) < 2 or len(varying) < 2:
        return {}
    with warnings.catch_warnings():
        # Small studies make Optuna warn about estimate accuracy; the summary shows the
        # number of complete trials instead.
        warnings.simplefilter("ignore")
        importances = optuna.importance.get_param_importances(study)
    return {name: float(value) for name, value in importances.items()}
