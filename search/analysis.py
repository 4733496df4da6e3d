"""Reading and analysing a finished search: trial records, validator ranking, importance.

No tensors here: a user who only wants to analyse a search needs `search`, pyarrow and
the files the search wrote, not a GPU. Ray is imported only to read Tune's experiment
state (`read_tune_experiment`; no cluster is started); the rest is numpy and Optuna.

The status of a trial (one of `STATUSES`) is `lacmfer.run.outcome.run_status` of its last
report (which carries the status the trial ends with there) and of whether Tune marked it
ERROR (an exception, retries exhausted): a trial that reported and was neither failed,
diverged nor completed was stopped by ASHA, or the driver was interrupted before it finished.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from lacmfer import names
from lacmfer.errors import UserError
from lacmfer.hparams import HPARAMS
from lacmfer.reports.oracle_gap import Pick, pick, rank_average, scores_and_oracle
from lacmfer.run.outcome import USER_ERROR_LINE_PREFIX, Evaluation, RunResult, run_status
from search.storage import ExperimentLocations, Location, location

STATUSES = names.RUN_STATUSES
#: Statuses whose trials may be exported as the best config of a split.
SELECTABLE: tuple[names.RunStatus, ...] = (names.RunStatus.COMPLETED, names.RunStatus.STOPPED_EARLY)
ORACLE_METRIC = names.ORACLE_METRIC
OBJECTIVE_KEY = names.OBJECTIVE_KEY
SCOPES: tuple[str, ...] = ("best", "last")


@dataclass(init=False)
class TrialRecord(RunResult):
    """One trial of one split: its sampled values, and how it ended (status, every report's
    metrics in order, the last line of Tune's error.txt when it failed)."""

    trial_id: str
    target: str
    params: dict[str, Any]

    # Positional, as the export, the plots and the benchmarks build it.
    def __init__(self, trial_id: str, target: str, params: dict[str, Any], status: names.RunStatus | str,
                 history: list[dict[str, float]] | None = None, error: str | None = None) -> None:
        # Tune's error line names the exception's type: a UserError is bad input found in the trial.
        super().__init__(status=status, history=[] if history is None else history, error=error,
                         user_error=(error or "").startswith(USER_ERROR_LINE_PREFIX))
        self.trial_id, self.target, self.params = trial_id, target, params

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
            candidates.append((record.status is names.RunStatus.COMPLETED, chosen[OBJECTIVE_KEY], record.evaluations,
                               record))
    if not candidates:
        return None
    # max over (completed, value, evaluations); the smaller trial id among equals.
    best_key = max(c[:3] for c in candidates)
    return min((c[3] for c in candidates if c[:3] == best_key), key=lambda r: r.trial_id)


# ---------------------------------------------------------------- reading Tune's files


def read_result_json(path: Path | Location) -> list[Evaluation]:
    """Every evaluation a trial reported, from Tune's `result.json` (one JSON object per line).

    A truncated last line (the driver was killed while writing) is ignored; a broken
    line before it is a UserError naming the file and line. Reports repeated after a
    trial resumed from a checkpoint are de-duplicated by `training_iteration`, keeping
    the latest, so the history is the one the trial's final state went through.
    """
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    reports: list[Evaluation] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)  # Python's json reads the NaN/Infinity Tune writes
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise UserError(f"{path}:{number}: not a JSON report line (a corrupted Tune result file)") from None
        reports.append(Evaluation.from_report(raw))
    if reports and all("training_iteration" in r.metrics for r in reports):
        by_iteration = {r.metrics["training_iteration"]: r for r in reports}
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

    Only keys that are search-space names (`lacmfer.hparams.HPARAMS`) are kept as
    params; a conditional parameter that was not sampled is simply absent.
    """
    evaluations = read_result_json(trial_dir / "result.json")
    params = {k: v for k, v in config.items() if k in HPARAMS}
    status = run_status(evaluations[-1] if evaluations else None, raised=tune_status == "ERROR")
    return TrialRecord(trial_id, target, params, status, [e.metrics for e in evaluations],
                       error=_error_line(trial_dir) if status is names.RunStatus.FAILED else None)


def read_tune_experiment(path: Path | str | Location, target: str) -> list[TrialRecord]:
    """Every trial of one split's Tune experiment folder (Tuner storage), in trial-id order.

    Statuses come from Ray's own reader, `ray.tune.ExperimentAnalysis`: it needs no
    running cluster, picks the newest experiment state after a resume, and is the
    authority on which trials errored (an `error.txt` stays in a trial folder after a
    retried trial succeeds, so the folder alone cannot tell). Reports are read from each
    trial's `result.json` rather than through its dataframes: `progress.csv` fixes its
    columns at the first report and pandas is not needed for a list of dicts.

    Trials that never reported and did not fail (still PENDING when the driver stopped)
    are left out: they were never run. `path` may be in object storage (see search/storage.py).
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
        if record.history or record.status is names.RunStatus.FAILED:
            records.append(record)
    return sorted(records, key=lambda r: r.trial_id)


