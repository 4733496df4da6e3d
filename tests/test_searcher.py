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


def test_each_split_samples_its_own_start_up_points():
    from search.tuner import split_seed

    seeds = {split_seed(0, t) for t in ("CK", "JAFFE", "Oulu", "RAF", "FER2013", "Aff")}
    assert len(seeds) == 6 and split_seed(0, "CK") == split_seed(0, "CK") != split_seed(1, "CK")
