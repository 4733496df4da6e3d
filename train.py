"""Final training: the whole protocol, target × seed × method, and its table.

    python train.py --experiment results/<exp> --baseline source_only
    python train.py --config results/<exp>/best/CK.yaml --seeds 0 1 2
    python train.py --experiment results/<exp> --resume      # after an interruption

`--experiment` trains every split's exported best config (`best/<target>.yaml`, written
by the search's export); `--config` trains one config on its `data.targets`. Each
`--baseline` (a `loss.adaptation`) trains the same configs and seeds with that method.
Runs go to Ray as tasks with the config's `resources` (as many at once as the cluster
holds; `--address`/RAY_ADDRESS joins a cluster), or one after another in this process
with `--sequential`; both give the same numbers for the same seed. A run that raises is
retried from its last evaluation (`--retries`). Every run writes
`<experiment>/final/<target>/<method>/seed<k>/` (see `lacmfer.run.final_run`); the protocol
table goes to `final/report.md` and `final/report.parquet` (see `lacmfer.reports.final_report`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lacmfer.config import ExperimentConfig, load_config
from lacmfer.data.loaders import SplitData, cache_every_list, load_split_data
from lacmfer.errors import UserError, exit_on_user_error
from lacmfer.method.pretrained import ensure_pretrained
from lacmfer.names import METHOD_NAMES, domain_names, is_oracle
from lacmfer.run.final_run import FinalResult, FinalRun, failed_result, result_line, train_run
from search.disk_space import disk_full_error, is_disk_full
from search.protocol import FINAL_DIR, Protocol, conclude, finished_results, protocol_methods, protocol_runs


def _experiment_configs(exp_dir: Path, targets: Sequence[str] | None,
                        overrides: list[str]) -> list[tuple[str, ExperimentConfig]]:
    """(target, config) of every exported best config of a search, in the search's order."""
    best = exp_dir / "best"
    if not best.is_dir():
        raise UserError(f"{best}: no exported best configs (run `python tune.py` or `--export-only` first)")
    found = {p.stem: p for p in best.glob("*.yaml")}
    saved = exp_dir / "config.yaml"
    order = load_config(saved).data.targets if saved.exists() else domain_names()
    wanted = list(targets) if targets else [t for t in order if t in found]
    skipped = [t for t in order if t not in found and not targets]
    if skipped and saved.exists():  # the export writes no config for a split without an exportable trial
        print(f"note: no best config for {', '.join(skipped)} in {best}: not trained", file=sys.stderr)
    missing = [t for t in wanted if t not in found]
    if missing:
        raise UserError(f"{best}: no best config for {', '.join(missing)} (found: {', '.join(sorted(found)) or 'none'})")
    if not wanted:
        raise UserError(f"{best}: no <target>.yaml here")
    configs = []
    for target in wanted:
        cfg = load_config(found[target], overrides)
        if cfg.data.targets != [target]:
            raise UserError(f"{found[target]}: data.targets is {cfg.data.targets}, expected [{target}]")
        configs.append((target, cfg))
    return configs


def plan_runs(args: argparse.Namespace) -> Protocol:
    """Targets × methods × seeds, from `--experiment` or `--config`, with their run folders."""
    if args.experiment is not None:
        exp_dir = args.experiment.absolute()
        configs = _experiment_configs(exp_dir, args.target, args.overrides)
        name = exp_dir.name
    else:
        cfg = load_config(args.config, args.overrides)
        targets = args.target or cfg.data.targets
        unknown = [t for t in targets if t not in cfg.data.domains]
        if unknown:
            raise UserError(f"--target {unknown}: not among data.domains {cfg.data.domains} of {args.config}")
        configs = [(t, cfg) for t in targets]
        exp_dir, name = cfg.experiment_dir, cfg.output.name
    objectives = {cfg.eval.objective for _, cfg in configs}
    if len(objectives) > 1:
        raise UserError(f"the configs select with different objectives ({', '.join(sorted(objectives))}); "
                        "one table needs one (set it with --set eval.objective=...)")
    method = configs[0][1].loss.adaptation
    if any(cfg.loss.adaptation != method for _, cfg in configs):
        raise UserError("the configs train different loss.adaptation methods; give them as --baseline instead")
    methods = protocol_methods(method, args.baseline, "--baseline")
    final_dir = exp_dir / FINAL_DIR
    runs = protocol_runs(configs, methods, args.seeds, final_dir)
    return Protocol(name, final_dir, [t for t, _ in configs], methods, list(args.seeds), objectives.pop(), runs)


