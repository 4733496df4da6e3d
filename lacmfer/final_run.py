"""One run of final training: one target, one method, one seed, resumable from its own folder.

A run writes into its folder (`<results>/<experiment>/final/<target>/<method>/seed<k>/`):

    config.yaml              the config it trains, complete and runnable
    tb/                      TensorBoard scalars and hyperparameters
    resume_state.pt          the exact trainer state at the last evaluation (while running;
                             removed when the run ends)
    checkpoint_selected.pt   the weights at the evaluation the objective selects
    checkpoint.pt            the weights at the last step (not for a diverged run)
    metrics.json             every evaluation, the selected and the last one, the status

`metrics.json` is written last, so its presence means the run is over. A run that is
started again (a retry after a crash, or `--resume` after an interrupted final training)
continues from `resume_state.pt` and ends with exactly the numbers of an uninterrupted
run. Nothing here imports Ray: the Ray runner (`trainables.final_training`) and the
sequential path of `python -m lacmfer.train` both call `train_run`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lacmfer.config import ExperimentConfig, save_config
from lacmfer.data.loaders import SplitData
from lacmfer.device import Placement
from lacmfer.names import is_oracle
from lacmfer.tb_logging import BEST_OF, RunLogger, run_hparams
from lacmfer.trainer import Trainer

STATE_FILE = "resume_state.pt"
LAST_WEIGHTS = "checkpoint.pt"
SELECTED_WEIGHTS = "checkpoint_selected.pt"
METRICS_FILE = "metrics.json"
#: The statuses of a run that ended (`failed` is given by the runner when every attempt raised).
STATUSES: tuple[str, ...] = ("completed", "diverged", "failed")


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


def diverged(metrics: Mapping[str, float]) -> bool:
    """NaN or inf training loss or predictions (docs/METHOD.md §6).

    Weights can turn NaN within an interval whose mean loss is still finite; the
    predictions' entropy is then NaN already, so it is checked too.
    """
    return not (math.isfinite(metrics.get("loss_total", 0.0)) and math.isfinite(metrics.get("entropy", 0.0)))


def _save_atomic(obj: Any, path: Path) -> None:
    """torch.save through a temporary file: a crash never leaves half a checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _weights(trainer: Trainer, run: FinalRun) -> dict[str, Any]:
    return {"model": trainer.model.state_dict(), "config": run.config.to_dict(), "target": run.target,
            "step": trainer.step_count}


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """The `metrics.json` of a run that ended, or None while it has not."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def train_run(run: FinalRun, *, data: SplitData | None = None, progress: bool = False,
              placement: Placement | None = None) -> dict[str, Any]:
    """Train `run` to its end (or its divergence), continuing from its saved state if any.

    Returns what `metrics.json` holds. The evaluation the objective selects is the one
    with the highest finite objective, the earliest on ties; its weights are saved when
    it is reached, so they are there however the run ends. `placement`: where to train
    (default: `resources.device`, see `lacmfer.device`).
    """
    cfg, out = run.config, run.run_dir
    # The report reads target_acc at the selected evaluation: the test set at every evaluation.
    trainer = Trainer(cfg.with_values({"eval.test_every": 1}), run.target, data=data, progress=progress,
                      placement=placement)
    history: list[dict[str, float]] = []
    best: dict[str, float] = {}
    resumed_at: list[int] = []
    seconds = 0.0
    state_path = out / STATE_FILE
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        trainer.load_state_dict(state["trainer"])
        history, best, resumed_at, seconds = state["history"], state["best"], state["resumed_at"], state["seconds"]
        resumed_at.append(trainer.step_count)
    else:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml", header=f"final training: {run.name}")

    # A resumed run hides what the interrupted attempt logged after its saved state.
    purge_step = trainer.step_count + 1 if resumed_at else None
    logger = RunLogger(out / "tb", {**run_hparams(cfg, run.target), "method": run.method}, BEST_OF,
                       purge_step=purge_step)
    logger.restore_best(best)
    selected_objective = max((m["objective"] for m in history if math.isfinite(m["objective"])), default=-math.inf)
    status = "completed"
    started = time.perf_counter()
    bar = tqdm(total=cfg.schedule.steps, initial=trainer.step_count, desc=run.name, unit="step",
               disable=not progress, leave=False)
    try:
        for metrics in trainer.training_loop():
            bar.update(trainer.step_count - bar.n)
            if diverged(metrics):
                # NaN weights still give finite accuracies (argmax of NaN is a fixed class): the
                # objective must not select this evaluation.
                metrics["objective"] = math.nan
                status = "diverged"
                logger.mark("diverged")  # the HParams table must not show it as a good run
            history.append(metrics)
            logger.log(metrics, trainer.step_count)
            if status == "diverged":
                break  # the weights are NaN from here on: stop instead of wasting steps
            if metrics["objective"] > selected_objective:
                selected_objective = metrics["objective"]
                _save_atomic(_weights(trainer, run), out / SELECTED_WEIGHTS)
            bar.set_postfix(objective=f"{metrics['objective']:.3f}", target_acc=f"{metrics['target_acc']:.3f}")
            _save_atomic({"trainer": trainer.state_dict(), "history": history, "best": dict(logger.best),
                          "resumed_at": resumed_at, "seconds": seconds + time.perf_counter() - started},
                         state_path)
    finally:
        bar.close()
        logger.close()

    if status == "completed":
        _save_atomic(_weights(trainer, run), out / LAST_WEIGHTS)
    selected = next((m for m in history if m["objective"] == selected_objective), None)
    result = {
        "target": run.target,
        "method": run.method,
        "seed": run.seed,
        "status": status,
        "objective": cfg.eval.objective,
        "oracle": is_oracle(cfg.eval.objective),
        "steps": trainer.step_count,
        "time_s": seconds + time.perf_counter() - started,
        "resumed_at": resumed_at,
        "weights": {"selected": SELECTED_WEIGHTS if selected else None,
                    "last": LAST_WEIGHTS if status == "completed" else None},
        "selected": selected,
        "last": history[-1] if history else None,
        "history": history,
    }
    tmp = out / f".{METRICS_FILE}.tmp"
    tmp.write_text(json.dumps(result, indent=1, allow_nan=True), encoding="utf-8")
    tmp.replace(out / METRICS_FILE)
    state_path.unlink(missing_ok=True)
    return result


def failed_result(run: FinalRun, error: str) -> dict[str, Any]:
    """The result of a run whose every attempt raised; not written (a later --resume retries it)."""
    return {"target": run.target, "method": run.method, "seed": run.seed, "status": "failed", "error": error,
            "objective": run.config.eval.objective, "oracle": is_oracle(run.config.eval.objective),
            "selected": None, "last": None, "history": []}


def result_line(result: Mapping[str, Any]) -> str:
    """One progress line for a run that ended."""
    name = f"{result['target']}/{result['method']}/seed{result['seed']}"
    if result["status"] == "failed":
        return f"{name}: FAILED ({result.get('error', 'unknown error')})"
    selected, last = result["selected"], result["last"]
    parts = [f"{name}: {result['status']}"]
    if selected is not None:
        parts.append(f"target_acc {selected['target_acc']:.4f} at the selected step {int(selected['step'])} "
                     f"({result['objective']} {selected['objective']:.4f})")
    if result["status"] == "completed":
        parts.append(f"{last['target_acc']:.4f} at the last step")
    elif last is not None:
        parts.append(f"NaN/inf loss at step {int(last['step'])}")
    if "time_s" in result:
        parts.append(f"{result['time_s']:.1f} s")
    return ", ".join(parts)
