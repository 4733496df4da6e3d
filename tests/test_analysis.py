"""search.analysis: statuses, Tune result files, weighted Spearman, validator ranking, importance."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from lacmfer.errors import UserError
from lacmfer.reports.oracle_gap import average_ranks, pick, rank_average
from lacmfer.run.outcome import Evaluation
from search.analysis import (
    MIN_COMPLETE_FOR_IMPORTANCE,
    RANK_AVERAGE,
    TrialRecord,
    evaluation_pairs,
    mean_oracle_gap,
    musgrave_weights,
    param_importances,
    read_result_json,
    read_trial_dir,
    select_best,
    validator_picks,
    validator_ranking,
    weighted_ranks,
    weighted_spearman,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def report(i: int, objective: float, final: bool = False, diverged: bool = False, **extra: float) -> dict:
    """One evaluation as the trial reports it (`Evaluation.to_report`: the metrics and the status)."""
    metrics = {"training_iteration": float(i), "step": 10.0 * i, "objective": objective, **extra}
    return Evaluation(metrics, final=final, diverged=diverged).to_report()


def ray_line(metrics: dict, trial_id: str, config: dict) -> str:
    """One result.json line as Ray 2.60 writes it (format checked against a real Tuner run)."""
    line = {**metrics, "timestamp": 1795779566, "checkpoint_dir_name": None, "done": False,
            "trial_id": trial_id, "date": "2026-11-27_11-39-26", "time_this_iter_s": 0.01,
            "time_total_s": 0.01 * metrics["training_iteration"], "pid": 1, "hostname": "vm",
            "node_ip": "192.0.2.2", "config": config, "time_since_restore": 0.01,
            "iterations_since_restore": int(metrics["training_iteration"])}
    return json.dumps(line)  # NaN is written as the bare token NaN, as Ray does


def test_search_package_does_not_import_torch():
    """Analysis needs no GPU stack, and a split's driver process (search.driver, the Tuner it builds,
    the trainable it hands Ray) imports neither torch nor torchvision: only the trial workers do.

    Catches: a module-level `lacmfer.run` import in `trainables/` (0.5 GiB and seconds per split driver).
    """
    code = ("import sys, search.analysis, search.export, search.driver, search.tuner; "
            "print('torch' in sys.modules, 'torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


# ---------------------------------------------------------------- records and statuses


@pytest.mark.parametrize("tune_status, reports, status", [
    ("ERROR", [report(1, 0.5, final=True)], "failed"),
    ("TERMINATED", [report(1, 0.5), report(2, math.nan, diverged=True)], "diverged"),
    ("TERMINATED", [report(1, 0.5), report(2, 0.6, final=True)], "completed"),
    ("TERMINATED", [report(1, 0.5, final=True), report(2, 0.6)], "stopped early"),  # only the last report counts
    ("TERMINATED", [report(1, 0.5)], "stopped early"),  # ASHA
    ("RUNNING", [report(1, 0.5)], "stopped early"),  # driver interrupted
], ids=["error", "diverged", "completed", "last report", "ASHA", "interrupted"])
def test_a_trials_status_comes_from_its_last_report_and_tunes_error(tmp_path, tune_status, reports, status):
    """Through the files the export reads. Catches: Tune's ERROR ignored, a status read from
    another report than the last, or the report's status string not read (every trial stopped early)."""
    (tmp_path / "result.json").write_text("\n".join(ray_line(r, "t1", {}) for r in reports) + "\n", encoding="utf-8")
    assert read_trial_dir(tmp_path, "t1", "CK", tune_status, {}).status == status
    with pytest.raises(ValueError, match="status"):
        TrialRecord("t", "CK", {}, "finished")


def test_record_best_last_and_scopes():
    r = TrialRecord("t", "CK", {}, "completed",
                    [report(1, 0.2), report(2, 0.7), report(3, math.nan), report(4, 0.7), report(5, 0.4, final=True)])
    assert r.evaluations == 5
    assert r.last["step"] == 50
    assert r.best("objective")["step"] == 20  # earliest of the tied maxima, NaN skipped
    assert r.best("objective", mode="min")["step"] == 10
    assert r.selected("best")["step"] == 20
    assert r.selected("last")["step"] == 50
    nan_last = TrialRecord("t", "CK", {}, "diverged", [report(1, 0.2), report(2, math.nan, diverged=True)])
    assert nan_last.selected("last") is None and nan_last.selected("best")["step"] == 10
    assert TrialRecord("t", "CK", {}, "failed").last is None
    with pytest.raises(UserError, match="scope"):
        r.selected("median")


