"""One run from its placement to its end: the lifecycle a search trial and a final-training run share.

    run = Run(cfg, "CK", out, {"trial_id": ...}, placement=placement)
    run.resume(folder)                 # when a checkpoint of this run exists
    for evaluation in run.evaluations():
        ...                            # report it: `tune.report`, a progress line
    run.result()                       # how it ended: a `lacmfer.run.outcome.RunResult`

`Run.evaluations` builds nothing the caller must keep in step: it trains the `Trainer`
under a watchdog that ends it when it stops making progress (`lacmfer.run.watchdog`),
marks a diverged evaluation (its objective NaN, the run flagged and ended), logs every
evaluation to TensorBoard (`out/tb`), keeps the evaluation the objective selects (with
its weights when asked) and checkpoints the whole state in one format, `STATE_FILE`:

    trainer      `Trainer.state_dict()`: weights, optimiser, schedule, RNG, samplers
    history      every evaluation so far
    best         the best-so-far values behind TensorBoard's `hparam/*` scalars
    resumed_at   the steps at which the run was continued
    seconds      training time so far

A run continued from that state ends with exactly the numbers of an uninterrupted one.
Nothing here imports Ray: the adapters in `trainables/` turn the evaluations into Tune
reports or a Ray task's result.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lacmfer.config import ExperimentConfig
from lacmfer.data.loaders import SplitData
from lacmfer.files import atomic_path
from lacmfer.method.methods import NetworkShape, build_method
from lacmfer.method.model import LACMFERNet
from lacmfer.names import RunStatus
from lacmfer.run.device import Placement, out_of_memory_message
from lacmfer.run.outcome import Evaluation, RunResult, run_status
from lacmfer.run.tb_logging import BEST_OF, RunLogger
from lacmfer.run.trainer import Trainer
from lacmfer.run.watchdog import Watchdog, hang_limit

STATE_FILE = "run_state.pt"
LAST_WEIGHTS = "checkpoint.pt"
SELECTED_WEIGHTS = "checkpoint_selected.pt"


def diverged(metrics: Mapping[str, float]) -> bool:
    """NaN or inf training loss or predictions (docs/METHOD.md §6).

    Weights can turn NaN within an interval whose mean loss is still finite; the
    predictions' entropy is then NaN already, so it is checked too.
    """
    return not (math.isfinite(metrics.get("loss_total", 0.0)) and math.isfinite(metrics.get("entropy", 0.0)))


def state_file_bytes(cfg: ExperimentConfig) -> int:
    """About the size of one `STATE_FILE` of a run of `cfg`: the weights (the network's and the
    method's own), the optimiser's momentum (a buffer per parameter) and BatchNorm's statistics,
    plus 1 MiB for the rest (RNG, samplers, history). Built on the meta device: nothing is allocated."""
    m = cfg.model
    with torch.device("meta"):
        model = LACMFERNet(width=m.width, global_blocks=m.global_blocks, local_blocks=m.local_blocks, cbam=m.cbam,
                           branch_init=m.branch_init)
        sources = tuple(range(len(cfg.data.domains) - 1))
        method = build_method(cfg, NetworkShape(model.feature_dim, model.num_classes, sources))
    weights = sum(p.numel() * p.element_size() for module in (model, method) for p in module.parameters())
    return 2 * weights + sum(b.numel() * b.element_size() for b in model.buffers()) + 2**20


def with_threads(cfg: ExperimentConfig) -> ExperimentConfig:
    """Torch threads = the run's whole CPUs (`resources.cpu`, what Ray reserves for it) when unset.

    Without this every run would start as many threads as the node has cores, and runs
    packed with fractional CPUs would oversubscribe the node.
    """
    if cfg.resources.threads is not None:
        return cfg
    return cfg.with_derived("resources", threads=int(max(1.0, cfg.resources.cpu)))


@contextlib.contextmanager
def out_of_memory_as_error(placement: Placement) -> Iterator[None]:
    """The run's own failure, saying what to change; a neighbour sharing the GPU is unaffected."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as err:
        raise RuntimeError(out_of_memory_message(placement)) from err


def _save_atomic(obj: Any, path: Path) -> None:
    """torch.save through a temporary file: a crash never leaves half a checkpoint.

    On a full volume torch's zip writer raises a RuntimeError ("unexpected pos ..."), not
    Python's OSError: it is raised as ENOSPC, so the commands name the full volume.
    """
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as err:
            if shutil.disk_usage(tmp.parent).free < 2**20:  # read while the partial file still fills it
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from err
            raise


@dataclass(frozen=True)
class RunEvaluation(Evaluation):
    """An evaluation as `Run.evaluations` hands it over: with its checkpoint, when one was due
    (never for a diverged one: the run ends there)."""

    checkpoint: Path | None = None  # a folder holding STATE_FILE at this evaluation


@dataclass(frozen=True)
class Keeping:
    """What a run keeps beside its evaluations: a checkpoint every `checkpoint_every`
    evaluations and at the last one; its state in `state_dir` (rewritten at each checkpoint;
    the caller removes it once it has recorded the run's result), or, None, in a fresh
    temporary folder per checkpoint, valid until the next evaluation is asked for (a Tune
    trial's storage copies it); with `save_weights`, the weights of the selected and of the
    last evaluation in the run's folder; with `test_every_evaluation`, the whole target test
    set read at every evaluation (`eval.test_every: 1`), so a report can give the selected
    evaluation's test accuracy."""

    checkpoint_every: int = 1
    state_dir: Path | None = None
    save_weights: bool = False
    test_every_evaluation: bool = False

    @classmethod
    def trial(cls, checkpoint_every: int) -> Keeping:
        """A search trial: a checkpoint for Tune every `checkpoint_every` evaluations."""
        return cls(checkpoint_every=checkpoint_every)

    @classmethod
    def final_run(cls, folder: Path) -> Keeping:
        """A final-training run: its state and weights in its own folder at every evaluation, the
        test set read at each."""
        return cls(checkpoint_every=1, state_dir=folder, save_weights=True, test_every_evaluation=True)


class Run:
    """One run of `cfg` on `target`, writing its TensorBoard events under `out/tb`.

    `hyperparameters` are added to the HParams columns of `lacmfer.run.tb_logging.run_hparams`;
    `keeping` says what the run keeps beside its evaluations (`Keeping.trial`, `Keeping.final_run`).
    """

    def __init__(self, cfg: ExperimentConfig, target: str, out: Path, hyperparameters: Mapping[str, Any],
                 keeping: Keeping = Keeping(), *, placement: Placement | None = None, data: SplitData | None = None,
                 progress: bool = False, name: str | None = None):
        self.cfg, self.target, self.out = cfg, target, out
        self.hyperparameters = dict(hyperparameters)
        self.keeping = keeping
        self.name, self.progress = name or target, progress
        trainer_cfg = cfg.with_derived("eval", test_every=1) if keeping.test_every_evaluation else cfg
        self.trainer = Trainer(trainer_cfg, target, data=data, progress=progress, placement=placement)
        self.history: list[dict[str, float]] = []
        self.best: dict[str, float] = {}
        self.resumed_at: list[int] = []
        self.seconds = 0.0
        self._last: Evaluation | None = None  # the latest evaluation, which decides `status`
        self._started: float | None = None  # when `evaluations` started, for the time spent

    def resume(self, directory: Path) -> None:
        """Continue from the state a checkpoint left in `directory`."""
        # map_location: a run may resume on a node without the GPU it was saved from;
        # `Trainer.load_state_dict` moves every tensor to the trainer's own device.
        state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=False)
        self.trainer.load_state_dict(state["trainer"])
        self.history, self.best, self.seconds = state["history"], state["best"], state["seconds"]
        self.resumed_at = [*state["resumed_at"], self.trainer.step_count]
        # A state is never saved at a divergence; one saved at the schedule's end resumes completed.
        self._last = Evaluation(self.history[-1], final=self.trainer.finished) if self.history else None

    @property
    def status(self) -> RunStatus:
        """How the run stands after its latest evaluation (`run_status`); raising is the caller's to record."""
        return run_status(self._last)

    def checkpoint_due(self) -> bool:
        """At every `checkpoint_every`-th evaluation and at the last one of the schedule."""
        return self.trainer.finished or self.trainer.evaluation_index % self.keeping.checkpoint_every == 0

    def save_state(self, directory: Path) -> None:
        """Write the run's state, `STATE_FILE`, into `directory` (through a temporary file)."""
        seconds = self.seconds + (time.perf_counter() - self._started if self._started is not None else 0.0)
        state = {"trainer": self.trainer.state_dict(), "history": self.history, "best": dict(self.best),
                 "resumed_at": self.resumed_at, "seconds": seconds}
        _save_atomic(state, directory / STATE_FILE)

    def _weights(self) -> dict[str, Any]:
        # The method's own modules too: MFSAN's classifiers, not the network's, make its predictions.
        return {"model": self.trainer.model.state_dict(), "method": self.trainer.method.state_dict(),
                "config": self.cfg.to_dict(), "target": self.target, "step": self.trainer.step_count}

    def _selected_objective(self) -> float:
        return max((m["objective"] for m in self.history if math.isfinite(m["objective"])), default=-math.inf)

    def evaluations(self) -> Iterator[RunEvaluation]:
        """Train to the end of the schedule (or the divergence), yielding every evaluation."""
        trainer = self.trainer
        # A resumed run hides what the interrupted attempt logged after its state (the
        # state's own evaluation, at `step_count`, stays) and keeps its first hparams summary.
        purge_step = trainer.step_count + 1 if self.resumed_at else None
        logger = RunLogger(self.out / "tb", self.hyperparameters, BEST_OF, purge_step=purge_step)
        logger.restore_best(self.best)
        self.best = logger.best  # updated by every `log`
        selected_objective = self._selected_objective()
        self._started = time.perf_counter()
        bar = tqdm(total=self.cfg.schedule.steps, initial=trainer.step_count, desc=self.name, unit="step",
                   disable=not self.progress, leave=False)
        watchdog = Watchdog(hang_limit(self.cfg.eval), self.name)
        try:
            with watchdog:
                for metrics in trainer.training_loop():
                    watchdog.beat()
                    bar.update(trainer.step_count - bar.n)
                    evaluation = RunEvaluation(metrics, final=trainer.finished, diverged=diverged(metrics))
                    if evaluation.diverged:
                        # NaN weights still give finite accuracies (argmax of NaN is a fixed class),
                        # so the objective must be replaced, by NaN rather than a very low number:
                        # nothing downstream ranks NaN as good or crashes on it (ASHA's cutoffs use
                        # nanpercentile; the searcher tells the trial PRUNED, which TPE ranks last;
                        # Tune's best-result lookup and the selection below skip it), where a finite
                        # sentinel would enter TPE's density model as a real, extreme value.
                        metrics["objective"] = math.nan
                        logger.mark(RunStatus.DIVERGED)  # the HParams table must not show it as a good run
                    self.history.append(metrics)
                    self._last = evaluation
                    logger.log(metrics, trainer.step_count)
                    if evaluation.diverged:
                        # The weights are NaN from here on: no checkpoint, no more steps.
                        with watchdog.suspended():
                            yield evaluation
                        return
                    if metrics["objective"] > selected_objective:
                        selected_objective = metrics["objective"]
                        if self.keeping.save_weights:
                            _save_atomic(self._weights(), self.out / SELECTED_WEIGHTS)
                    bar.set_postfix(objective=f"{metrics['objective']:.3f}", target_acc=f"{metrics['target_acc']:.3f}")
                    # The caller's time (a Tune report, its checkpoint upload) is not the run's.
                    with watchdog.suspended():
                        if not self.checkpoint_due():
                            yield evaluation
                        elif self.keeping.state_dir is not None:
                            self.save_state(self.keeping.state_dir)
                            yield replace(evaluation, checkpoint=self.keeping.state_dir)
                        else:
                            with tempfile.TemporaryDirectory(prefix="lacmfer-ckpt-") as directory:
                                self.save_state(Path(directory))
                                yield replace(evaluation, checkpoint=Path(directory))
        except Exception:
            # Shown in the HParams table. Not for Tune's stop of a trial (SystemExit inside
            # its report, which closes this generator): the mark is written at the failing step.
            logger.mark(RunStatus.FAILED)
            logger.log({}, trainer.step_count)
            raise
        finally:
            self.seconds += time.perf_counter() - self._started
            self._started = None
            bar.close()
            logger.close()
        if self.keeping.save_weights:
            _save_atomic(self._weights(), self.out / LAST_WEIGHTS)

    def result(self) -> RunResult:
        """How the run ended: its status, steps, time, the steps it was continued at, every evaluation."""
        return RunResult(status=self.status, history=self.history, steps=self.trainer.step_count,
                         time_s=self.seconds, resumed_at=self.resumed_at)
