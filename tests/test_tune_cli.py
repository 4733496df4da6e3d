"""`tune.py`'s own decisions, without Ray: its exit status after a search, and what `--resume` may change.

The search itself is replaced by a stand-in that returns each split's outcome, so these
tests take seconds; tests/test_search.py runs the real one.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import tune
from lacmfer.config import save_config
from search.analysis import TrialRecord
from search.driver import SplitOutcome
from tests.conftest import tiny_config


@pytest.fixture
def saved_experiment(synth_tiny, tmp_path) -> tuple[Path, Path]:
    """(config file, results folder) of an experiment `exp` on CK and JAFFE, 4 trials per split."""
    results = tmp_path / "results"
    cfg = tiny_config(synth_tiny, data={"targets": ["CK", "JAFFE"]}, search={"num_samples": 4},
                      output={"results_dir": str(results), "name": "exp"})
    path = tmp_path / "exp.yaml"
    save_config(cfg, path)
    save_config(cfg, cfg.experiment_dir / "config.yaml")  # as the driver saves it
    return path, results


def _search_ends_with(monkeypatch, outcomes: list[SplitOutcome]) -> dict:
    """The search returns `outcomes`; the export records what it was given and exports every split."""
    seen: dict = {}
    monkeypatch.setattr("search.driver.run_search", lambda cfg, address=None, resume=False, final=None: outcomes)

    def export(cfg, finished=None):
        seen["finished"] = finished
        splits = [SimpleNamespace(target=o.target, best=object(), counts={}) for o in outcomes]
        return SimpleNamespace(splits=splits, summary=Path("summary.md"))

    monkeypatch.setattr(tune, "export", export)
    return seen


@pytest.mark.parametrize("outcomes", [
    [SplitOutcome("CK", True, 4, 4, 0), SplitOutcome("JAFFE", False, 2, 1, 0)],  # interrupted
    [SplitOutcome("CK", True, 4, 4, 0)],  # JAFFE never started
], ids=["interrupted", "not started"])
def test_a_split_that_did_not_complete_exits_1_and_says_how_to_resume(saved_experiment, monkeypatch, capsys, outcomes):
    """Mutations caught (tune.py, `main`): `unfinished` or `not_started` left out of the exit-1
    condition; the finished splits given to the export computed from every outcome (the
    export would then prune the checkpoints an interrupted split resumes from)."""
    path, results = saved_experiment
    seen = _search_ends_with(monkeypatch, outcomes)
    assert tune.main(["--config", str(path), "--results", str(results)]) == 1
    assert seen["finished"] == ["CK"]
    err = capsys.readouterr().err
    assert ("NOT FINISHED: split(s) JAFFE did not complete. "
            f"Continue with: python tune.py --resume --name exp --results {results}") in err


def test_every_split_completed_exits_0(saved_experiment, monkeypatch, capsys):
    path, results = saved_experiment
    _search_ends_with(monkeypatch, [SplitOutcome("CK", True, 4, 4, 0), SplitOutcome("JAFFE", True, 4, 4, 0)])
    assert tune.main(["--config", str(path), "--results", str(results)]) == 0
    assert "NOT FINISHED" not in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--set", "loss.hyper_align=0.3"], ("--set/--cpus-per-trial/--gpus-per-trial: an existing experiment keeps "
                                        "its saved config; start another with --name NEW to change it")),
    (["--gpus-per-trial", "0.5"], "--set/--cpus-per-trial/--gpus-per-trial: an existing experiment keeps"),
    (["--num-samples", "3"], "already runs 4 trials per split; a resumed search can add trials, not remove them"),
    (["--name", "other"], "no experiment here (check --name and --results)"),
], ids=["--set", "--gpus-per-trial", "fewer trials", "no such experiment"])
def test_resume_refuses_what_would_change_a_saved_experiment(saved_experiment, monkeypatch, capsys, argv, message):
    """Mutations caught (tune.py, `saved_config`): each `raise UserError` of a resume guard
    deleted (the search would then start; here it fails the test)."""
    _, results = saved_experiment
    monkeypatch.setattr("search.driver.run_search", lambda *a, **k: pytest.fail("the search started"))
    with pytest.raises(SystemExit) as exit_info:
        tune.main(["--resume", "--name", "exp", "--results", str(results), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_resume_widens_the_splits_and_the_trials_and_nothing_else(saved_experiment):
    """Mutations caught (tune.py, `saved_config`): the widened targets as `args.targets` alone
    (dropping the splits already searched); `--num-samples` not carried into the config."""
    _path, results = saved_experiment
    args = tune.parse_args(["--resume", "--name", "exp", "--results", str(results), "--targets", "RAF", "CK",
                            "--num-samples", "6"])
    cfg = tune.saved_config(args)
    assert cfg.data.targets == ["CK", "JAFFE", "RAF"] and cfg.search.num_samples == 6
    saved = tune.saved_config(tune.parse_args(["--resume", "--name", "exp", "--results", str(results)]))
    assert cfg.with_values({"data.targets": saved.data.targets, "search.num_samples": 4}) == saved


def _failed(trial_id: str, error: str) -> TrialRecord:
    return TrialRecord(trial_id, "CK", {"threshold": 1.4}, "failed", [], error=error)


BAD_TRIAL_VALUE = ("lacmfer.errors.UserError: trial values {'threshold': 1.4}: loss.threshold: Input should be "
                   "less than or equal to 1 (got 1.4)")  # the last line of such a trial's error.txt, seen on Ray 2.60


@pytest.mark.parametrize("errors, code", [
    ([BAD_TRIAL_VALUE, BAD_TRIAL_VALUE], 2),
    ([BAD_TRIAL_VALUE, BAD_TRIAL_VALUE.replace("1.4", "1.6")], 2),
    ([BAD_TRIAL_VALUE, "RuntimeError: out of memory on cpu"], 1),  # not only bad input: the usual NO RESULT
], ids=["every trial alike", "every trial", "one trial otherwise"])
def test_bad_input_found_in_every_trial_is_one_line_and_exit_2(saved_experiment, monkeypatch, capsys, errors, code):
    """Bad input that only a trial could find (here a sampled value the schema refuses), raised
    by every trial in its Ray worker, ends the search as bad input found before Ray does."""
    path, results = saved_experiment
    _search_ends_with(monkeypatch, [SplitOutcome("CK", True, 2, 0, 2)])
    monkeypatch.setattr(tune, "export", lambda cfg, finished=None: SimpleNamespace(
        splits=[SimpleNamespace(target="CK", best=None, counts={"failed": 2})], summary=Path("summary.md")))
    monkeypatch.setattr("search.analysis.read_split",
                        lambda exp, target: [_failed(f"t{i}", e) for i, e in enumerate(errors)])
    if code == 1:
        assert tune.main(["--config", str(path), "--results", str(results), "--targets", "CK"]) == 1
        assert "NO RESULT: split CK" in capsys.readouterr().err
        return
    with pytest.raises(SystemExit) as exit_info:
        tune.main(["--config", str(path), "--results", str(results), "--targets", "CK"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    others = "" if errors[0] == errors[1] else f" (and 1 other error(s), in the trials' error.txt under {results / 'exp'})"
    assert err == ("error: trial values {'threshold': 1.4}: loss.threshold: Input should be less than or equal to 1 "
                   f"(got 1.4){others}\n")


def test_a_split_whose_driver_stopped_says_why_once_and_exits_1(saved_experiment, monkeypatch, capsys):
    """Mutation caught (tune.py, `main`): the `SPLIT STOPPED` loop deleted, or printed per
    split instead of per stopped split (CK finished and must not be named)."""
    path, results = saved_experiment
    stopped = SplitOutcome("JAFFE", False, 0, 0, 0, error="its driver process ended with exit code 3")
    _search_ends_with(monkeypatch, [SplitOutcome("CK", True, 4, 4, 0), stopped])
    assert tune.main(["--config", str(path), "--results", str(results)]) == 1
    err = capsys.readouterr().err
    assert err.count("SPLIT STOPPED:") == 1
    assert "SPLIT STOPPED: JAFFE: its driver process ended with exit code 3" in err


def test_final_flags_set_the_protocol_and_a_resume_widens_it(saved_experiment):
    """Mutations caught (tune.py): `--final-seeds` left out of `cli_overrides`; a resume's
    `--final-seeds` replacing the saved seeds instead of adding to them."""
    path, results = saved_experiment
    cfg = tune.load_config(path, tune.cli_overrides(tune.parse_args(
        ["--config", str(path), "--final-seeds", "0", "1", "--baseline", "source_only", "dann"])))
    assert (cfg.final.seeds, cfg.final.baselines) == ([0, 1], ["source_only", "dann"])
    widened = tune.saved_config(tune.parse_args(["--resume", "--name", "exp", "--results", str(results),
                                                 "--final-seeds", "2", "0", "--baseline", "mfsan"]))
    assert (widened.final.seeds, widened.final.baselines) == ([2, 0], ["mfsan"])


@pytest.mark.parametrize("argv, message", [
    (["--final-seeds", "0", "--baseline", "lacmfer"], "final.baselines lacmfer: that is the configs' own method"),
    (["--final-seeds", "0", "--results", "s3://results/searches"],
     "final.seeds: final training in the search's command writes its runs into a folder; "
     "s3://results/searches/fresh is object storage"),
], ids=["own method", "object storage"])
def test_a_final_phase_that_cannot_run_stops_before_the_search(saved_experiment, s3, monkeypatch, capsys, argv,
                                                               message):
    """Checked before the data preparation and the search: one line, exit 2. Mutation caught:
    `final_phase` called after `run_search` (the search would start)."""
    path, _ = saved_experiment
    monkeypatch.setattr("search.driver.run_search", lambda *a, **k: pytest.fail("the search started"))
    monkeypatch.setattr("lacmfer.data.loaders.cache_every_list", lambda *a, **k: pytest.fail("data prepared"))
    with pytest.raises(SystemExit) as exit_info:
        tune.main(["--config", str(path), "--name", "fresh", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