def read_split(places: ExperimentLocations, target: str) -> list[TrialRecord]:
    """Every trial of every round of one split (`ExperimentLocations.round`), round by round."""
    rounds = places.rounds(target)
    if not rounds:
        raise UserError(f"{places.split(target)}: no Tune experiment folder for split {target}")
    return [record for path in rounds for record in read_tune_experiment(path, target)]


# ---------------------------------------------------------------- validator ranking


def normalised_dense_ranks(values: np.ndarray) -> np.ndarray:
    """Dense ranks (1 for the smallest distinct value, +1 per next distinct value) over the largest."""
    _, inverse = np.unique(values, return_inverse=True)
    dense = inverse.reshape(-1) + 1.0
    return dense / dense.max()


def musgrave_weights(scores: np.ndarray, oracle: np.ndarray, power: float = 2.0) -> np.ndarray:
    """w_i = max(v_i, t_i) ** power, v and t the normalised dense ranks of scores and oracle.

    A point weighs much when the validator OR the oracle ranks it near the top: what
    matters for model selection is how the best checkpoints (by either) are ordered.
    Musgrave et al. (2022) use power 2.
    """
    return np.maximum(normalised_dense_ranks(scores), normalised_dense_ranks(oracle)) ** power


def weighted_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Ranks in which every point counts its weight instead of 1 (ascending).

    A distinct value held by c points of mean weight m, above points of total weight B,
    has rank B + m · (c + 1) / 2. Without ties that is the running sum of the weights up
    to and including the point; with unit weights it is the ordinary average rank. This is
    the tie rule of the `WeightedCorr` package that Musgrave et al.'s code calls.
    """
    distinct, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    group_weight = np.bincount(inverse, weights=weights, minlength=distinct.size)
    below = np.cumsum(group_weight) - group_weight
    return (below + group_weight / counts * (counts + 1) / 2.0)[inverse]


def weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
    """Σw(x−x̄)(y−ȳ) / sqrt(Σw(x−x̄)² · Σw(y−ȳ)²) with weighted means; NaN if x or y is constant."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:  # checked before centring, which leaves rounding noise
        return math.nan
    x = x - np.average(x, weights=weights)
    y = y - np.average(y, weights=weights)
    denominator = math.sqrt(float(np.sum(weights * x * x) * np.sum(weights * y * y)))
    return float(np.clip(np.sum(weights * x * y) / denominator, -1.0, 1.0))


def weighted_spearman(scores: Sequence[float], oracle: Sequence[float], power: float = 2.0) -> float:
    """The weighted Spearman correlation of a validator's scores with the oracle accuracy.

    Follows K. Musgrave, S. Belongie, S.-N. Lim, "Three New Validators and a Large-Scale
    Benchmark Ranking for Unsupervised Domain Adaptation" (arXiv:2208.07360, 2022), as
    their released benchmark code (powerful-benchmarker) computes it, so the numbers are
    comparable with theirs:

    1. a non-finite score (NaN, ±inf) is set to the lowest finite score: the validator
       would never select that checkpoint, so it ranks with the worst;
    2. weights w = `musgrave_weights(scores, oracle, power)` (power 2 in the paper);
    3. ρ_w = `weighted_pearson` of `weighted_ranks(scores, w)` and
       `weighted_ranks(oracle, w)` with the weights w.

    Every score must be a validator value where higher is better. Returns NaN when no
    score is finite or when the scores or the oracle are constant; the oracle must be
    finite (a checkpoint without an oracle accuracy cannot be judged).
    """
    x, y = scores_and_oracle(scores, oracle)
    finite = np.isfinite(x)
    if not finite.any():
        return math.nan
    x = np.where(finite, x, x[finite].min())
    w = musgrave_weights(x, y, power)
    return weighted_pearson(weighted_ranks(x, w), weighted_ranks(y, w), w)