def check_fresh(plan: Protocol, resume: bool) -> None:
    """Refuse to mix a new final training into started runs unless --resume says so."""
    if resume:
        return
    started = [r.name for r in plan.runs if r.started]
    if started:
        raise UserError(f"{plan.final_dir}: runs already started ({', '.join(started[:3])}"
                        f"{', …' if len(started) > 3 else ''}): continue with --resume, or remove them")


def run_sequential(runs: Sequence[FinalRun], retries: int, progress: bool,
                   on_result: Callable[[FinalResult], None]) -> list[FinalResult]:
    """Every run in this process, one after another; split data is loaded once per target."""
    data: dict[str, SplitData] = {}
    results = []
    for run in runs:
        if run.target not in data:
            data[run.target] = load_split_data(run.config, run.target, progress=progress)
        for attempt in range(retries + 1):
            try:
                result = train_run(run, data=data[run.target], progress=progress)
                break
            except UserError:
                raise
            except Exception as err:  # noqa: BLE001 - any crash of a run is retried from its state
                if is_disk_full(err):
                    raise  # no retry fits either: main says which volume and how to go on
                print(f"{run.name}: attempt {attempt + 1} failed: {type(err).__name__}: {err}", file=sys.stderr)
                result = failed_result(run, f"{type(err).__name__}: {err}")
        on_result(result)
        results.append(result)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python train.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:5]))
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--experiment", type=Path, help="a search's folder, results/<exp>: trains best/<target>.yaml")
    what.add_argument("--config", type=Path, help="one config, e.g. results/<exp>/best/CK.yaml")
    # Targets and baselines are checked once the configs (and their plugins) are loaded.
    p.add_argument("--target", nargs="+", help="a subset of the targets")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--baseline", nargs="+", default=[], metavar="METHOD",
                   help="methods to train beside it on the same seeds, any loss.adaptation "
                        f"(built in: {', '.join(METHOD_NAMES)})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of every config, e.g. --set schedule.steps=1000")
    p.add_argument("--resume", action="store_true", help="keep finished runs, continue interrupted ones")
    p.add_argument("--retries", type=int, default=1, help="attempts after a run raises (default 1)")
    p.add_argument("--sequential", action="store_true", help="train in this process, one run after another (no Ray)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.retries < 0:
        p.error("--retries must be >= 0")
    if args.sequential and args.address:
        p.error("--sequential trains in this process; --address is for Ray")
    return args


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    resume = " ".join(["python train.py", *map(shlex.quote, argv), *([] if args.resume else ["--resume"])])
    plan = plan_runs(args)
    check_fresh(plan, args.resume)
    if is_oracle(plan.objective):
        print("note: the objective is oracle_target_acc (selection on target TEST labels)", file=sys.stderr)
    # Before any run (and before Ray): SynthFER is generated once, a bad list or image is
    # one `file:line` error, and the runs open the caches built here.
    for data_config in {r.config.data.root: r.config.data for r in plan.runs}.values():
        cache_every_list(data_config, workers=min(8, os.cpu_count() or 1), progress=not args.no_progress)
    for run in plan.runs:  # trunk weights downloaded or trained once, here (cached: a file check)
        ensure_pretrained(run.config, progress=not args.no_progress)

    results, todo = finished_results(plan.runs)

    def report(result: FinalResult) -> None:
        results[result.name] = result
        print(f"[{len(results)}/{len(plan.runs)}] {result_line(result)}", flush=True)

    kept = len(results)
    if kept:
        print(f"kept {kept} finished run(s) of {len(plan.runs)}")
    try:
        if args.sequential:
            run_sequential(todo, args.retries, not args.no_progress, report)
        elif todo:
            # Ray only here: a user of `--sequential` (or of the method itself) needs no Ray.
            from search.final_training import run_on_ray

            run_on_ray(todo, address=args.address, retries=args.retries, on_result=report)
    except KeyboardInterrupt:
        print(f"\ninterrupted: continue with {resume}", file=sys.stderr)
        return 130
    except Exception as err:
        if is_disk_full(err):
            raise disk_full_error(plan.final_dir, resume) from None
        raise

    return conclude(plan, results, resume)


if __name__ == "__main__":
    sys.exit(main())
