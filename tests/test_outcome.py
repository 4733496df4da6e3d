"""How a run ended (`lacmfer.run.outcome`): the one status decision, the typed evaluation as a
Tune report and back, the bad input of every run, and a final run's result as metrics.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lacmfer.errors import UserError
from lacmfer.names import RUN_STATUSES, RunStatus
from lacmfer.run.outcome import (
    STATUS_KEY,
    USER_ERROR_LINE_PREFIX,
    Evaluation,
    RunResult,
    raise_bad_input_of_every_run,
    run_status,
)

METRICS = {"step": 4.0, "objective": 0.5, "target_acc": 0.4}


@pytest.mark.parametrize("last, raised, status", [
    (None, True, RunStatus.FAILED),
    (Evaluation(METRICS, final=True), True, RunStatus.FAILED),  # a run that raised failed, however far it got
    (Evaluation(METRICS, final=True, diverged=True), False, RunStatus.DIVERGED),  # diverged at its last step
    (Evaluation(METRICS, diverged=True), False, RunStatus.DIVERGED),
    (Evaluation(METRICS, final=True), False, RunStatus.COMPLETED),
    (Evaluation(METRICS), False, RunStatus.STOPPED_EARLY),  # ASHA, or an interrupted search
    (None, False, RunStatus.STOPPED_EARLY),  # never reported
], ids=["raised before reporting", "raised after its last", "diverged at the end", "diverged", "completed",
        "stopped", "never reported"])
def test_the_status_decision(last, raised, status):
    """Catches any one-line slip of `run_status`: the raise ignored, divergence checked after the
    schedule's end (a diverged last evaluation counted completed), or the final flag ignored."""
    assert run_status(last, raised=raised) is status


def test_statuses_keep_the_strings_written_in_the_results_files():
    assert [str(s) for s in RUN_STATUSES] == ["completed", "stopped early", "failed", "diverged"]
    assert f"{RunStatus.STOPPED_EARLY}" == "stopped early" and json.dumps([RunStatus.FAILED]) == '["failed"]'
    assert {s: 0 for s in RUN_STATUSES} == {"completed": 0, "stopped early": 0, "failed": 0, "diverged": 0}


@pytest.mark.parametrize("final, diverged, status", [
    (False, False, "stopped early"), (True, False, "completed"), (False, True, "diverged"), (True, True, "diverged"),
])
def test_a_report_carries_the_status_as_a_string_and_reads_back_to_the_same_status(final, diverged, status):
    """The trial writes `to_report`, the searcher and the analysis read `from_report`: the status
    must survive the trip, as a string (no 0/1 flag), with Tune's own entries dropped."""
    evaluation = Evaluation(dict(METRICS), final=final, diverged=diverged)
    report = evaluation.to_report()
    assert report == {**METRICS, STATUS_KEY: status}
    tune_line = json.loads(json.dumps({**report, "training_iteration": 2, "trial_id": "t", "config": {"lr": 1.0},
                                       "done": False}))
    back = Evaluation.from_report(tune_line)
    assert back.metrics == {**METRICS, "training_iteration": 2.0}
    assert run_status(back) is run_status(evaluation) is RunStatus(status)


def test_a_report_of_an_older_search_reads_its_flags_and_an_unknown_status_is_refused():
    """result.json written before reports carried the status held 0/1 flags; `--export-only`
    and `--resume` of such a search must count its trials as before."""
    older = [{"objective": 0.1, "final_evaluation": 1.0, "diverged": 0.0},
             {"objective": math.nan, "final_evaluation": 0.0, "diverged": 1.0},
             {"objective": 0.1, "final_evaluation": 0.0, "diverged": 0.0}]
    assert [run_status(Evaluation.from_report(r)) for r in older] == ["completed", "diverged", "stopped early"]
    with pytest.raises(ValueError):
        Evaluation.from_report({"objective": 0.1, STATUS_KEY: "finished"})


def test_a_run_result_takes_a_status_string_and_refuses_an_unknown_one():
    assert RunResult(status="diverged").status is RunStatus.DIVERGED
    with pytest.raises(ValueError, match="status 'finished' is not one of completed, stopped early"):
        RunResult(status="finished")


def test_best_is_the_earliest_highest_finite_value():
    result = RunResult(status="completed", history=[{"objective": 0.2}, {"objective": 0.7}, {"objective": math.nan},
                                                    {"objective": 0.7}, {"objective": 0.4}])
    assert result.best("objective") is result.history[1] and result.best("objective", "min") is result.history[0]
    assert result.last is result.history[-1] and result.evaluations == 5
    assert RunResult(status="diverged", history=[{"objective": math.nan}]).best("objective") is None


