"""Final training: `python -m lacmfer.train --config C.yaml [--target CK ...] [--seeds 0 1 2]`.

Trains each target × seed with a fixed config (an exported best config runs unchanged),
and writes under `<results>/<experiment>/final/<target>/seed<k>/`: TensorBoard scalars and
hyperparameters (`tb/`), `metrics.json` (every evaluation, the last one, and the one the
config's label-free objective selects), `config.yaml` and the final `checkpoint.pt`.
Prints a per-target table of mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lacmfer.config import ExperimentConfig, load_config, save_config
from lacmfer.data.domains import DOMAIN_NAMES
from lacmfer.errors import UserError, exit_on_user_error
from lacmfer.tb_logging import BEST_OF, RunLogger, run_hparams
from lacmfer.trainer import Trainer


def run_dir(cfg: ExperimentConfig, target: str) -> Path:
    return cfg.experiment_dir / "final" / target / f"seed{cfg.seed}"


def train_one(cfg: ExperimentConfig, target: str, progress: bool = True) -> dict[str, Any]:
    """Train one target with `cfg.seed`; returns what `metrics.json` holds."""
    out = run_dir(cfg, target)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml", header=f"final training: target {target}, seed {cfg.seed}")
    trainer = Trainer(cfg, target, progress=progress)
    logger = RunLogger(out / "tb", run_hparams(cfg, target), BEST_OF)
    history: list[dict[str, float]] = []
    status = "completed"
    bar = tqdm(total=cfg.schedule.steps, desc=f"{target} seed {cfg.seed}", unit="step", disable=not progress,
               leave=False)
    try:
        for metrics in trainer.evaluations():
            bar.update(trainer.step_count - bar.n)
            history.append(metrics)
            diverged = not math.isfinite(metrics.get("loss_total", 0.0))
            if diverged:
                logger.mark("diverged")
            logger.log(metrics, trainer.step_count)
            bar.set_postfix(objective=f"{metrics['objective']:.3f}", target_acc=f"{metrics['target_acc']:.3f}")
            if diverged:
                status = "diverged"  # the weights are NaN from here on: stop instead of wasting steps
                break
    finally:
        bar.close()
        logger.close()

    finite = [m for m in history if math.isfinite(m["objective"])]
    selected = max(finite, key=lambda m: m["objective"]) if finite else None
    result = {
        "target": target,
        "seed": cfg.seed,
        "status": status,
        "objective": cfg.eval.objective,
        "oracle": cfg.eval.objective == "oracle_target_acc",
        "last": history[-1] if history else None,
        "selected": selected,
        "history": history,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=1, allow_nan=True), encoding="utf-8")
    torch.save(
        {"model": trainer.model.state_dict(), "config": cfg.to_dict(), "target": target, "step": trainer.step_count},
        out / "checkpoint.pt",
    )
    return result


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "n/a"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f} ± {100 * std:.2f}"


def results_table(results: list[dict[str, Any]]) -> str:
    """Markdown table per target: accuracies in %, mean ± std over seeds."""
    objective = results[0]["objective"] if results else "objective"
    lines = [
        f"| target | seeds | target acc (last) | target acc (selected by {objective}) | {objective} (selected) |",
        "|---|---|---|---|---|",
    ]
    for target in dict.fromkeys(r["target"] for r in results):
        runs = [r for r in results if r["target"] == target and r["last"] is not None]
        sel = [r["selected"] for r in runs if r["selected"] is not None]
        lines.append(
            f"| {target} | {len(runs)} | {_mean_std([r['last']['target_acc'] for r in runs])} "
            f"| {_mean_std([m['target_acc'] for m in sel])} | {_mean_std([m['objective'] for m in sel])} |"
        )
    return "\n".join(lines)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lacmfer.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="a config, e.g. results/<exp>/best/<target>.yaml")
    parser.add_argument("--target", nargs="+", choices=DOMAIN_NAMES, help="default: data.targets of the config")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    cfg = load_config(args.config, args.overrides)
    targets = args.target or cfg.data.targets
    unknown = [t for t in targets if t not in cfg.data.domains]
    if unknown:
        raise UserError(f"--target {unknown}: not among data.domains {cfg.data.domains} of {args.config}")
    if cfg.eval.objective == "oracle_target_acc":
        print("note: the objective is oracle_target_acc (selection on target test labels)", file=sys.stderr)

    results = []
    for target in targets:
        for seed in args.seeds:
            run_cfg = cfg.with_values({"seed": seed}, source=str(args.config))
            results.append(train_one(run_cfg, target, progress=not args.no_progress))
    table = results_table(results)
    summary = cfg.experiment_dir / "final" / "summary.md"
    summary.write_text(f"# Final training: {cfg.output.name}\n\n{table}\n", encoding="utf-8")
    print(table)
    diverged = [f"{r['target']}/seed{r['seed']}" for r in results if r["status"] != "completed"]
    if diverged:
        print(f"warning: diverged runs (NaN/inf loss): {', '.join(diverged)}", file=sys.stderr)
    print(f"results: {cfg.experiment_dir / 'final'}   tensorboard --logdir {cfg.experiment_dir / 'final'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