def test_select_best_prefers_completed_then_value_then_evaluations_then_id():
    def rec(tid, status, values):
        hist = [report(i + 1, v, final=(status == "completed" and i == len(values) - 1)) for i, v in enumerate(values)]
        return TrialRecord(tid, "CK", {}, status, hist)

    stopped_high = rec("a", "stopped early", [0.95])
    completed = [rec("b", "completed", [0.5, 0.8]), rec("c", "completed", [0.9, 0.6]),
                 rec("d", "completed", [0.1, 0.9, 0.3])]
    failed = rec("e", "failed", [0.99])
    diverged = rec("f", "diverged", [0.98, math.nan])
    pool = [stopped_high, *completed, failed, diverged]
    # best scope: c and d tie at 0.9; d ran more evaluations
    assert select_best(pool, "best").trial_id == "d"
    assert select_best(pool, "last").trial_id == "b"
    # only stopped-early/failed/diverged: the stopped-early trial is used
    assert select_best([stopped_high, failed, diverged]).trial_id == "a"
    assert select_best([failed, diverged]) is None
    # full tie: smaller trial id
    assert select_best([rec("z", "completed", [0.5]), rec("y", "completed", [0.5])]).trial_id == "y"


def test_read_result_json_tolerates_truncated_tail_and_dedups_resumed_reports(tmp_path):
    path = tmp_path / "result.json"
    cfg = {"hyper_align": 0.3}
    lines = [ray_line(report(1, 0.1), "t1", cfg), ray_line(report(2, 0.2), "t1", cfg),
             # resumed from the iteration-1 checkpoint: iteration 2 is reported again
             ray_line(report(2, 0.25), "t1", cfg), ray_line(report(3, math.nan, diverged=True), "t1", cfg)]
    path.write_text("\n".join(lines) + "\n" + lines[0][:40], encoding="utf-8")  # killed mid-line
    evaluations = read_result_json(path)
    history = [e.metrics for e in evaluations]
    assert [h["training_iteration"] for h in history] == [1, 2, 3]
    assert history[1]["objective"] == 0.25
    assert math.isnan(history[2]["objective"])
    assert "config" not in history[0] and "hostname" not in history[0] and history[0]["time_total_s"] == 0.01
    assert [e.diverged for e in evaluations] == [False, False, True]

    path.write_text(lines[0] + "\n{broken\n" + lines[1] + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"result.json:2"):
        read_result_json(path)
    assert read_result_json(tmp_path / "absent.json") == []


def test_read_trial_dir_keeps_search_params_and_reads_the_error(tmp_path):
    trial = tmp_path / "abc_00001"
    trial.mkdir()
    config = {"hyper_align": 0.3, "cluster_ramp": "linear", "not_a_search_name": 1}
    (trial / "result.json").write_text(ray_line(report(1, 0.4), "abc_00001", config) + "\n", encoding="utf-8")
    (trial / "error.txt").write_text("Failure # 1\nTraceback ...\n  File x\nRuntimeError: boom\n\n", encoding="utf-8")
    failed = read_trial_dir(trial, "abc_00001", "CK", "ERROR", config)
    assert failed.status == "failed" and failed.error == "RuntimeError: boom" and not failed.user_error
    assert failed.params == {"hyper_align": 0.3, "cluster_ramp": "linear"}
    assert failed.evaluations == 1 and failed.target == "CK"
    # the same folder, retried successfully: Tune's status decides, not the stale error.txt
    assert read_trial_dir(trial, "abc_00001", "CK", "TERMINATED", config).error is None
    # bad input found only in the trial: Tune's line names the UserError, which the trial's result records
    (trial / "error.txt").write_text("Traceback ...\nlacmfer.errors.UserError: CK.txt:3: bad label\n", encoding="utf-8")
    bad = read_trial_dir(trial, "abc_00001", "CK", "ERROR", config)
    assert (bad.error, bad.user_error, bad.bad_input) == ("lacmfer.errors.UserError: CK.txt:3: bad label", True,
                                                          "CK.txt:3: bad label")


# ---------------------------------------------------------------- weighted Spearman


