import optuna
import pytest

from lacmfer.config import config_from_dict, load_config
from lacmfer.errors import UserError
from search.spaces import SearchSpace, default_point, to_overrides
from tests.conftest import REPO

SPACE = {
    "hyper_align": {"distribution": "loguniform", "low": 0.1, "high": 1.6},
    "threshold": {"distribution": "uniform", "low": 0.5, "high": 0.8},
    "cluster_ramp": {"distribution": "choice", "choices": ["sigmoid", "linear"]},
    "cluster_gamma": {"distribution": "loguniform", "low": 2.0, "high": 20.0, "only_if": {"cluster_ramp": "sigmoid"}},
    "label_smoothing": {"distribution": "constant", "value": 0.05},
}


def sample(space, n, seed=0):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        constants = space(trial)
        out.append({**trial.params, **constants})
        study.tell(trial, 0.0)
    return out


def test_samples_respect_bounds_and_conditions():
    cfg = config_from_dict({"search": {"space": SPACE}})
    points = sample(SearchSpace(cfg.search.space), 40)
    assert {p["cluster_ramp"] for p in points} == {"sigmoid", "linear"}
    for p in points:
        assert 0.1 <= p["hyper_align"] <= 1.6 and 0.5 <= p["threshold"] <= 0.8
        assert ("cluster_gamma" in p) == (p["cluster_ramp"] == "sigmoid")
        assert p["label_smoothing"] == 0.05
        # every sample makes a valid config
        cfg.with_values(to_overrides(p))


def test_default_point_is_the_config_clipped_to_the_space():
    cfg = config_from_dict({"search": {"space": SPACE}})
    point = default_point(cfg)
    # SPEC default threshold 0.4 lies below the space: clipped to its low end.
    assert point == {"hyper_align": 0.4, "threshold": 0.5, "cluster_ramp": "sigmoid", "cluster_gamma": 10.0}
    linear = config_from_dict({"schedule": {"cluster_ramp": "linear"}, "search": {"space": SPACE}})
    assert "cluster_gamma" not in default_point(linear)


def test_shipped_spaces_cover_spec_section_5():
    for name in ("default.yaml", "cmfer_six.yaml"):
        space = load_config(REPO / "configs" / name).search.space
        assert {"hyper_align", "hyper_inter", "hyper_intra", "hyper_tgt", "threshold", "ps_threshold",
                "cluster_start", "cluster_ramp", "cluster_gamma"} <= set(space)
        assert space["cluster_gamma"].only_if == {"cluster_ramp": "sigmoid"}


def test_circular_conditions_are_a_user_error():
    space = {
        "cluster_ramp": {"distribution": "choice", "choices": ["sigmoid", "linear"], "only_if": {"lr": 0.1}},
        "lr": {"distribution": "choice", "choices": [0.1, 0.01], "only_if": {"cluster_ramp": "linear"}},
    }
    cfg = config_from_dict({"search": {"space": space}})
    with pytest.raises(UserError, match="circular only_if"):
        SearchSpace(cfg.search.space)
