"""Search spaces: the YAML `search.space` turned into an Optuna define-by-run function.

Define-by-run (not a static dict) because the space is conditional: `cluster_gamma`
only exists when `cluster_ramp` is `sigmoid`. Parents are sampled before the parameters
that depend on them, so one Optuna trial never holds a value that does not apply.
"""

from __future__ import annotations

from typing import Any

import optuna

from lacmfer.config import ExperimentConfig, ParamSpec
from lacmfer.errors import UserError
from lacmfer.hparams import HPARAMS


def _ordered(space: dict[str, ParamSpec]) -> list[str]:
    """Unconditional parameters first, then each conditional one after its parents."""
    order: list[str] = []
    pending = dict(space)
    while pending:
        ready = [n for n, s in pending.items() if all(p in order for p in (s.only_if or {}))]
        if not ready:
            raise UserError(f"search.space: circular only_if among {sorted(pending)}")
        for name in ready:
            order.append(name)
            del pending[name]
    return order


class SearchSpace:
    """A picklable define-by-run function (Tune pickles the searcher with its checkpoint)."""

    def __init__(self, space: dict[str, ParamSpec]):
        self.space = dict(space)
        self.order = _ordered(self.space)

    def active(self, name: str, values: dict[str, Any]) -> bool:
        return all(values.get(parent) == want for parent, want in (self.space[name].only_if or {}).items())

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample with `trial`; returns the constants (Optuna records only sampled values)."""
        values: dict[str, Any] = {}
        constants: dict[str, Any] = {}
        for name in self.order:
            if not self.active(name, values):
                continue
            spec = self.space[name]
            if spec.distribution == "loguniform":
                values[name] = trial.suggest_float(name, spec.low, spec.high, log=True)
            elif spec.distribution == "uniform":
                values[name] = trial.suggest_float(name, spec.low, spec.high)
            elif spec.distribution == "int":
                values[name] = trial.suggest_int(name, int(spec.low), int(spec.high))
            elif spec.distribution == "choice":
                values[name] = trial.suggest_categorical(name, spec.choices)
            else:
                values[name] = constants[name] = spec.value
        return constants

    def describe(self) -> list[str]:
        """One line per parameter, for `tune.py --dry-run`."""
        lines = []
        for name in self.order:
            s = self.space[name]
            if s.distribution in ("loguniform", "uniform", "int"):
                what = f"{s.distribution}[{s.low}, {s.high}]"
            elif s.distribution == "choice":
                what = f"choice{s.choices}"
            else:
                what = f"constant {s.value!r}"
            cond = "".join(f"  (only if {p} = {v})" for p, v in (s.only_if or {}).items())
            lines.append(f"{name:<16} {what}{cond}   -> {HPARAMS[name].key}")
        return lines


def default_point(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config's own values as the first point to evaluate, clipped to the space.

    Only sampled (non-constant), active parameters are included, as Optuna's enqueue
    expects; a default outside its range is clipped so the point stays valid.
    """
    space = SearchSpace(cfg.search.space)
    values = cfg.searchable_values()
    point: dict[str, Any] = {}
    for name in space.order:
        spec = space.space[name]
        if spec.distribution == "constant" or not space.active(name, {**values, **point}):
            continue
        value = values[name]
        if spec.distribution == "choice":
            if value not in spec.choices:
                continue
        else:
            value = min(max(value, spec.low), spec.high)
            if spec.distribution == "int":
                value = int(value)
        point[name] = value
    return point
