import optuna
import pytest

from lacmfer.config import config_from_dict, load_config
from lacmfer.errors import UserError
from lacmfer.hparams import HPARAMS, default_space, to_config_values
from search.spaces import SearchSpace, default_point
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


def exact(space):
    """A config searching exactly `space` (not the registry's default space around it)."""
    return config_from_dict({"search": {"space": space, "use_default_space": False}})


def test_samples_respect_bounds_and_conditions():
    cfg = exact(SPACE)
    points = sample(SearchSpace(cfg.search.space), 40)
    assert {p["cluster_ramp"] for p in points} == {"sigmoid", "linear"}
    for p in points:
        assert 0.1 <= p["hyper_align"] <= 1.6 and 0.5 <= p["threshold"] <= 0.8
        assert ("cluster_gamma" in p) == (p["cluster_ramp"] == "sigmoid")
        assert p["label_smoothing"] == 0.05
        # every sample makes a valid config
        changed = cfg.with_values(to_config_values(p))
        assert (changed.loss.threshold, changed.schedule.cluster_ramp) == (p["threshold"], p["cluster_ramp"])


def test_default_point_is_the_config_clipped_to_the_space():
    cfg = exact(SPACE)
    point = default_point(cfg)
    # The default threshold 0.4 lies below the space: clipped to its low end.
    assert point == {"hyper_align": 0.4, "threshold": 0.5, "cluster_ramp": "sigmoid", "cluster_gamma": 10.0}
    linear = config_from_dict({"schedule": {"cluster_ramp": "linear"},
                               "search": {"space": SPACE, "use_default_space": False}})
    assert "cluster_gamma" not in default_point(linear)


def test_shipped_configs_search_the_registry_default_space():
    default = default_space("lacmfer")
    assert {"hyper_align", "hyper_inter", "hyper_intra", "hyper_tgt", "threshold", "ps_threshold",
            "cluster_start", "cluster_ramp", "cluster_gamma", "align_warmup", "hardness"} == set(default)
    # The weak-alignment region is reachable: down to 1/40 of the paper's 0.4.
    assert default["hyper_align"]["low"] <= 0.01
    assert default["align_warmup"]["choices"] == ["none", "mfsan"]
    assert default["hardness"]["choices"] == ["july2024", "june2024"]
    for name in ("default.yaml", "synthfer_scratch.yaml", "cmfer_six.yaml"):
        space = load_config(REPO / "configs" / name).search.space
        assert list(space) == list(default)  # the order TPE samples in
        assert {n: s.model_dump(exclude_none=True) for n, s in space.items()} == default
    assert default["cluster_gamma"]["only_if"] == {"cluster_ramp": "sigmoid"}


def test_a_method_with_parameters_of_its_own_searches_only_them_by_default():
    """DANN and MFSAN search their own weights; LA-CMFER's ablations, source-only and plugins
    without entries of their own search LA-CMFER's space. Planted bug caught: `default_space`
    ignoring `methods` (DANN would search LA-CMFER's eleven parameters, which it never reads)."""
    assert list(config_from_dict({"loss": {"adaptation": "dann"}}).search.space) == ["hyper_domain"]
    assert list(config_from_dict({"loss": {"adaptation": "mfsan"}}).search.space) == ["hyper_mmd", "hyper_disc"]
    for adaptation in ("lacmfer", "mmd_baseline", "source_only"):
        space = config_from_dict({"loss": {"adaptation": adaptation}}).search.space
        assert list(space) == list(default_space("lacmfer"))
    assert not {"hyper_domain", "hyper_mmd", "hyper_disc"} & set(default_space("lacmfer"))


def test_config_space_overrides_narrows_adds_and_drops_registry_entries():
    space = config_from_dict({"search": {"space": {
        "hyper_align": {"high": 0.8},  # narrowed: distribution and low from the registry
        "threshold": {"distribution": "constant", "value": 0.5},  # replaced
        "lr": {},  # searchable, not searched by default: added with its registry range
        "hyper_tgt": None,  # dropped: stays at the config value
    }}}).search.space
    assert (space["hyper_align"].distribution, space["hyper_align"].low, space["hyper_align"].high) == (
        "loguniform", HPARAMS["hyper_align"].distribution["low"], 0.8)
    assert space["threshold"].distribution == "constant" and space["threshold"].low is None
    assert space["lr"].model_dump(exclude_none=True) == HPARAMS["lr"].distribution
    assert "hyper_tgt" not in space and "hyper_intra" in space


def test_resolved_space_reads_the_same_when_saved_and_loaded_again():
    cfg = config_from_dict({"search": {"space": {"hyper_tgt": None, "lr": {"high": 0.05}}}})
    again = config_from_dict(cfg.to_dict())
    assert again.search.space == cfg.search.space and "hyper_tgt" not in again.search.space


def test_circular_conditions_are_a_user_error():
    space = {
        "cluster_ramp": {"distribution": "choice", "choices": ["sigmoid", "linear"], "only_if": {"lr": 0.1}},
        "lr": {"distribution": "choice", "choices": [0.1, 0.01], "only_if": {"cluster_ramp": "linear"}},
    }
    cfg = exact(space)
    with pytest.raises(UserError, match="circular only_if"):
        SearchSpace(cfg.search.space)
