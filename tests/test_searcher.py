import math

import optuna
from optuna.samplers._tpe.sampler import _split_trials  # TPE's own good/bad split, read as TPE reads it

from lacmfer.config import config_from_dict
from lacmfer.run.outcome import Evaluation
from search.spaces import SearchSpace
from search.storage import ExperimentLocations
from search.tuner import DIVERGED_CONSTRAINT, TUNE_TRIAL_ID, OptunaStudySearcher

State = optuna.trial.TrialState


def searcher_for(scope="best", seed=0, **study):
    cfg = config_from_dict({"search": {"space": {"hyper_align": {"distribution": "uniform", "low": 0.1, "high": 1}},
                                       "use_default_space": False}})
    return OptunaStudySearcher(space=SearchSpace(cfg.search.space), metric="objective", mode="max",
                               sampler=optuna.samplers.RandomSampler(seed=seed), scope=scope, **study)


def report(value, iteration, final=False, diverged=False):
    """A trial's report (`Evaluation.to_report`, as the trainable sends it) as Tune hands it on."""
    metrics = {"objective": value, "training_iteration": iteration}
    return Evaluation(metrics, final=final, diverged=diverged).to_report()


def run_like_tune(searcher, trial_id, values, final=False, diverged=False):
    """Feed a trial's evaluations as Tune does when the scheduler stops it at the last one
    (ASHA at a cut or at max_t): every result but the last through `on_trial_result`, the
    last only through `on_trial_complete(result=...)`."""
    searcher.suggest(trial_id)
    results = [report(v, i, final=final and i == len(values), diverged=diverged and i == len(values))
               for i, v in enumerate(values, start=1)]
    for result in results[:-1]:
        searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, results[-1])


def test_every_evaluation_reaches_optuna_including_the_one_tune_withholds():
    """And each trial is told its status: catches a stopped-early trial told COMPLETE with its
    partial score, a diverged one told COMPLETE or without its constraint, an error not FAIL."""
    searcher = searcher_for()
    run_like_tune(searcher, "full", [0.3, 0.5, 0.7], final=True)  # its best is the withheld last one
    run_like_tune(searcher, "stopped", [0.9, 0.4])  # ASHA stopped it at its second evaluation
    run_like_tune(searcher, "diverged", [0.2, float("nan")], diverged=True)
    searcher.suggest("error")
    searcher.on_trial_complete("error", None, error=True)
    full, stopped, diverged, error = searcher.study.trials
    assert (full.state, full.value, full.intermediate_values) == (State.COMPLETE, 0.7, {1: 0.3, 2: 0.5, 3: 0.7})
    # Optuna gives a PRUNED trial its last intermediate value as value, when finite.
    assert (stopped.state, stopped.value, stopped.intermediate_values) == (State.PRUNED, 0.4, {1: 0.9, 2: 0.4})
    assert (diverged.state, diverged.value, diverged.intermediate_values[1]) == (State.PRUNED, None, 0.2)
    assert math.isnan(diverged.intermediate_values[2]) and diverged.constraints == {DIVERGED_CONSTRAINT: 1.0}
    assert error.state == State.FAIL and error.intermediate_values == {}
    assert [t.user_attrs[TUNE_TRIAL_ID] for t in searcher.study.trials] == ["full", "stopped", "diverged", "error"]
    # Importance and best trial see only the completed one.
    assert searcher.study.best_trial.number == 0


def test_scope_last_takes_the_last_evaluation():
    searcher = searcher_for(scope="last")
    run_like_tune(searcher, "t", [0.3, 0.7, 0.5], final=True)
    assert searcher.study.trials[0].value == 0.5


def test_a_result_seen_twice_is_reported_once():
    searcher = searcher_for()
    searcher.suggest("t")
    last = report(0.4, 1, final=True)
    searcher.on_trial_result("t", last)
    searcher.on_trial_complete("t", last)  # Tune hands a finished function trial its last result again
    assert searcher.study.trials[0].intermediate_values == {1: 0.4}


def test_tpe_counts_a_diverged_trial_among_the_worst():
    """TPE splits trials into a good and a bad group; a diverged trial must be in the bad
    one even when it got further than a trial ASHA stopped early (FAIL would leave it out)."""
    searcher = searcher_for()
    run_like_tune(searcher, "good", [0.5, 0.6, 0.8], final=True)
    run_like_tune(searcher, "stopped", [0.1])
    run_like_tune(searcher, "diverged", [0.7, 0.7, float("nan")], diverged=True)
    study = searcher.study
    trials = study.get_trials(states=(State.COMPLETE, State.PRUNED))
    assert len(trials) == 3  # the diverged trial is among the trials TPE reads
    below, above = _split_trials(study, trials, n_below=2)
    assert [t.number for t in below] == [0, 1] and [t.number for t in above] == [2]


def test_each_split_samples_its_own_start_up_points(tmp_path, monkeypatch):
    from search.tuner import build_tuner

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")

    def first_point(target, name):
        cfg = config_from_dict({"search": {"start_from_defaults": False, "seed": 3},
                                "output": {"results_dir": str(tmp_path), "name": name}})
        cfg.experiment_dir.mkdir(parents=True, exist_ok=True)
        searcher = build_tuner(cfg, ExperimentLocations.of(cfg), target, max_concurrent=1)._local_tuner._tune_config.search_alg.searcher
        return searcher.suggest("first")

    # Reproducible per split (a fresh study of the same split proposes the same point)...
    assert first_point("CK", "a") == first_point("CK", "b")
    # ...and different between splits, whose random start-up trials would otherwise coincide.
    assert first_point("CK", "c") != first_point("RAF", "c")