def test_average_ranks_with_ties():
    assert average_ranks(np.array([10.0, 30.0, 20.0, 30.0])).tolist() == [1.0, 3.5, 2.0, 3.5]


def test_weighted_spearman_hand_case_as_musgrave_et_al_compute_it():
    scores, oracle = [0.8, math.nan, 0.8, 0.2], [0.9, 0.7, 0.5, 0.3]
    # 1. The NaN score becomes the lowest finite score: [0.8, 0.2, 0.8, 0.2].
    # 2. Normalised dense ranks: scores [1, 1/2, 1, 1/2], oracle [1, 3/4, 1/2, 1/4];
    #    w = max(.,.)² = [1, 9/16, 1, 1/4], i.e. ∝ [16, 9, 16, 4] (the result is scale-free).
    w = musgrave_weights(np.array([0.8, 0.2, 0.8, 0.2]), np.array(oracle))
    np.testing.assert_allclose(w, [1.0, 9 / 16, 1.0, 1 / 4])
    # 3. Weighted ranks with w ∝ [16, 9, 16, 4]:
    #    scores: tie 0.2 = points 2, 4 (weights 9, 4; mean 6.5): 0 + 6.5·(2+1)/2 = 9.75;
    #            tie 0.8 = points 1, 3 (weights 16, 16): 13 + 16·(2+1)/2 = 37.
    #    oracle (no ties): ascending 0.3, 0.5, 0.7, 0.9 with weights 4, 16, 9, 16 gives
    #            running sums 4, 20, 29, 45, i.e. [45, 29, 20, 4] in point order.
    w16 = np.array([16.0, 9.0, 16.0, 4.0])
    np.testing.assert_allclose(weighted_ranks(np.array([0.8, 0.2, 0.8, 0.2]), w16), [37, 9.75, 37, 9.75])
    np.testing.assert_allclose(weighted_ranks(np.array(oracle), w16), [45, 29, 20, 4])
    # 4. Weighted Pearson of those ranks, Σw = 45: means 5243/180 and 439/15;
    #    Σw·dx·dy = 42292/15, Σw·dx² = 308906/45, Σw·dy² = 39444/5;
    #    ρ = (42292/15) / sqrt(308906/45 · 39444/5) = sqrt(18818/128193) ≈ 0.3831.
    assert weighted_spearman(scores, oracle) == pytest.approx(math.sqrt(18818 / 128193), rel=1e-12)


def test_weighted_ranks_reduce_to_average_ranks_with_unit_weights():
    values = np.array([10.0, 30.0, 20.0, 30.0, 5.0])
    np.testing.assert_array_equal(weighted_ranks(values, np.ones(5)), average_ranks(values))


def test_weighted_spearman_with_power_zero_is_the_ordinary_spearman():
    # power 0: every weight is 1; no ties, so ρ = 1 − 6Σd²/(n(n²−1)); d = [0, 0, 1, −1, 0] → 1 − 12/120
    assert weighted_spearman([1, 2, 3, 4, 5], [1, 2, 4, 3, 5], power=0.0) == pytest.approx(0.9, rel=1e-12)


def test_weighted_spearman_counts_disorder_at_the_top_more():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    assert weighted_spearman(x, 3 * x + 1) == pytest.approx(1.0)
    order = np.argsort(x)
    top_noise, bottom_noise = x.copy(), x.copy()
    top_noise[order[-10:]] = x[order[-10:]][::-1]
    bottom_noise[order[:10]] = x[order[:10]][::-1]
    assert weighted_spearman(x, top_noise) < weighted_spearman(x, bottom_noise)
    # unweighted, the two are the same amount of disorder
    assert weighted_spearman(x, top_noise, power=0.0) == pytest.approx(weighted_spearman(x, bottom_noise, power=0.0))


def test_weighted_spearman_ranks_non_finite_scores_as_the_worst():
    oracle = [0.9, 0.2, 0.5, 0.7, 0.4]
    lowest = [0.6, 0.1, 0.3, 0.5, 0.1]  # the point at index 4 scored as the lowest finite score
    expected = weighted_spearman(lowest, oracle)
    for bad in (math.nan, math.inf, -math.inf):
        assert weighted_spearman([0.6, 0.1, 0.3, 0.5, bad], oracle) == pytest.approx(expected, rel=1e-12)
    # dropping the point instead would give a different value
    assert weighted_spearman(lowest[:4], oracle[:4]) != pytest.approx(expected)