def evaluation_pairs(records: Iterable[TrialRecord], metric: str, oracle: str = ORACLE_METRIC
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(metric, oracle) over every evaluation of every trial that has a finite oracle value.

    The metric may be NaN there (missing, or the weights had diverged): `weighted_spearman`
    ranks such a score as the worst, as Musgrave et al. do.
    """
    pairs = [
        (report.get(metric, math.nan), report.get(oracle, math.nan))
        for record in records for report in record.history
    ]
    pairs = [(a, b) for a, b in pairs if math.isfinite(b)]
    if not pairs:
        return np.empty(0), np.empty(0)
    xs, ys = zip(*pairs, strict=True)
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def validator_ranking(
    records: Iterable[TrialRecord],
    validators: Sequence[str] | None = None,
    oracle: str = ORACLE_METRIC,
    power: float = 2.0,
) -> list[tuple[str, float]]:
    """How well each validator orders checkpoints like the oracle, best first.

    For each validator: `weighted_spearman` (Musgrave et al. 2022) between its value and
    `oracle` over ALL evaluations of all given trials (every evaluation is a candidate
    checkpoint, as in their benchmark), so agreement among the checkpoints that the
    validator or the oracle ranks highest counts most. Pass the records of ONE split:
    validator values are only comparable on the same evaluation set. A validator with
    no finite value, or a constant one, gets NaN and is listed last. `validators` defaults
    to every objective that reads no target labels (`lacmfer.names.non_oracle_objectives`).
    """
    records = list(records)
    ranking = []
    for name in names.non_oracle_objectives() if validators is None else validators:
        xs, ys = evaluation_pairs(records, name, oracle)
        ranking.append((name, weighted_spearman(xs, ys, power) if xs.size else math.nan))
    return sorted(ranking, key=lambda item: -item[1] if not math.isnan(item[1]) else math.inf)


# ---------------------------------------------------------------- oracle gap


#: The export-time selection rule reported beside the validators: each checkpoint of a
#: split ranked by the mean of its ranks under the ensemble's members
#: (`lacmfer.reports.oracle_gap.rank_average`), which needs the whole pool, so it is no objective.
RANK_AVERAGE = "rank_average"


def validator_picks(records: Iterable[TrialRecord], validators: Sequence[str] | None = None,
                    oracle: str = ORACLE_METRIC) -> dict[str, Pick | None]:
    """The checkpoint each validator (and `RANK_AVERAGE`) would select among ALL evaluations
    of all given trials that have an oracle value, judged by the oracle (`lacmfer.reports.oracle_gap`).

    The pool and its order are those of `evaluation_pairs`, so `Pick.index` points into
    its arrays. None for a validator with no finite value in the pool (or an empty pool).
    Pass the records of ONE split. `validators` defaults to every non-oracle objective.
    """
    pool = [report for record in records for report in record.history
            if math.isfinite(report.get(oracle, math.nan))]
    accuracies = [report[oracle] for report in pool]
    wanted = list(names.non_oracle_objectives() if validators is None else validators)
    scores = {name: [report.get(name, math.nan) for report in pool] for name in (*wanted, *names.ENSEMBLE_MEMBERS)}
    picks = {name: pick(scores[name], accuracies) if pool else None for name in wanted}
    combined = rank_average([scores[m] for m in names.ENSEMBLE_MEMBERS])
    picks[RANK_AVERAGE] = pick(combined, accuracies) if pool else None
    return picks


def mean_oracle_gap(picks: Iterable[Pick | None]) -> tuple[float, float, int]:
    """(mean oracle gap, share of picks in the pool's worst decile, number of picks) over
    the splits where the validator picked a checkpoint (NaN, NaN, 0 where none)."""
    made = [p for p in picks if p is not None]
    if not made:
        return math.nan, math.nan, 0
    return (sum(p.gap for p in made) / len(made), sum(p.worst_decile for p in made) / len(made), len(made))


# ---------------------------------------------------------------- Optuna importance


#: Fewest COMPLETE trials that importance is computed from. PED-ANOVA compares the
#: parameter distribution of the top `IMPORTANCE_TOP_QUANTILE` trials with all of them,
#: and needs at least 2 trials in the top group (Optuna's own minimum per group): 10
#: trials give 2. Optuna's documentation prefers 5 in the top group (25 trials) for
#: stable estimates; the summary prints the number of trials used, so a reader can judge.
MIN_COMPLETE_FOR_IMPORTANCE = 10
IMPORTANCE_TOP_QUANTILE = 0.2


def importance_evaluator() -> optuna.importance.PedAnovaImportanceEvaluator:
    """The evaluator, named rather than left to Optuna's default (which changed across
    versions): PED-ANOVA handles conditional parameters (cluster_gamma) and needs no
    model fitting, so small studies give the same answer every time."""
    return optuna.importance.PedAnovaImportanceEvaluator(target_quantile=IMPORTANCE_TOP_QUANTILE,
                                                         region_quantile=1.0)


def param_importances(study: optuna.Study) -> dict[str, float]:
    """Hyperparameter importance of a split's study, from its COMPLETE trials only.

    `optuna.importance.get_param_importances` with `importance_evaluator()`, normalised
    to sum to 1, most important first. That function reads COMPLETE trials with a finite
    value only, so PRUNED (ASHA-stopped, diverged) and FAIL trials never enter it.
    Returns {} when there is too little to rank: fewer than MIN_COMPLETE_FOR_IMPORTANCE
    complete trials, or fewer than 2 parameters that vary (one parameter would always
    get importance 1).
    """
    complete = [
        t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    varying = {name for t in complete for name, dist in t.distributions.items() if not dist.single()}
    if len(complete) < MIN_COMPLETE_FOR_IMPORTANCE or len(varying) < 2:
        return {}
    with warnings.catch_warnings():
        # Small studies make Optuna warn about estimate accuracy; the summary shows the
        # number of complete trials instead.
        warnings.simplefilter("ignore")
        importances = optuna.importance.get_param_importances(study, evaluator=importance_evaluator())
    return {name: float(value) for name, value in importances.items()}
