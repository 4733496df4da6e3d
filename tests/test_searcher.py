import optuna

from lacmfer.config import config_from_dict
from search.spaces import SearchSpace
from search.tuner import StoppedAsPrunedOptunaSearch

State = optuna.trial.TrialState


def report(searcher, trial_id, values, final=False, diverged=False):
    for i, v in enumerate(values, start=1):
        result = {"objective": v, "training_iteration": i, "final_evaluation": float(final and i == len(values)),
                  "diverged": float(diverged and i == len(values))}
        searcher.on_trial_result(trial_id, result)
    return result


def test_only_finished_trials_are_complete(tmp_path):
    cfg = config_from_dict({"search": {"space": {"hyper_align": {"distribution": "uniform", "low": 0.1, "high": 1}}}})
    searcher = StoppedAsPrunedOptunaSearch(space=SearchSpace(cfg.search.space), metric="objective", mode="max",
                                           sampler=optuna.samplers.RandomSampler(seed=0), scope="best")
    for trial_id in ("full", "stopped", "diverged", "error"):
        assert "hyper_align" in searcher.suggest(trial_id)
    searcher.on_trial_complete("full", report(searcher, "full", [0.3, 0.7, 0.5], final=True))
    searcher.on_trial_complete("stopped", report(searcher, "stopped", [0.9]))  # ASHA stopped it after one
    searcher.on_trial_complete("diverged", report(searcher, "diverged", [0.2, float("nan")], final=True, diverged=True))
    searcher.on_trial_complete("error", None, error=True)
    trials = searcher._ot_study.trials
    assert [t.state for t in trials] == [State.COMPLETE, State.PRUNED, State.FAIL, State.FAIL]
    assert trials[0].value == 0.7  # scope "best": the best evaluation of the trial
    assert trials[1].intermediate_values == {1: 0.9}  # kept for TPE, but not a final value
    # Importance and best trial see only the completed one.
    assert searcher._ot_study.best_trial.number == 0


def test_scope_last(tmp_path):
    cfg = config_from_dict({"search": {"space": {"hyper_align": {"distribution": "uniform", "low": 0.1, "high": 1}}}})
    searcher = StoppedAsPrunedOptunaSearch(space=SearchSpace(cfg.search.space), metric="objective", mode="max",
                                           sampler=optuna.samplers.RandomSampler(seed=0), scope="last")
    searcher.suggest("t")
    searcher.on_trial_complete("t", report(searcher, "t", [0.3, 0.7, 0.5], final=True))
    assert searcher._ot_study.trials[0].value == 0.5


def test_each_split_samples_its_own_start_up_points(tmp_path, monkeypatch):
    from search.tuner import build_tuner

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")

    def first_point(target, name):
        cfg = config_from_dict({"search": {"start_from_defaults": False, "seed": 3},
                                "output": {"results_dir": str(tmp_path), "name": name}})
        cfg.experiment_dir.mkdir(parents=True, exist_ok=True)
        searcher = build_tuner(cfg, target, max_concurrent=1)._local_tuner._tune_config.search_alg.searcher
        return searcher.suggest("first")

    # Reproducible per split (a fresh study of the same split proposes the same point)...
    assert first_point("CK", "a") == first_point("CK", "b")
    # ...and different between splits, whose random start-up trials would otherwise coincide.
    assert first_point("CK", "c") != first_point("RAF", "c")