def _bad(message: str, tune_line: bool = False) -> RunResult:
    error = USER_ERROR_LINE_PREFIX + message if tune_line else message
    return RunResult(status="failed", error=error, user_error=True)


def test_bad_input_in_every_run_is_one_user_error_for_trials_and_final_runs_alike():
    """Catches: a run that failed otherwise (or completed) still ending the command as bad input;
    Tune's type prefix left in the message; the other messages not counted."""
    raise_bad_input_of_every_run([], where="x")  # no run: nothing to say
    raise_bad_input_of_every_run([_bad("a"), RunResult(status="failed", error="RuntimeError: oom")], where="x")
    raise_bad_input_of_every_run([_bad("a"), RunResult(status="completed")], where="x")
    with pytest.raises(UserError) as same:
        raise_bad_input_of_every_run([_bad("CK.txt:3: bad label", tune_line=True), _bad("CK.txt:3: bad label")], "x")
    assert str(same.value) == "CK.txt:3: bad label"
    with pytest.raises(UserError) as different:
        raise_bad_input_of_every_run([_bad("a"), _bad("b"), _bad("a"), _bad("c")], where="in the lines above")
    assert str(different.value) == "a (and 2 other error(s), in the lines above)"


# ---------------------------------------------------------------- a final run's result


def _metrics_json(status: str, history: list[dict], selected: dict | None, weights: dict) -> dict:
    """metrics.json as final training wrote it before its result was typed, key for key."""
    return {"target": "CK", "method": "lacmfer", "seed": 1, "status": status, "objective": "source_val_acc",
            "oracle": False, "steps": 20, "time_s": 3.5, "resumed_at": [10], "weights": weights,
            "selected": selected, "last": history[-1] if history else None, "history": history}


def test_metrics_json_of_earlier_runs_reads_and_writes_back_unchanged():
    """A results folder written before stays readable, and a run writes the same file as before.

    Catches: a key renamed, dropped or reordered; the last weights claimed for a diverged run;
    the selected evaluation not the earliest best finite one."""
    from lacmfer.run.final_run import FinalResult

    history = [{"step": 10.0, "objective": 0.6, "target_acc": 0.5}, {"step": 20.0, "objective": 0.7, "target_acc": 0.4},
               {"step": 30.0, "objective": 0.7, "target_acc": 0.3}]
    completed = _metrics_json("completed", history, history[1],
                              {"selected": "checkpoint_selected.pt", "last": "checkpoint.pt"})
    nan_history = [*history[:1], {"step": 20.0, "objective": math.nan, "target_acc": 0.1}]
    diverged = _metrics_json("diverged", nan_history, nan_history[0],
                             {"selected": "checkpoint_selected.pt", "last": None})
    at_once = _metrics_json("diverged", nan_history[1:], None, {"selected": None, "last": None})
    for written in (completed, diverged, at_once):
        text = json.dumps(written, indent=1, allow_nan=True)
        result = FinalResult.from_dict(json.loads(text))
        assert json.dumps(result.to_dict(), indent=1, allow_nan=True) == text
    assert FinalResult.from_dict(completed).status is RunStatus.COMPLETED


def test_a_failed_final_run_and_its_progress_line():
    from lacmfer.config import config_from_dict
    from lacmfer.run.final_run import FinalResult, FinalRun, failed_result, result_line

    run = FinalRun("CK", "lacmfer", 2, config_from_dict({}), Path("unused"))
    failed = failed_result(run, "CK.txt:3: bad label", user_error=True)
    assert (failed.status, failed.bad_input, failed.history, failed.selected) == ("failed", "CK.txt:3: bad label", [],
                                                                                  None)
    assert result_line(failed) == "CK/lacmfer/seed2: FAILED (CK.txt:3: bad label)"
    history = [{"step": 10.0, "objective": 0.6, "target_acc": 0.5}, {"step": 20.0, "objective": 0.5, "target_acc": 0.4}]
    done = FinalResult(target="CK", method="lacmfer", seed=2, objective="im", status="completed", history=history,
                       time_s=1.5)
    assert result_line(done) == ("CK/lacmfer/seed2: completed, target_acc 0.5000 at the selected step 10 (im 0.6000), "
                                 "0.4000 at the last step, 1.5 s")
