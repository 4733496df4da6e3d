"""The experiment config: typed pydantic v2 models loaded from YAML.

One schema drives the search (`tune.py`), final training (`python train.py`) and
the exported best configs. Unknown keys are rejected, every value is range-checked, and
`--set dotted.key=value` overrides are applied to the raw YAML and re-validated, so an
override can never bypass a check. Relative paths are resolved against the working
directory at load time: the resolved config written beside the results then runs from
anywhere (Ray changes the working directory of trials).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lacmfer import names
from lacmfer.errors import UserError
from lacmfer.files import write_text_atomic
from lacmfer.hparams import HPARAMS, default_space
from lacmfer.plugins import import_plugins


def _one_of(allowed: Callable[[], Sequence[str]], what: str) -> AfterValidator:
    """A check against a registry read at validation time, so run-time registrations count."""

    def check(value: str) -> str:
        if value not in allowed():
            raise ValueError(f"unknown {what} {value!r} (expected one of {', '.join(allowed())})")
        return value

    return AfterValidator(check)


DomainName = Annotated[str, _one_of(names.domain_names, "domain")]
MethodName = Annotated[str, _one_of(lambda: names.METHOD_NAMES, "adaptation method")]
Objective = Annotated[str, _one_of(names.objectives, "objective")]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Positive = Annotated[float, Field(gt=0.0)]


def is_uri(text: str) -> bool:
    """True for `scheme://...` (object storage such as s3://bucket/x), False for a local path."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) is not None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SynthSpec(_Section):
    """Generate SynthFER into `data.root` on first use (the embedded benchmark)."""

    scale: Literal["tiny", "small", "full"] = "small"
    seed: int = 0


class DomainLists(_Section):
    """Per-domain list-file overrides, relative to `root` (default: `data.root`)."""

    root: Path | None = None
    train: str | None = None
    test: str | None = None
    val: str | None = Field(None, description="explicit labeled target validation list")


class AugmentConfig(_Section):
    """Training augmentation (docs/METHOD.md §4); evaluation only resizes and normalises."""

    hflip: bool = True
    color_jitter: Fraction = 0.2
    grayscale: Fraction = 0.2
    rotation: Annotated[float, Field(ge=0.0, le=180.0)] = 15.0
    translate: Annotated[float, Field(ge=0.0, le=0.5)] = 0.05
    scale_min: Positive = 0.9
    scale_max: Positive = 1.05

    @model_validator(mode="after")
    def _scale_order(self) -> AugmentConfig:
        if self.scale_min > self.scale_max:
            raise ValueError(f"scale_min ({self.scale_min}) must be <= scale_max ({self.scale_max})")
        return self


class DataConfig(_Section):
    root: Path = Path("data/synthfer-small")
    synth: SynthSpec | None = None
    # The built-in domains by default: a registered domain joins only the experiments that name it.
    domains: list[DomainName] = Field(default_factory=lambda: list(names.BUILTIN_DOMAIN_NAMES), min_length=2)
    targets: list[DomainName] = Field(default_factory=lambda: list(names.BUILTIN_DOMAIN_NAMES), min_length=1)
    lists: dict[DomainName, DomainLists] = Field(default_factory=dict)
    image_size: Annotated[int, Field(ge=16, le=1024)] = 224
    cache_size: Annotated[int, Field(ge=16, le=1024)] | None = None
    cache_dir: Path | None = None
    source_val_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    # The hold-out is part of the protocol, not of a run's randomness: fixed across seeds.
    split_seed: int = 0
    source_sampling: Literal["pooled", "balanced_domains"] = "pooled"
    batch_size: Annotated[int, Field(ge=2)] = 128
    eval_batch_size: Annotated[int, Field(ge=1)] = 256
    num_workers: Annotated[int, Field(ge=0)] = 4
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    max_list_errors: Annotated[int, Field(ge=1)] = 20

    @model_validator(mode="after")
    def _targets_are_domains(self) -> DataConfig:
        missing = [t for t in self.targets if t not in self.domains]
        if missing:
            raise ValueError(f"targets {missing} are not in domains {self.domains}")
        if len(set(self.domains)) != len(self.domains):
            raise ValueError(f"domains must not repeat: {self.domains}")
        return self

    @property
    def resolved_cache_size(self) -> int:
        return self.cache_size or self.image_size

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.root / ".cache"


class PretextConfig(_Section):
    """Face-identification pretraining of the trunk on SynthFER people no domain shows (lacmfer/method/pretext.py)."""

    identities: Annotated[int, Field(ge=2)] = 64
    images_per_identity: Annotated[int, Field(ge=1)] = 16
    steps: Annotated[int, Field(ge=1)] = 300
    batch_size: Annotated[int, Field(ge=2)] = 64
    lr: Positive = 0.1
    seed: int = 0


class ModelConfig(_Section):
    width: Annotated[float, Field(gt=0.0, le=4.0)] = 1.0
    global_blocks: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = (6, 3)
    local_blocks: Annotated[int, Field(ge=1)] = 2
    # imagenet: torchvision's ResNet-18 weights (width 1); synthfer_pretext: a trunk trained
    # on first use (lacmfer/method/pretext.py); or a local torchvision-format ResNet-18 state dict.
    pretrained: Literal["imagenet", "synthfer_pretext"] | Path | None = None
    pretext: PretextConfig = Field(default_factory=PretextConfig)
    channels_last: bool = False
    # BatchNorm statistics in training: `per_domain` forwards the source and the target
    # batch separately, as the released code does (docs/METHOD.md §3); `joint` forwards
    # them as one batch (an ablation).
    bn: Literal["per_domain", "joint"] = "per_domain"
    # CBAM as the paper describes it (7×7 spatial kernel, MLP with biases, no skip inside),
    # or the block the released code imports (49×49 kernel, bias-free MLP, x + attention(x)).
    cbam: Literal["paper", "release"] = "paper"
    # Initialisation of the two views: He fan-out like torchvision's ResNet, or PyTorch's
    # layer defaults as in the released code (the trunk keeps He, then any pretrained weights).
    branch_init: Literal["he", "pytorch"] = "he"

    @model_validator(mode="after")
    def _resnet18_width(self) -> ModelConfig:
        # ImageNet weights and a local file are torchvision's ResNet-18, whose shapes are width 1's;
        # a pretext trunk is trained at the model's own width.
        if self.pretrained not in (None, "synthfer_pretext") and self.width != 1.0:
            raise ValueError(f"pretrained: {self.pretrained} (torchvision's ResNet-18) needs width 1, "
                             f"got width {self.width}")
        return self


class LossConfig(_Section):
    adaptation: MethodName = "lacmfer"
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    hyper_align: Annotated[float, Field(ge=0.0)] = 0.4
    hyper_inter: Annotated[float, Field(ge=0.0)] = 0.02
    hyper_intra: Annotated[float, Field(ge=0.0)] = 0.5
    hyper_tgt: Annotated[float, Field(ge=0.0)] = 0.1
    threshold: Fraction = 0.4
    ps_threshold: Fraction = 0.9
    kernel_num: Annotated[int, Field(ge=1, le=16)] = 5
    kernel_mul: Annotated[float, Field(gt=1.0)] = 2.0
    # Ablation switches: each term of docs/METHOD.md §3.8 can be turned off on its own.
    sample_level: bool = True
    cluster_level: bool = True
    mcc: bool = True
    pseudo_label: bool = True
    mcc_input: Literal["probs", "logits"] = "probs"
    # The released loss files' hardness weights: july2024 detached with the membership test,
    # june2024 with gradient and no membership test (docs/METHOD.md §3.3).
    hardness: Literal[names.HARDNESS_RELEASES] = "july2024"
    # hyper_align × a(t): none, or MFSAN's ramp that released train.py computes (§3.8).
    align_warmup: Literal[names.ALIGN_WARMUPS] = "none"
    # The baselines' own weights (docs/METHOD.md §8; their papers weigh each term by 1):
    # DANN's domain-classification loss, MFSAN's MMD and classifier-discrepancy terms.
    hyper_domain: Annotated[float, Field(ge=0.0)] = 1.0
    hyper_mmd: Annotated[float, Field(ge=0.0)] = 1.0
    hyper_disc: Annotated[float, Field(ge=0.0)] = 1.0


class ScheduleConfig(_Section):
    steps: Annotated[int, Field(ge=1)] = 20000
    lr: Positive = 0.01
    trunk_lr_mult: Positive = 0.1
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    nesterov: bool = True
    weight_decay: Annotated[float, Field(ge=0.0)] = 1e-4
    lr_gamma: Annotated[float, Field(ge=0.0)] = 10.0
    lr_power: Annotated[float, Field(ge=0.0)] = 0.75
    lr_decay_steps: Annotated[int, Field(ge=1)] = 10000
    cluster_start: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    cluster_ramp: Literal[names.CLUSTER_RAMPS] = "sigmoid"
    cluster_gamma: Positive = 10.0


class EvalConfig(_Section):
    interval: Annotated[int, Field(ge=1)] = 100
    objective: Objective = "source_val_acc"
    snd_temperature: Positive = 0.05
    # Intermediate evaluations look at fixed seeded subsets (null: the whole set) so that
    # they cost a few percent of a trial: the label-free validators and pl_acc on this
    # many target-stream images, source_val_acc on this many hold-out images.
    target_subset: Annotated[int, Field(ge=16)] | None = 4096
    source_val_subset: Annotated[int, Field(ge=16)] | None = 2048
    # MixVal's probes per evaluation (mixed pairs of target-subset images, half within and
    # half across pseudo-label clusters): one extra forward pass over this many images.
    mixval_probes: Annotated[int, Field(ge=2)] = 1024
    # target_acc (oracle) on the whole target test set every this many evaluations and
    # at the last one; NaN in between. Every evaluation when the objective is the oracle.
    test_every: Annotated[int, Field(ge=1)] = 4
    # Every this many steps a step also measures ‖∇(hyper_align·L_inter)‖ / ‖∇L_sup‖ on the
    # shared trunk (two extra backward passes); null: never (docs/METHOD.md §3.9).
    grad_ratio_every: Annotated[int, Field(ge=1)] | None = 50
    # A run that trains this long without an evaluation is ended as hung ("no report for N s")
    # and retried from its checkpoint like any failed run (lacmfer/run/watchdog.py). null:
    # hang_factor × its slowest interval so far, at least hang_floor_s (4 × before the first).
    hang_timeout_s: Positive | None = None
    hang_factor: Annotated[float, Field(gt=1.0)] = 5.0
    hang_floor_s: Positive = 600.0


class ParamSpec(_Section):
    """One search dimension: a distribution with its bounds, or a constant."""

    distribution: Literal["loguniform", "uniform", "int", "choice", "constant"]
    low: float | None = None
    high: float | None = None
    choices: list[Any] | None = None
    value: Any = None
    only_if: dict[str, Any] | None = Field(
        None, description="conditional parameter: sampled only when another parameter has this value"
    )

    @model_validator(mode="after")
    def _bounds(self) -> ParamSpec:
        dist = self.distribution
        if dist in ("loguniform", "uniform", "int"):
            if self.low is None or self.high is None:
                raise ValueError(f"{dist} needs low and high")
            if not self.low < self.high:
                raise ValueError(f"low ({self.low}) must be < high ({self.high})")
            if dist == "loguniform" and self.low <= 0:
                raise ValueError(f"loguniform needs low > 0 (got {self.low})")
            if dist == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
                raise ValueError(f"int needs integer bounds (got {self.low}, {self.high})")
        elif dist == "choice":
            if not self.choices:
                raise ValueError("choice needs a non-empty 'choices' list")
        elif self.value is None:
            raise ValueError("constant needs 'value'")
        return self


class AshaConfig(_Section):
    """ASHA on evaluation counts: `max_t` evaluations per trial at most.

    The rungs of both early-stopping schedulers: `asha`, and `hyperband` (asynchronous
    Hyperband: ASHA's brackets, the k-th starting at grace_period × reduction_factor^k).

    `max_t` below the evaluations of a run is refused (ExperimentConfig): ASHA would stop
    every trial there, so no trial would finish its schedule. Above it is harmless: the
    rungs past the last evaluation are never reached.
    """

    max_t: Annotated[int, Field(ge=1)] | None = Field(None, description="default: every evaluation of a run")
    grace_period: Annotated[int, Field(ge=1)] = 1
    reduction_factor: Annotated[float, Field(gt=1.0)] = 2.0


def resolve_space(data: Any, adaptation: str | None) -> Any:
    """A raw `search` section with its `space` resolved against the default space of the method
    `adaptation` (`lacmfer.hparams.default_space`); unchanged when it needs no resolving."""
    if not isinstance(data, dict) or not data.get("use_default_space", True):
        return data
    overrides = data.get("space") or {}
    if not isinstance(overrides, dict):
        return data  # the field check reports it
    space = default_space(adaptation)
    for name, override in overrides.items():
        if isinstance(override, BaseModel):
            override = override.model_dump(exclude_unset=True)
        if override is None:
            space.pop(name, None)
        elif isinstance(override, dict) and name in HPARAMS and "distribution" not in override:
            space[name] = {**HPARAMS[name].distribution, **override}
        else:
            space[name] = override
    return {**data, "space": space, "use_default_space": False}


class SearchConfig(_Section):
    num_samples: Annotated[int, Field(ge=1)] = 16
    # The most trials one split runs at once. Default: as many as the cluster has slots
    # (every split at once shares them; search.driver.trials_at_once). Set it to trade
    # wall-clock time for proposals that know more results (e.g. ⌊√num_samples⌋).
    max_concurrent: Annotated[int, Field(ge=1)] | None = Field(None, description="default: the cluster's slots")
    seed: int = 0
    # Which Optuna sampler proposes and which Ray Tune scheduler stops (search/algorithms.py);
    # random + fifo is the baseline a search is measured against (docs/BENCHMARKS.md).
    sampler: Literal[names.SAMPLERS] = "tpe"
    scheduler: Literal[names.SCHEDULERS] = "asha"
    # TPE only: the joint density over every parameter (and the conditional ones' groups).
    multivariate: bool = True
    # TPE and GP: random proposals until this many trials of the split have ended.
    startup_trials: Annotated[int, Field(ge=1)] = 10
    start_from_defaults: bool = True
    scope: Literal["best", "last"] = Field("best", description="a trial's value: its best or its last evaluation")
    max_failures: Annotated[int, Field(ge=0)] = 1
    # Optuna's storage: an RDB URL (sqlite:///..., postgresql://...) or a journal file path
    # (for several machines on one shared filesystem). Default: SQLite optuna.db in the
    # experiment folder (object-storage results: on the driver's disk, copied beside them).
    storage: str | None = None
    # A trial checkpoints every this many evaluations and at its last one (resume after a
    # failure or an interruption restarts from there; ASHA itself needs no checkpoint).
    checkpoint_every: Annotated[int, Field(ge=1)] = 10
    # After the export, trial checkpoints other than each split's exported best are removed.
    keep_checkpoints: bool = False
    asha: AshaConfig = Field(default_factory=AshaConfig)
    # true: `space` overrides or narrows the default space of lacmfer/hparams.py (an entry
    # changes only the fields it gives, `null` drops a parameter, `{}` adds an unsearched
    # one). A loaded config holds the resolved space and false, so it reads the same later.
    use_default_space: bool = True
    space: dict[str, ParamSpec] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _resolve_space(cls, data: Any) -> Any:
        return resolve_space(data, None)  # alone; an ExperimentConfig resolves it for its method first

    @field_validator("space")
    @classmethod
    def _known_names(cls, space: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        for name, spec in space.items():
            if name not in HPARAMS:
                raise ValueError(f"unknown search parameter '{name}' (expected one of {sorted(HPARAMS)})")
            for parent, value in (spec.only_if or {}).items():
                parent_spec = space.get(parent)
                if parent_spec is None or parent_spec.distribution != "choice":
                    raise ValueError(f"'{name}'.only_if names '{parent}', which is not a choice parameter")
                if value not in (parent_spec.choices or []):
                    raise ValueError(f"'{name}'.only_if value {value!r} is not among {parent}'s choices")
        return space


class ResourcesConfig(_Section):
    cpu: Annotated[float, Field(gt=0.0)] = 1.0
    # GPUs per search trial: 0 (train on the CPU), a share of one GPU, or 1 (see lacmfer/run/device.py).
    gpu: Annotated[float, Field(ge=0.0)] = 0.0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    threads: Annotated[int, Field(ge=1)] | None = Field(None, description="torch CPU threads per trial")

    @field_validator("gpu")
    @classmethod
    def _at_most_one(cls, gpu: float) -> float:
        # A trial trains one model on one device: a second GPU would be reserved and idle.
        if gpu > 1:
            raise ValueError("a trial trains on one device: ask for a fraction of one GPU or 1 "
                             "(fractions pack several trials on one GPU)")
        return gpu


class ClusterConfig(_Section):
    """How the search runs on a Ray cluster (the search reads it; training ignores it)."""

    # Ray's runtime environment for the job, e.g. {"working_dir": ".", "pip": ["lacmfer"]}:
    # Ray ships it to every node, so worker nodes need no checkout at the same path.
    runtime_env: dict[str, Any] | None = None


class OutputConfig(_Section):
    # A local folder, or a URI that pyarrow's filesystems open (s3://bucket/prefix, gs://...).
    results_dir: Path | str = Path("results")
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")] = "default"

    @field_validator("results_dir", mode="before")
    @classmethod
    def _path_unless_uri(cls, value: Any) -> Path | str:
        text = str(value)
        return text.rstrip("/") if is_uri(text) else Path(text)


class FinalConfig(_Section):
    """Final training in the search's own command (`tune.py --final-seeds`): as soon as a
    split's search ends, its best config trains on `seeds` beside each of `baselines`, on
    the same Ray cluster; `final/report.md` is written when the last run ends. No seeds:
    the search stops at its export (`python train.py` trains the exported configs later)."""

    seeds: list[int] = Field(default_factory=list)
    baselines: list[MethodName] = Field(default_factory=list)
    # Attempts after a run raises (a crash, a lost node), each from its last checkpoint.
    retries: Annotated[int, Field(ge=0)] = 1

    @field_validator("seeds", "baselines")
    @classmethod
    def _once_each(cls, values: list[Any]) -> list[Any]:
        return list(dict.fromkeys(values))


class ExperimentConfig(_Section):
    # Modules imported before the config is validated, in every process (lacmfer/plugins.py).
    plugins: list[Annotated[str, Field(pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")]] = Field(default_factory=list)
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    final: FinalConfig = Field(default_factory=FinalConfig)

    @model_validator(mode="before")
    @classmethod
    def _method_search_space(cls, data: Any) -> Any:
        """The default search space is the configured method's own (DANN's, MFSAN's, or LA-CMFER's)."""
        if not isinstance(data, dict) or not isinstance(data.get("search", {}), dict):
            return data
        loss = data.get("loss")
        adaptation = (loss.get("adaptation") if isinstance(loss, dict) else getattr(loss, "adaptation", None))
        return {**data, "search": resolve_space(data.get("search", {}), adaptation)}

    @model_validator(mode="after")
    def _consistent_sections(self) -> ExperimentConfig:
        if self.eval.objective in names.SOURCE_READING_OBJECTIVES and self.data.source_val_fraction == 0:
            raise ValueError(
                f"eval.objective: {self.eval.objective} is measured on a hold-out of the source domains, but "
                "data.source_val_fraction is 0 (no hold-out); set data.source_val_fraction > 0 (e.g. 0.1) "
                "or choose another eval.objective"
            )
        evaluations = self.evaluations_per_run
        max_t = self.search.asha.max_t
        if max_t is not None and max_t < evaluations:
            raise ValueError(
                f"search.asha.max_t: {max_t} is below the {evaluations} evaluations of a run "
                f"(schedule.steps {self.schedule.steps} / eval.interval {self.eval.interval}, rounded up): "
                f"ASHA would stop every trial at evaluation {max_t}, so no trial would finish its schedule; "
                f"set max_t to at least {evaluations} or leave it unset"
            )
        return self

    @property
    def evaluations_per_run(self) -> int:
        """Evaluations in a full run: every `eval.interval` steps, and at the last step."""
        return math.ceil(self.schedule.steps / self.eval.interval)

    @property
    def experiment_dir(self) -> Path:
        """The local experiment folder; a UserError when the results are in object storage
        (the search reaches those through search/storage.py)."""
        if isinstance(self.output.results_dir, str):
            raise UserError(f"output.results_dir: {self.output.results_dir} is object storage; this command needs "
                            "a local folder (e.g. --set output.results_dir=results)")
        return self.output.results_dir / self.output.name

    def searchable_values(self) -> dict[str, Any]:
        """The current value of every searchable hyperparameter, keyed by search name."""
        values = {}
        for name, hparam in HPARAMS.items():
            node: Any = self
            for part in hparam.key.split("."):
                node = getattr(node, part)
            values[name] = node
        return values

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-safe dict (paths as strings), loadable again by `config_from_dict`."""
        return self.model_dump(mode="json")

    def with_values(self, values: dict[str, Any], source: str = "values") -> ExperimentConfig:
        """A copy with dotted-key values set, re-validated (used for search samples)."""
        return config_with_values(self.to_dict(), values, source)

    def with_derived(self, section: str, **values: Any) -> ExperimentConfig:
        """A copy with keys of one section set to values the code derived itself (a run's torch
        threads from its CPUs, its test-set reads), not validated again: a run's config is
        validated once, where its user-given values come in."""
        return self.model_copy(update={section: getattr(self, section).model_copy(update=values)})


def _format_validation_error(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if not e["loc"]:  # a check across sections: its message names the keys
            parts.append(f"{source}: {msg}")
        elif e["type"] == "extra_forbidden":
            msg = "unknown key"
            parts.append(f"{source}: {loc}: {msg}")
        else:
            parts.append(f"{source}: {loc}: {msg} (got {e['input']!r})")
    return "; ".join(parts)


def _resolve_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    def absolute(p: Path | None) -> Path | None:
        return None if p is None else p.expanduser().absolute()

    data = cfg.data
    data.root = absolute(data.root)
    data.cache_dir = absolute(data.cache_dir)
    for lists in data.lists.values():
        lists.root = absolute(lists.root)
    if isinstance(cfg.model.pretrained, Path):
        cfg.model.pretrained = absolute(cfg.model.pretrained)
    if isinstance(cfg.output.results_dir, Path):
        cfg.output.results_dir = absolute(cfg.output.results_dir)
    storage = cfg.search.storage
    if storage is not None and not is_uri(storage):  # a journal file
        cfg.search.storage = str(absolute(Path(storage)))
    return cfg


def config_from_dict(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a raw dict; `source` names where it came from in error messages."""
    # Plugins first: what they register decides which names the schema accepts.
    plugins = raw.get("plugins")
    import_plugins([p for p in plugins if isinstance(p, str)] if isinstance(plugins, list) else [], source)
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise UserError(_format_validation_error(err, source)) from None
    return _resolve_paths(cfg)


def config_with_values(raw: Mapping[str, Any], values: Mapping[str, Any], source: str) -> ExperimentConfig:
    """The config of a raw dict (a dumped config) with dotted-key values set, validated once."""
    raw = copy.deepcopy(dict(raw))
    for key, value in values.items():
        _set_dotted(raw, key, value, source)
    return config_from_dict(raw, source=source)


def _set_dotted(raw: dict[str, Any], key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    if not all(parts):
        raise UserError(f"{source}: '{key}' is not a dotted key like loss.hyper_align")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"{source}: {'.'.join(parts[: i + 1])} is a value, not a section (in '{key}')")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`loss.hyper_align=0.3` → ("loss.hyper_align", 0.3); the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {text!r}: expected key=value, e.g. loss.hyper_align=0.3")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        raise UserError(f"--set {text!r}: the value is not valid YAML") from None
    return key.strip(), parsed


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a syntax error is reported as `file:line: ...`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read config file ({err.strerror})") from None
    except UnicodeDecodeError as err:  # a file cut short or overwritten with other bytes
        raise UserError(f"{path}: not a UTF-8 text file (byte {err.start}: {err.reason}); "
                        "a YAML config file was expected") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    """Parse a YAML mapping read from `source` (a file or a URI, named in errors)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise UserError(f"{where}: invalid YAML: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    return raw


def load_config(path: Path | str, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML config, apply `--set key=value` overrides, validate everything."""
    path = Path(path)
    raw = read_yaml(path)
    source = str(path)
    if overrides:
        for text in overrides:
            key, value = parse_override(text)
            _set_dotted(raw, key, value, f"--set {key}")
        source = f"{path} (with --set overrides)"
    return config_from_dict(raw, source=source)


def config_text(cfg: ExperimentConfig, header: str | None = None) -> str:
    """The YAML of a complete, runnable config, with `header` as a leading comment."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    if header:
        text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    return text


def save_config(cfg: ExperimentConfig, path: Path, header: str | None = None) -> None:
    """Write a complete, runnable config (atomically: a reader never sees half a file)."""
    write_text_atomic(path, config_text(cfg, header))