def test_weighted_spearman_undefined_cases():
    assert math.isnan(weighted_spearman([math.nan, math.nan, math.nan], [0.1, 0.2, 0.3]))  # no finite score
    assert math.isnan(weighted_spearman([1, 1, 1], [1, 2, 3]))  # constant validator
    assert math.isnan(weighted_spearman(np.full(12, 0.5), np.arange(12.0)))  # no rounding noise from centring
    with pytest.raises(ValueError, match="length"):
        weighted_spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="oracle"):
        weighted_spearman([1, 2, 3], [1, 2, math.nan])


def test_validator_ranking_orders_validators_by_agreement_with_the_oracle():
    rng = np.random.default_rng(1)
    records = []
    for t in range(6):
        acc = np.sort(rng.uniform(0.2, 0.9, size=5))
        history = [
            report(i + 1, float(a), final=i == 4, target_acc=float(a), source_val_acc=float(2 * a + 0.1),
                   im=float(a + rng.normal(0, 0.05)), entropy=float(-a), bnm=float(rng.uniform()),
                   snd=math.nan)
            for i, a in enumerate(acc)
        ]
        records.append(TrialRecord(f"t{t}", "CK", {}, "completed", history))
    ranking = validator_ranking(records)
    corr = dict(ranking)
    # The validators these trials do not report (the new ones) are NaN and come last.
    assert [n for n, _ in ranking][:5] == ["source_val_acc", "im", "bnm", "entropy", "snd"]
    assert all(math.isnan(c) for _, c in ranking[4:])
    assert corr["source_val_acc"] == pytest.approx(1.0) and 0.8 < corr["im"] < 1.0
    # reversed order: near −1, not exactly (weighted ranks from the two ends differ by the weights)
    assert corr["entropy"] < -0.99
    assert math.isnan(corr["snd"])  # never finite: listed last, not an error


# ---------------------------------------------------------------- oracle gap


def test_a_pick_is_the_first_highest_finite_score_judged_by_the_oracle():
    scores = [0.2, 0.9, 0.9, math.nan, 0.1]
    oracle = [0.50, 0.30, 0.80, 0.95, 0.40]
    chosen = pick(scores, oracle)
    # index 1: the first of the two 0.9 (a NaN score is never picked); 4 of 5 are better than 0.30.
    assert (chosen.index, chosen.accuracy, chosen.best, chosen.better, chosen.pool) == (1, 0.30, 0.95, 4, 5)
    assert chosen.gap == pytest.approx(-0.65) and not chosen.worst_decile  # 4/5 < 9/10
    assert pick([math.nan, math.nan], [0.1, 0.2]) is None
    with pytest.raises(ValueError, match="oracle"):
        pick([1.0], [math.nan])


def test_worst_decile_means_nine_tenths_of_the_pool_are_better():
    oracle = [k / 100 for k in range(1, 21)]  # 20 checkpoints, 0.01 .. 0.20: the worst decile is 0.01 and 0.02
    second = pick([1.0 if k == 1 else 0.0 for k in range(20)], oracle)  # 0.02: 18 of 20 better
    third = pick([1.0 if k == 2 else 0.0 for k in range(20)], oracle)  # 0.03: 17 of 20 better
    assert second.better == 18 and second.worst_decile
    assert third.better == 17 and not third.worst_decile
    tied = pick([1.0, 0.0], [0.5, 0.5])  # tied with the best: never the worst decile
    assert tied.gap == 0.0 and not tied.worst_decile


def test_rank_average_by_hand():
    # Ranks of a: 3, 1, 2; of b (NaN lowest): 1, 2, 3; c has no finite score and is left out.
    combined = rank_average([[3.0, 1.0, 2.0], [math.nan, 4.0, 5.0], [math.nan] * 3])
    assert combined.tolist() == [2.0, 1.5, 2.5]