def test_default_concurrency_is_the_clusters_slots_capped_by_max_concurrent_and_trials():
    from search.driver import trials_at_once

    def at_once(slots, num_samples=16, cap=None):
        return trials_at_once(config_from_dict({"search": {"num_samples": num_samples, "max_concurrent": cap}}), slots)

    assert at_once(64) == 16 and at_once(8) == 8  # every split may fill the cluster, not more than its trials
    assert at_once(64, cap=4) == 4 and at_once(3, cap=4) == 3


def test_the_splits_first_wave_of_waiting_trials_fits_the_cluster():
    """Each split keeps ⌊slots ÷ splits⌋ trials waiting, so the first wave of every split fits
    together and no split starts with the remainder. Mutation: rounding up (6 × 6 = 36 > 32:
    the last split placed got 2 slots and kept them, docs/BENCHMARKS.md)."""
    from search.driver import pending_per_split

    assert pending_per_split(6, 32) == 5 and 6 * pending_per_split(6, 32) <= 32
    assert pending_per_split(2, 2) == 1 and pending_per_split(6, 2) == 1  # at least one each: every split starts
    assert pending_per_split(1, 32) == 32


def test_a_trial_retried_after_an_error_is_told_as_a_new_trial():
    searcher = searcher_for()
    searcher.suggest("t")
    searcher.on_trial_result("t", report(0.3, 1))
    searcher.on_trial_complete("t", error=True)  # errored; its last checkpoint is at iteration 1
    # A resumed experiment retries it from that checkpoint, and it finishes.
    searcher.on_trial_result("t", report(0.6, 2))
    searcher.on_trial_complete("t", report(0.5, 3, final=True))
    first, retry = searcher.study.trials
    assert (first.state, first.intermediate_values) == (State.FAIL, {1: 0.3})
    assert (retry.state, retry.value, retry.intermediate_values) == (State.COMPLETE, 0.6, {1: 0.3, 2: 0.6, 3: 0.5})
    assert retry.params == first.params and retry.user_attrs[TUNE_TRIAL_ID] == "t"


def test_a_retry_that_did_not_complete_is_told_its_own_status():
    """Catches `_tell_retry` deciding apart from `on_trial_complete`: a retry stopped early added
    COMPLETE, or a diverged retry without its constraint."""
    searcher = searcher_for()
    for trial_id, last in (("stopped", report(0.4, 2)), ("diverged", report(float("nan"), 2, diverged=True))):
        searcher.suggest(trial_id)
        searcher.on_trial_result(trial_id, report(0.3, 1))
        searcher.on_trial_complete(trial_id, error=True)
        searcher.on_trial_complete(trial_id, last)
    stopped, diverged = (t for t in searcher.study.trials if "retry_of" in t.user_attrs)
    assert (stopped.state, stopped.value, stopped.constraints) == (State.PRUNED, 0.4, {})
    assert (diverged.state, diverged.value, diverged.constraints) == (State.PRUNED, None, {DIVERGED_CONSTRAINT: 1.0})


def test_a_restored_searcher_tells_the_trials_it_resumes(tmp_path):
    """Tune saves the searcher with the experiment and restores it into a fresh one when
    a killed search resumes; the resumed trial must end in the same study, with the
    evaluations of both attempts. Mutation caught: `restore` not updating the searcher's
    state (the trial is unknown to it, its Optuna trial stays RUNNING)."""
    study = {"study_name": "exp/CK", "storage": f"sqlite:///{tmp_path / 'optuna.db'}"}
    searcher = searcher_for(**study)
    point = searcher.suggest("t")
    searcher.on_trial_result("t", report(0.3, 1))
    searcher.save(str(tmp_path / "searcher.pkl"))

    restored = searcher_for(seed=1, **study)  # as Tune builds it before restoring
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("t", report(0.5, 2, final=True))
    (trial,) = optuna.load_study(**study).trials
    assert (trial.state, trial.value, trial.intermediate_values) == (State.COMPLETE, 0.5, {1: 0.3, 2: 0.5})
    assert trial.params == point and trial.user_attrs[TUNE_TRIAL_ID] == "t"


def test_the_search_maximises_the_objective(tmp_path, monkeypatch):
    """Every objective is higher-is-better: Tune (hence ASHA, which takes Tune's mode) and
    the Optuna study the searcher owns must both maximise it.

    Mutation caught (search/tuner.py): `METRIC, MODE = "objective", "min"` (ASHA would stop
    the best trials and TPE seek the worst)."""
    from ray import tune

    from search import tuner

    built = {}
    monkeypatch.setattr(tuner, "trainable_for", lambda cfg, target: None)  # binding it would start Ray
    monkeypatch.setattr(tune, "Tuner", lambda trainable, **kwargs: built.update(kwargs))
    cfg = config_from_dict({"search": {"space": {"hyper_align": {"distribution": "uniform", "low": 0.1, "high": 1}},
                                       "use_default_space": False, "start_from_defaults": False},
                            "output": {"results_dir": str(tmp_path), "name": "mode"}})
    tuner.build_tuner(cfg, ExperimentLocations.of(cfg), "CK", max_concurrent=1)
    tune_config = built["tune_config"]
    assert (tune_config.metric, tune_config.mode) == ("objective", "max")
    searcher = tune_config.search_alg.searcher
    run_like_tune(searcher, "worse", [0.2], final=True)
    run_like_tune(searcher, "better", [0.8], final=True)
    assert searcher.study.best_trial.user_attrs[TUNE_TRIAL_ID] == "better"
