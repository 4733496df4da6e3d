"""One run of final training: one target, one method, one seed, resumable from its own folder.

A run writes into its folder (`<results>/<experiment>/final/<target>/<method>/seed<k>/`):

    config.yaml              the config it trains, complete and runnable
    tb/                      TensorBoard scalars and hyperparameters
    run_state.pt             the run's state at the last evaluation (`lacmfer.run.lifecycle`; while
                             running, removed when the run ends)
    checkpoint_selected.pt   the weights at the evaluation the objective selects
    checkpoint.pt            the weights at the last step (not for a diverged run)
    metrics.json             every evaluation, the selected and the last one, the status
                             (`FinalResult.to_dict`)

`metrics.json` is written last, so its presence means the run is over. A run that is
started again (a retry after a crash, or `--resume` after an interrupted final training)
continues from `run_state.pt` and ends with exactly the numbers of an uninterrupted run.
Nothing here imports Ray: the Ray task (`trainables.final_training`) and the sequential
path of `python train.py` both call `train_run`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lacmfer.config import ExperimentConfig, save_config
from lacmfer.data.loaders import SplitData
from lacmfer.files import write_text_atomic
from lacmfer.names import OBJECTIVE_KEY, RunStatus, is_oracle
from lacmfer.run.device import Placement
from lacmfer.run.lifecycle import LAST_WEIGHTS, SELECTED_WEIGHTS, STATE_FILE, Keeping, Run
from lacmfer.run.outcome import RunResult, run_status
from lacmfer.run.tb_logging import run_hparams

METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class FinalRun:
    """What one run trains and where it writes; `method` is the config's `loss.adaptation`."""

    target: str
    method: str
    seed: int
    config: ExperimentConfig
    run_dir: Path

    @property
    def name(self) -> str:
        return f"{self.target}/{self.method}/seed{self.seed}"

    @property
    def started(self) -> bool:
        """Whether an attempt has left state or a result in the run's folder."""
        return (self.run_dir / STATE_FILE).exists() or (self.run_dir / METRICS_FILE).exists()


@dataclass(kw_only=True)
class FinalResult(RunResult):
    """How one final-training run ended: what `metrics.json` holds, or, failed, what its every
    attempt raised (not written: a later --resume retries it)."""

    target: str
    method: str
    seed: int
    objective: str  # the config's eval.objective, which selects the kept evaluation
    # When its last attempt started and ended (seconds since the epoch, on the machine that ran it),
    # for the search's slot timeline; not in metrics.json.
    started_at: float | None = None
    ended_at: float | None = None

    @property
    def name(self) -> str:
        return f"{self.target}/{self.method}/seed{self.seed}"

    @property
    def selected(self) -> dict[str, float] | None:
        """The evaluation the objective selects: its highest finite value, the earliest on ties."""
        return self.best(OBJECTIVE_KEY)

    def to_dict(self) -> dict[str, Any]:
        """The `metrics.json` form of a run that ended; its keys in the order users and benchmarks read."""
        selected = self.selected
        return {
            "target": self.target, "method": self.method, "seed": self.seed, "status": self.status.value,
            "objective": self.objective, "oracle": is_oracle(self.objective),
            "steps": self.steps, "time_s": self.time_s, "resumed_at": self.resumed_at,
            # Saved when reached (the selected evaluation's) and at the schedule's end (the last step's).
            "weights": {"selected": SELECTED_WEIGHTS if selected else None,
                        "last": LAST_WEIGHTS if self.status is RunStatus.COMPLETED else None},
            "selected": selected, "last": self.last, "history": self.history,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FinalResult:
        """A result from its `metrics.json` form (the derived keys, oracle to last, are recomputed)."""
        return cls(target=raw["target"], method=raw["method"], seed=raw["seed"], objective=raw["objective"],
                   status=raw["status"], history=raw["history"], steps=raw["steps"], time_s=raw["time_s"],
                   resumed_at=raw["resumed_at"])


def read_result(run_dir: Path) -> FinalResult | None:
    """The `metrics.json` of a run that ended, or None while it has not."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return None
    return FinalResult.from_dict(json.loads(path.read_text(encoding="utf-8")))


def train_run(run: FinalRun, *, data: SplitData | None = None, progress: bool = False,
              placement: Placement | None = None) -> FinalResult:
    """Train `run` to its end (or its divergence), continuing from its saved state if any.

    Returns what `metrics.json` holds. The selected evaluation's weights are saved when it
    is reached, so they are there however the run ends. `placement`: where to train
    (default: `resources.device`, see `lacmfer.run.device`).
    """
    cfg, out = run.config, run.run_dir
    # The report reads target_acc at the selected evaluation: the test set at every evaluation.
    lifecycle = Run(cfg, run.target, out, {**run_hparams(cfg, run.target), "method": run.method},
                    Keeping.final_run(out), placement=placement, data=data, progress=progress, name=run.name)
    if (out / STATE_FILE).exists():
        lifecycle.resume(out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml", header=f"final training: {run.name}")
    for _ in lifecycle.evaluations():
        pass  # the run checkpoints itself at every evaluation (checkpoint_every 1)
    ended = lifecycle.result()
    result = FinalResult(target=run.target, method=run.method, seed=run.seed, objective=cfg.eval.objective,
                         status=ended.status, history=ended.history, steps=ended.steps, time_s=ended.time_s,
                         resumed_at=ended.resumed_at)
    write_text_atomic(out / METRICS_FILE, json.dumps(result.to_dict(), indent=1, allow_nan=True))
    (out / STATE_FILE).unlink(missing_ok=True)  # after metrics.json: a crash in between keeps the state to resume
    return result


def failed_result(run: FinalRun, error: str, user_error: bool = False) -> FinalResult:
    """The result of a run whose every attempt raised; not written (a later --resume retries it).

    `user_error`: the run raised a `lacmfer.errors.UserError` (bad input found only where
    it trained), and `error` is its message.
    """
    return FinalResult(target=run.target, method=run.method, seed=run.seed, objective=run.config.eval.objective,
                       status=run_status(None, raised=True), error=error, user_error=user_error)


def result_line(result: FinalResult) -> str:
    """One progress line for a run that ended."""
    if result.status is RunStatus.FAILED:
        return f"{result.name}: FAILED ({result.error})"
    selected, last = result.selected, result.last
    parts = [f"{result.name}: {result.status}"]
    if selected is not None:
        parts.append(f"target_acc {selected['target_acc']:.4f} at the selected step {int(selected['step'])} "
                     f"({result.objective} {selected['objective']:.4f})")
    if result.status is RunStatus.COMPLETED:
        parts.append(f"{last['target_acc']:.4f} at the last step")
    elif last is not None:
        parts.append(f"NaN/inf loss at step {int(last['step'])}")
    if result.time_s is not None:
        parts.append(f"{result.time_s:.1f} s")
    return ", ".join(parts)
