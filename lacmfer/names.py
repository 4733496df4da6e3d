"""The names every part of the project agrees on, in one place (no torch here).

The config schema, the search, the exports, TensorBoard and the command lines draw
their lists from this module, so a name is spelled once. The lists that users extend
(adaptation methods, target validators) are registries: `register_method` and
`register_validator` (in `lacmfer.method.methods` and `lacmfer.method.validators`) add to them at run
time, and config validation reads them when it runs, not when it is imported.
Domains are named here and described in the dataset table `lacmfer.data.domains.DOMAINS`
(whose `register_domain` adds to `DOMAIN_NAMES`); a config defaults to the built-in ones,
so a registered domain is used only where it is named. This module imports nothing of
the project: the method, the data and the config all stand on it.
"""

from __future__ import annotations

from enum import Enum

#: Shapes of the clustering schedule r(t) (docs/METHOD.md §5).
CLUSTER_RAMPS: tuple[str, ...] = ("sigmoid", "linear", "step")

#: The authors' two released versions of the hardness weights (docs/METHOD.md §3.3):
#: July 2024 detaches them and tests membership, June 2024 neither.
HARDNESS_RELEASES: tuple[str, ...] = ("july2024", "june2024")

#: Warm-ups of the alignment weight hyper_align (docs/METHOD.md §3.8): none, or MFSAN's ramp.
ALIGN_WARMUPS: tuple[str, ...] = ("none", "mfsan")

#: Optuna samplers by `search.sampler` name (`search.algorithms`): TPE (the default), random
#: search, a scrambled Sobol sequence (quasi-Monte Carlo) and Gaussian-process BO.
SAMPLERS: tuple[str, ...] = ("tpe", "random", "qmc", "gp")
#: Ray Tune schedulers by `search.scheduler` name (`search.algorithms`): ASHA (the default),
#: FIFO (every trial runs its whole schedule) and asynchronous Hyperband (ASHA's brackets).
SCHEDULERS: tuple[str, ...] = ("asha", "fifo", "hyperband")

#: The six built-in domains (SynthFER draws these): the default `data.domains` and `data.targets`.
BUILTIN_DOMAIN_NAMES: tuple[str, ...] = ("CK", "JAFFE", "Oulu", "RAF", "FER2013", "Aff")
#: Every known domain, the built-in ones first; `lacmfer.data.domains.register_domain` adds to it.
DOMAIN_NAMES: list[str] = list(BUILTIN_DOMAIN_NAMES)

#: Adaptation methods, by `loss.adaptation` name; `lacmfer.method.methods.METHODS` holds their classes.
METHOD_NAMES: list[str] = ["lacmfer", "source_only", "mmd_baseline", "dann", "mfsan"]

#: Label-free validators computed on the target stream's predictions (docs/METHOD.md §6);
#: `lacmfer.method.validators.TARGET_VALIDATORS` holds their functions. Each is also an objective
#: and a metric key of the same name.
TARGET_VALIDATOR_NAMES: list[str] = ["entropy", "im", "bnm", "snd"]
#: Label-free validators that need more of an evaluation than the target predictions
#: (features, the source hold-out, forward passes on mixed target images; docs/METHOD.md §6):
#: `lacmfer.method.validators.evaluation_validators` computes them. Each is also an objective.
#: `dev`, `im_st` and `entropy_st` read the source hold-out, so they are NaN without one.
EVALUATION_VALIDATOR_NAMES: tuple[str, ...] = ("dev", "mixval", "class_ami", "im_st", "entropy_st", "ensemble")
#: The members of the `ensemble` validator (and of the export's rank-average rule), each a
#: score with a fixed scale whose ideal is 1 (IM over its maximum log C).
ENSEMBLE_MEMBERS: tuple[str, ...] = ("source_val_acc", "im", "mixval", "class_ami")
#: The objectives measured on the source hold-out, which `data.source_val_fraction: 0` removes.
SOURCE_READING_OBJECTIVES: tuple[str, ...] = ("source_val_acc", "dev", "im_st", "entropy_st")

#: Accuracy on the held-out part of each source: needs source labels only.
SOURCE_VALIDATOR = "source_val_acc"
#: Target test accuracy: needs target labels, so selecting on it is oracle selection.
ORACLE_METRIC = "target_acc"
#: The objective that selects on `ORACLE_METRIC`: allowed, marked ORACLE in every export.
ORACLE_OBJECTIVE = "oracle_target_acc"
#: The metric key that holds the configured objective's value in every report.
OBJECTIVE_KEY = "objective"

class RunStatus(str, Enum):
    """How a run ended, a search trial and a final-training run alike; `lacmfer.run.outcome.run_status`
    decides it. A str, so a value compares, hashes and prints as the string written in
    trials.parquet, summary.md, metrics.json and report.parquet."""

    COMPLETED = "completed"  # it ran its schedule
    STOPPED_EARLY = "stopped early"  # stopped before the end (by ASHA, or an interrupted search; a trial only)
    FAILED = "failed"  # it raised on every attempt
    DIVERGED = "diverged"  # its loss or predictions turned NaN or inf (`lacmfer.run.lifecycle.diverged`)

    def __str__(self) -> str:  # the value, not "RunStatus.COMPLETED", in f-strings and str()
        return self.value


#: Every status, in the order the summaries count them.
RUN_STATUSES: tuple[RunStatus, ...] = tuple(RunStatus)


def domain_names() -> tuple[str, ...]:
    """Every known domain (dataset), in table order."""
    return tuple(DOMAIN_NAMES)


def non_oracle_objectives() -> tuple[str, ...]:
    """Objectives that never read target labels: the source hold-out and the label-free validators."""
    return (SOURCE_VALIDATOR, *TARGET_VALIDATOR_NAMES, *EVALUATION_VALIDATOR_NAMES)


def objectives() -> tuple[str, ...]:
    """Every `eval.objective` name, the oracle last."""
    return (*non_oracle_objectives(), ORACLE_OBJECTIVE)


def is_oracle(objective: str) -> bool:
    return objective == ORACLE_OBJECTIVE


def objective_metric(objective: str) -> str:
    """The metric key whose value an objective selects on."""
    return ORACLE_METRIC if is_oracle(objective) else objective


def add_name(registry: list[str], name: str) -> None:
    """Append `name` to a registry list once (registering twice is harmless)."""
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"{name!r}: a registered name is letters, digits and underscores")
    if name not in registry:
        registry.append(name)
