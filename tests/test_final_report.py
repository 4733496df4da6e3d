"""The final report's paired comparison of the method with each baseline (`lacmfer.reports.final_report`).

Hand-worked case: target A, seeds 0–2, the method at 50/60/70 % and the baseline at
48/57/69 % (selected = last), so the paired differences are +2, +3, +1 points: mean +2,
standard deviation 1, t(0.975, 2 df) = 4.3027, half-width 4.3027 / √3 = 2.484 →
[−0.48, +4.48]. Unpaired, the same numbers would give a half-width of about 25 points.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lacmfer.reports.final_report import mean_interval, paired_differences, report_markdown, report_table
from lacmfer.run.final_run import FinalResult, failed_result


def run(method: str, seed: int, acc: float, status: str = "completed", target: str = "A") -> FinalResult:
    evaluation = {"step": 10, "objective": acc, "target_acc": acc, "source_val_acc": acc}  # selected = last
    return FinalResult(target=target, method=method, seed=seed, objective="source_val_acc", status=status,
                       history=[evaluation])


#: The baseline's runs are listed in the reverse seed order, and a seed only the method has
#: plus a diverged baseline run must both be left out: pairs are matched by seed, not by position.
RESULTS = [
    run("lacmfer", 0, 0.50), run("lacmfer", 1, 0.60), run("lacmfer", 2, 0.70), run("lacmfer", 3, 0.90),
    run("lacmfer", 4, 0.55),
    run("source_only", 4, math.nan, status="diverged"),
    run("source_only", 2, 0.69), run("source_only", 1, 0.57), run("source_only", 0, 0.48),
]


def test_differences_are_paired_by_seed_and_signed_method_minus_baseline():
    """Mutations that fail it: pairing by list position; baseline − method; keeping the diverged pair."""
    assert paired_differences(RESULTS, "A", "lacmfer", "source_only", "selected") == pytest.approx([0.02, 0.03, 0.01])


def test_interval_is_student_t_with_n_minus_one_degrees_of_freedom():
    """Mutations that fail it: a normal quantile (1.96) instead of Student's; n degrees of freedom; the
    population standard deviation."""
    mean, low, high = mean_interval([0.02, 0.03, 0.01])
    assert mean == pytest.approx(0.02)
    assert (low, high) == pytest.approx((0.02 - 0.024841, 0.02 + 0.024841), abs=1e-6)
    one = mean_interval([0.5])
    assert one[0] == 0.5 and math.isnan(one[1]) and math.isnan(one[2])  # one value: no interval


def test_report_prints_the_paired_row_per_baseline_and_accuracy():
    text = report_markdown("x", RESULTS, ["A"], ["lacmfer", "source_only"], [0, 1, 2], "source_val_acc")
    assert "| source_only | selected | +2.00 | +2.00 [-0.48, +4.48] | 3 |" in text
    assert "| source_only | last step | +2.00 | +2.00 [-0.48, +4.48] | 3 |" in text
    # Without a baseline there is nothing to pair and no section.
    alone = report_markdown("x", [r for r in RESULTS if r.method == "lacmfer"], ["A"], ["lacmfer"], [0], "source_val_acc")
    assert "paired by target and seed" not in alone


def test_runs_are_counted_by_status_and_only_completed_ones_averaged():
    """Catches a diverged or failed run counted (or averaged) as completed in report.parquet and report.md."""
    from lacmfer.config import config_from_dict
    from lacmfer.run.final_run import FinalRun

    failed = failed_result(FinalRun("A", "source_only", 5, config_from_dict({}), Path("unused")), "RuntimeError: boom")
    results = [*RESULTS, failed]
    methods = ["lacmfer", "source_only"]
    rows = {r["method"]: r for r in report_table(results, ["A"], methods, [0, 1, 2], "source_val_acc").to_pylist()
            if r["target"] == "A"}
    assert [rows[m][k] for m in methods for k in ("runs", "completed", "diverged", "failed")] == [5, 5, 0, 0,
                                                                                                    5, 3, 1, 1]
    assert rows["source_only"]["acc_selected_mean"] == pytest.approx((0.69 + 0.57 + 0.48) / 3)
    text = report_markdown("x", results, ["A"], methods, [0, 1, 2], "source_val_acc")
    assert ("Not averaged (n = completed runs where fewer than planned): A/source_only/seed4 diverged, "
            "A/source_only/seed5 failed.") in text
