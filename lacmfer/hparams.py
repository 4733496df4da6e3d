"""The searchable hyperparameters: one entry each, its config key and its default range.

DomainBed's habit: a hyperparameter's search distribution sits next to the key that
holds its default (the default itself is the config schema's, `lacmfer.config`). A
config's `search.space` starts from the entries marked `searched` and only overrides or
narrows them (docs/METHOD.md §5). Keys may be nested to any depth (`data.augment.rotation`).
No torch here: the search imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lacmfer.names import ALIGN_WARMUPS, CLUSTER_RAMPS, HARDNESS_RELEASES


@dataclass(frozen=True)
class HParam:
    """One searchable hyperparameter.

    `key` is the dotted config key it sets; `distribution` is a `search.space` entry
    (`distribution`, `low`/`high` or `choices`, optional `only_if`); `searched` puts it
    in the default space of the methods it serves, otherwise a config adds it with
    `search.space.<name>: {}`. `methods` names the `loss.adaptation` methods whose own
    parameter it is; empty: LA-CMFER's, the default space of every method without one of its own.
    """

    key: str
    distribution: Mapping[str, Any] = field(default_factory=dict)
    searched: bool = True
    methods: tuple[str, ...] = ()


#: Search-space name → entry, in the order the default space is sampled and shown.
HPARAMS: dict[str, HParam] = {}


def register_hparam(name: str, key: str, searched: bool = True, methods: tuple[str, ...] = (),
                    **distribution: Any) -> HParam:
    """Add (or replace) the searchable parameter `name`, which sets config key `key`."""
    if not name.isidentifier():
        raise ValueError(f"{name!r}: a search parameter name is an identifier")
    if "distribution" not in distribution:
        raise ValueError(f"{name}: give its default distribution (loguniform, uniform, int, choice, constant)")
    HPARAMS[name] = HParam(key, dict(distribution), searched, tuple(methods))
    return HPARAMS[name]


def default_space(adaptation: str | None) -> dict[str, dict[str, Any]]:
    """The default `search.space` of the method `adaptation`: the searched entries it owns,
    or, for a method that owns none (LA-CMFER, its ablations, most plugins), LA-CMFER's."""
    own = {name: dict(h.distribution) for name, h in HPARAMS.items() if h.searched and adaptation in h.methods}
    return own or {name: dict(h.distribution) for name, h in HPARAMS.items() if h.searched and not h.methods}


# The loss weights log-uniform from 1/100 of the paper defaults up to ×4, the thresholds and
# the clustering schedule over their meaningful ranges (docs/METHOD.md §5). Every weight
# reaches 1/100 of its default, so each term can be nearly off and source-only's
# neighbourhood is in the space for every term, not only the alignment (at 1/40 of
# hyper_align alone, a search kept the MCC and pseudo-label terms at ≥ 1/4 of theirs);
# threshold reaches 0 because below 1/num_classes every sample is confident, the setting
# that removes the hardness weights' concentration (docs/RESULTS.md).
register_hparam("hyper_align", "loss.hyper_align", distribution="loguniform", low=0.004, high=1.6)
register_hparam("hyper_inter", "loss.hyper_inter", distribution="loguniform", low=0.0002, high=0.08)
register_hparam("hyper_intra", "loss.hyper_intra", distribution="loguniform", low=0.005, high=2.0)
register_hparam("hyper_tgt", "loss.hyper_tgt", distribution="loguniform", low=0.001, high=0.4)
register_hparam("threshold", "loss.threshold", distribution="uniform", low=0.0, high=0.8)
register_hparam("ps_threshold", "loss.ps_threshold", distribution="uniform", low=0.7, high=0.99)
register_hparam("cluster_start", "schedule.cluster_start", distribution="uniform", low=0.0, high=0.5)
register_hparam("cluster_ramp", "schedule.cluster_ramp", distribution="choice", choices=list(CLUSTER_RAMPS))
register_hparam("cluster_gamma", "schedule.cluster_gamma", distribution="loguniform", low=2.0, high=20.0,
                only_if={"cluster_ramp": "sigmoid"})
# The released code's two open choices (docs/METHOD.md §3.3, §3.8).
register_hparam("align_warmup", "loss.align_warmup", distribution="choice", choices=list(ALIGN_WARMUPS))
register_hparam("hardness", "loss.hardness", distribution="choice", choices=list(HARDNESS_RELEASES))
# The baselines' own (docs/METHOD.md §8): each weight from 1/100 of its paper's 1 to ×4.
register_hparam("hyper_domain", "loss.hyper_domain", methods=("dann",), distribution="loguniform", low=0.01, high=4.0)
register_hparam("hyper_mmd", "loss.hyper_mmd", methods=("mfsan",), distribution="loguniform", low=0.01, high=4.0)
register_hparam("hyper_disc", "loss.hyper_disc", methods=("mfsan",), distribution="loguniform", low=0.01, high=4.0)
# Searchable but not searched by default (docs/METHOD.md §5): a config adds them with `{}`.
register_hparam("lr", "schedule.lr", searched=False, distribution="loguniform", low=0.001, high=0.3)
register_hparam("label_smoothing", "loss.label_smoothing", searched=False, distribution="uniform", low=0.0, high=0.2)


def to_config_values(sample: Mapping[str, Any]) -> dict[str, Any]:
    """Sampled values keyed by search name → values keyed by dotted config key.

    The one mapping from a search sample to config overrides (trial configs, exported
    best configs). Keys that are not search parameters are ignored (Tune adds its own).
    """
    return {HPARAMS[name].key: value for name, value in sample.items() if name in HPARAMS}
