"""The sampler and the scheduler by name (search/algorithms.py): each name builds what it says."""

from __future__ import annotations

import optuna
import pytest
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from lacmfer.config import SearchConfig
from lacmfer.names import SAMPLERS
from search.algorithms import hyperband_brackets, make_sampler, make_scheduler
from search.spaces import SearchSpace

SPACE = {"hyper_align": {"distribution": "loguniform", "low": 0.01, "high": 1.0},
         "threshold": {"distribution": "uniform", "low": 0.0, "high": 0.8}}


def proposals(search: SearchConfig, seed: int, count: int) -> list[dict]:
    """What the sampler proposes for `count` trials asked one after another (each told 0)."""
    study = optuna.create_study(sampler=make_sampler(search, seed), direction="maximize")
    out = []
    for k in range(count):
        trial = study.ask()
        SearchSpace(search.space)(trial)
        out.append(trial.params)
        study.tell(trial, float(k))
    return out


@pytest.mark.parametrize("name,cls", [("tpe", optuna.samplers.TPESampler), ("random", optuna.samplers.RandomSampler),
                                      ("qmc", optuna.samplers.QMCSampler), ("gp", optuna.samplers.GPSampler)])
def test_each_sampler_name_builds_its_optuna_sampler_seeded(name, cls):
    """Catches: a name mapped to another sampler, or the seed not passed (searches not reproducible)."""
    search = SearchConfig(sampler=name, startup_trials=2, space=SPACE, use_default_space=False)
    assert type(make_sampler(search, 0)) is cls
    assert proposals(search, 7, 4) == proposals(search, 7, 4)
    assert proposals(search, 7, 4) != proposals(search, 8, 4)


def test_every_sampler_name_is_built():
    for name in SAMPLERS:
        make_sampler(SearchConfig(sampler=name), 0)


def test_qmc_covers_each_axis_evenly():
    """Eight scrambled Sobol points put one value in each eighth of every axis (random draws seldom do).

    Catches: `qmc` built as random sampling, or Sobol without the unit-cube mapping Optuna applies.
    """
    search = SearchConfig(sampler="qmc", space={"threshold": SPACE["threshold"]}, use_default_space=False)
    values = [p["threshold"] for p in proposals(search, 3, 9)[1:]]  # Optuna draws the first at random
    assert sorted(int(v / 0.1) for v in values) == list(range(8))


@pytest.mark.parametrize("grace,max_t,rf,brackets", [(1, 4, 2, 3), (2, 5, 2, 2), (4, 4, 2, 1), (1, 9, 3, 3), (1, 8, 3, 2)])
def test_hyperband_has_a_bracket_per_first_rung_within_max_t(grace, max_t, rf, brackets):
    assert hyperband_brackets(grace, max_t, rf) == brackets


def decisions(scheduler: TrialScheduler, results: list[tuple[str, int, float]]) -> list[str]:
    """The scheduler's decision on each (trial, evaluation, objective), as Tune would ask it."""

    class Trial:
        def __init__(self, trial_id: str):
            self.trial_id = trial_id

    scheduler.set_search_properties("objective", "max")
    trials: dict[str, Trial] = {}
    out = []
    for trial_id, iteration, value in results:
        if trial_id not in trials:
            trials[trial_id] = Trial(trial_id)
            scheduler.on_trial_add(None, trials[trial_id])
        out.append(scheduler.on_trial_result(None, trials[trial_id], {"training_iteration": iteration,
                                                                     "objective": value}))
    return out


def test_each_scheduler_name_builds_its_tune_scheduler():
    """Catches: `fifo` stopping trials, `asha` not stopping the worse half at a rung, `hyperband` with one bracket."""
    rungs = {"grace_period": 1, "reduction_factor": 2}
    results = [("a", 1, 0.9), ("b", 1, 0.1)]
    fifo = make_scheduler(SearchConfig(scheduler="fifo", asha=rungs), 4)
    assert isinstance(fifo, FIFOScheduler) and decisions(fifo, results) == ["CONTINUE", "CONTINUE"]
    asha = make_scheduler(SearchConfig(scheduler="asha", asha=rungs), 4)
    assert isinstance(asha, AsyncHyperBandScheduler) and decisions(asha, results) == ["CONTINUE", "STOP"]
    hyperband = make_scheduler(SearchConfig(scheduler="hyperband", asha=rungs), 4)
    # Ray keeps the brackets privately; their first rungs are grace × rf^k.
    assert [b._rungs[-1][0] for b in hyperband._brackets] == [1, 2, 4]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_the_tuner_searches_with_the_configured_algorithms(sampler, tmp_path, monkeypatch):
    """Catches: `build_tuner` building TPE or ASHA whatever `search.sampler`/`search.scheduler` say."""
    from lacmfer.config import config_from_dict
    from search.storage import ExperimentLocations
    from search.tuner import build_tuner

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
                "qmc": optuna.samplers.QMCSampler, "gp": optuna.samplers.GPSampler}
    for scheduler, cls, brackets in (("asha", AsyncHyperBandScheduler, 1), ("fifo", FIFOScheduler, None),
                                     ("hyperband", AsyncHyperBandScheduler, 3)):
        cfg = config_from_dict({"schedule": {"steps": 400}, "eval": {"interval": 100},
                                "search": {"sampler": sampler, "scheduler": scheduler,
                                           "asha": {"grace_period": 1, "reduction_factor": 2}},
                                "output": {"results_dir": str(tmp_path), "name": scheduler}})
        cfg.experiment_dir.mkdir(parents=True)
        tune_config = build_tuner(cfg, ExperimentLocations.of(cfg), "CK", max_concurrent=1)._local_tuner._tune_config
        assert type(tune_config.search_alg.searcher.study.sampler) is samplers[sampler]
        assert type(tune_config.scheduler) is cls
        if brackets:
            assert len(tune_config.scheduler._brackets) == brackets