def test_validator_picks_over_every_evaluation_with_an_oracle_value():
    history_a = [report(1, 0.5, target_acc=0.40, im=0.1, source_val_acc=0.9, mixval=0.2),
                 report(2, 0.6, target_acc=math.nan, im=9.0, source_val_acc=0.1, mixval=0.9)]  # no oracle: not a pick
    history_b = [report(1, 0.7, target_acc=0.70, im=0.5, source_val_acc=0.2, mixval=0.8),
                 report(2, 0.8, target_acc=0.60, im=0.3, source_val_acc=0.3, mixval=0.9, final=True)]
    records = [TrialRecord("a", "CK", {}, "stopped early", history_a),
               TrialRecord("b", "CK", {}, "completed", history_b)]
    picks = validator_picks(records)
    xs, ys = evaluation_pairs(records, "im")
    assert ys.tolist() == [0.40, 0.70, 0.60] and picks["im"].index == 1 == int(np.argmax(xs))
    assert picks["im"].gap == 0.0 and picks["source_val_acc"].accuracy == 0.40
    assert picks["source_val_acc"].gap == pytest.approx(-0.30) and picks["dev"] is None
    # Rank average of source_val_acc (3, 1, 2), im (1, 3, 2) and mixval (1, 2, 3): 5/3, 2, 7/3.
    assert picks[RANK_AVERAGE].index == 2 and picks[RANK_AVERAGE].accuracy == 0.60
    mean, worst, made = mean_oracle_gap([picks["source_val_acc"], None, picks["im"]])
    assert (mean, worst, made) == (pytest.approx(-0.15), 0.0, 2)  # 0.40 is beaten by 2 of 3 only


# ---------------------------------------------------------------- importance


SPACE = {
    "hyper_align": FloatDistribution(0.05, 1.6, log=True),
    "threshold": FloatDistribution(0.2, 0.8),
    "cluster_ramp": CategoricalDistribution(["sigmoid", "linear"]),
}
GAMMA = FloatDistribution(2.0, 20.0, log=True)


def _trial(rng, state, value_of):
    params = {"hyper_align": float(rng.uniform(0.05, 1.6)), "threshold": float(rng.uniform(0.2, 0.8)),
              "cluster_ramp": str(rng.choice(["sigmoid", "linear"]))}
    dists = dict(SPACE)
    if params["cluster_ramp"] == "sigmoid":  # a conditional parameter
        params["cluster_gamma"], dists["cluster_gamma"] = float(rng.uniform(2, 20)), GAMMA
    value = value_of(params) if state != TrialState.FAIL else None
    return create_trial(params=params, distributions=dists, value=value, state=state)


def _study(trials):
    study = optuna.create_study(direction="maximize")
    for t in trials:
        study.add_trial(t)
    return study


def test_param_importances_use_complete_trials_only():
    rng = np.random.default_rng(0)
    complete = [_trial(rng, TrialState.COMPLETE, lambda p: -abs(math.log(p["hyper_align"] / 0.4)))
                for _ in range(30)]
    # pruned trials whose (partial) values follow threshold instead: they must not count
    pruned = [_trial(rng, TrialState.PRUNED, lambda p: 10 * p["threshold"]) for _ in range(30)]
    failed = [_trial(rng, TrialState.FAIL, None) for _ in range(5)]
    only_complete = param_importances(_study(complete))
    mixed = param_importances(_study(complete + pruned + failed))
    assert mixed == pytest.approx(only_complete)
    assert max(mixed, key=mixed.get) == "hyper_align"
    assert sum(mixed.values()) == pytest.approx(1.0)
    # the check is sensitive: had the pruned trials counted, the answer would differ
    as_complete = [create_trial(params=t.params, distributions=t.distributions, value=t.value,
                                state=TrialState.COMPLETE) for t in pruned]
    assert param_importances(_study(complete + as_complete)) != pytest.approx(only_complete)


def test_param_importances_degenerate_studies_give_empty_dict():
    rng = np.random.default_rng(0)
    one = [_trial(rng, TrialState.COMPLETE, lambda p: p["threshold"])]
    assert param_importances(_study(one + [_trial(rng, TrialState.PRUNED, lambda p: 1.0)] * 3)) == {}
    # Too few complete trials rank parameters by chance: none below the minimum, some at it.
    enough = [_trial(rng, TrialState.COMPLETE, lambda p: p["threshold"]) for _ in range(MIN_COMPLETE_FOR_IMPORTANCE)]
    assert param_importances(_study(enough[:-1])) == {} and param_importances(_study(enough)) != {}
    assert param_importances(optuna.create_study()) == {}
    single = optuna.create_study(direction="maximize")
    for x in (0.3, 0.5, 0.7):
        single.add_trial(create_trial(params={"threshold": x}, distributions={"threshold": SPACE["threshold"]},
                                      value=x))
    assert param_importances(single) == {}
