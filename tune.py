"""Hyperparameter search for LA-CMFER: Optuna TPE proposes, ASHA stops, one study per split.

    python tune.py                                  # embedded SynthFER default, local Ray
    python tune.py --config configs/cmfer_six.yaml --address auto
    python tune.py --resume --name EXP              # continue an interrupted search
    python tune.py --export-only --name EXP         # rewrite best configs, tables, summary
    python tune.py --final-seeds 0 1 2 --baseline source_only   # the whole protocol, one command
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from lacmfer.config import ExperimentConfig, config_from_dict, load_config, parse_yaml
from lacmfer.errors import UserError, exit_on_user_error
from lacmfer.names import is_oracle
from lacmfer.run.outcome import raise_bad_input_of_every_run
from search.storage import CONFIG_FILE, ExperimentLocations, location

if TYPE_CHECKING:
    from search.export import ExportSummary
    from search.final_phase import FinalPhase


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python tune.py", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    p.add_argument("--config", type=Path, default=Path("configs/default.yaml"), help="experiment YAML")
    # Checked by the config, not here: a plugin's domain is known only once the config named it.
    p.add_argument("--targets", nargs="+", help="target splits among data.domains (default: data.targets)")
    p.add_argument("--num-samples", type=int, help="trials per split (search.num_samples)")
    p.add_argument("--name", help="experiment name (output.name)")
    p.add_argument("--results", help="results folder or URI, e.g. s3://bucket/prefix (output.results_dir)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--cpus-per-trial", type=float, help="resources.cpu")
    p.add_argument("--gpus-per-trial", type=float, help="resources.gpu (fractions pack trials on one GPU)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set loss.hyper_align=0.3")
    p.add_argument("--final-seeds", nargs="+", type=int, metavar="SEED",
                   help="train each split's best config on these seeds as soon as its search ends (final.seeds)")
    p.add_argument("--baseline", nargs="+", metavar="METHOD",
                   help="methods trained beside it on the same seeds (final.baselines), any loss.adaptation")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the experiment --name")
    mode.add_argument("--export-only", action="store_true", help="only export the results of --name")
    mode.add_argument("--rebuild-study", action="store_true",
                      help="rebuild the Optuna studies of the finished search --name from its trials' reports")
    mode.add_argument("--dry-run", action="store_true", help="print config, splits and search space, then exit")
    return p.parse_args(argv)


def cli_overrides(args: argparse.Namespace) -> list[str]:
    """The convenience flags as `--set` overrides, so they are validated the same way."""
    pairs = {
        "data.targets": args.targets,
        "search.num_samples": args.num_samples,
        "output.name": args.name,
        "output.results_dir": args.results,
        "resources.cpu": args.cpus_per_trial,
        "resources.gpu": args.gpus_per_trial,
        "final.seeds": args.final_seeds,
        "final.baselines": args.baseline,
    }
    return [*args.overrides, *(f"{k}={json.dumps(v)}" for k, v in pairs.items() if v is not None)]


def saved_config(args: argparse.Namespace) -> ExperimentConfig:
    """The config an existing experiment ran with (for --resume and --export-only).

    Found from --name and --results; --config is read only for what those leave open.
    """
    if args.overrides or args.cpus_per_trial is not None or args.gpus_per_trial is not None:
        raise UserError("--set/--cpus-per-trial/--gpus-per-trial: an existing experiment keeps its saved config; "
                        "start another with --name NEW to change it")
    if args.name and args.results:
        path = location(args.results) / args.name / CONFIG_FILE
    else:
        path = ExperimentLocations.of(load_config(args.config, cli_overrides(args))).config_file
    if not path.exists():
        raise UserError(f"{path}: no experiment here (check --name and --results)")
    cfg = config_from_dict(parse_yaml(path.read_text(), str(path)), source=str(path))
    if not args.resume:
        return cfg
    # A resumed search may widen its splits or its trial budget, nothing else; the driver
    # saves the widened config, which the export then reads.
    widened: dict[str, object] = {}
    if args.targets:
        widened["data.targets"] = cfg.data.targets + [t for t in args.targets if t not in cfg.data.targets]
    if args.num_samples is not None:
        if args.num_samples < cfg.search.num_samples:
            raise UserError(f"--num-samples {args.num_samples}: {path} already runs {cfg.search.num_samples} "
                            "trials per split; a resumed search can add trials, not remove them")
        widened["search.num_samples"] = args.num_samples
    # ...and its final training: a finished search resumed with --final-seeds trains its protocol.
    if args.final_seeds:
        widened["final.seeds"] = cfg.final.seeds + [s for s in args.final_seeds if s not in cfg.final.seeds]
    if args.baseline:
        widened["final.baselines"] = cfg.final.baselines + [b for b in args.baseline if b not in cfg.final.baselines]
    return cfg.with_values(widened, source="--resume options") if widened else cfg


def dry_run(cfg: ExperimentConfig) -> None:
    from search.algorithms import describe
    from search.spaces import SearchSpace

    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    print("splits (target <- sources):")
    for target in cfg.data.targets:
        print(f"  {target:<8} <- {', '.join(d for d in cfg.data.domains if d != target)}")
    print("search space:")
    for line in SearchSpace(cfg.search.space).describe():
        print(f"  {line}")
    for line in describe(cfg.search, cfg.evaluations_per_run):
        print(line)
    oracle = "   (ORACLE: selects on target test labels)" if is_oracle(cfg.eval.objective) else ""
    print(f"objective: {cfg.eval.objective} (maximised){oracle}")
    print(f"results: {ExperimentLocations.of(cfg).folder}")


def export(cfg: ExperimentConfig, finished: list[str] | None = None) -> ExportSummary:
    from search.export import export_experiment

    summary = export_experiment(str(ExperimentLocations.of(cfg).folder), finished=finished or [])
    print(summary)
    return summary


def trials_hit_a_full_disk(places: ExperimentLocations, targets: list[str]) -> bool:
    """Whether a trial of the search failed writing to a full volume (its checkpoint, its events)."""
    from search.analysis import read_split
    from search.disk_space import is_disk_full

    return any(is_disk_full(r.error or "") for t in targets if places.rounds(t) for r in read_split(places, t))


def final_phase(cfg: ExperimentConfig, places: ExperimentLocations) -> FinalPhase | None:
    """The search's own final training when `final.seeds` asks for it (checked before any search)."""
    if not cfg.final.seeds:
        return None
    from search.final_phase import FinalPhase

    if not places.folder.is_local:
        raise UserError(f"final.seeds: final training in the search's command writes its runs into a folder; "
                        f"{places.folder} is object storage (train a copy with python train.py, or search to "
                        "a shared filesystem)")
    return FinalPhase(cfg, places)


def conclude_final(cfg: ExperimentConfig, final: FinalPhase, resume_command: str) -> int:
    """The protocol's table over every split whose final runs were queued; 1 if a run failed."""
    from search.protocol import Protocol, conclude

    if not final.runs:
        return 0
    targets = [t for t in cfg.data.targets if t in final.runs]
    protocol = Protocol(cfg.output.name, final.final_dir, targets, final.methods, list(cfg.final.seeds),
                        cfg.eval.objective, [run for t in targets for run in final.runs[t]])
    return conclude(protocol, final.results, resume_command)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.resume or args.export_only or args.rebuild_study:
        cfg = saved_config(args)
    else:
        cfg = load_config(args.config, cli_overrides(args))
    if args.dry_run:
        dry_run(cfg)
        return 0
    if is_oracle(cfg.eval.objective):
        print("WARNING: objective oracle_target_acc selects on target TEST labels (oracle); "
              "every export is marked as such.", file=sys.stderr)
    if args.export_only:
        export(cfg)
        return 0
    if args.rebuild_study:
        from search.study_rebuild import rebuild_experiment

        print("\n".join(rebuild_experiment(ExperimentLocations.of(cfg), cfg)))
        export(cfg)
        return 0

    from lacmfer.data.loaders import cache_every_list
    from lacmfer.method.pretrained import ensure_pretrained
    from lacmfer.run.lifecycle import state_file_bytes
    from search.disk_space import check_space, disk_full_error, is_disk_full
    from search.driver import run_search
    from trainables.ray_session import check_reachable

    if cfg.resources.device == "cuda" and cfg.resources.gpu == 0:
        # A trial trains on the GPU Ray assigns it (lacmfer/run/device.py); with none reserved,
        # every trial would fail.
        raise UserError("resources.device: 'cuda' but resources.gpu is 0, so no trial reserves a GPU; "
                        "set resources.gpu (e.g. 0.25, or --gpus-per-trial) or resources.device: auto")

    check_reachable(args.address)  # a mistyped cluster address, before minutes of data preparation
    places = ExperimentLocations.of(cfg)
    final = final_phase(cfg, places)  # its settings checked before the data preparation too
    # Before Ray starts: SynthFER is generated once, and a bad list or image is one
    # `file:line` error (exit 2) instead of a traceback in every trial; trials then open
    # the caches built here.
    cache_every_list(cfg.data, workers=min(8, os.cpu_count() or 1))
    ensure_pretrained(cfg)  # download or train the trunk weights once, too
    resume_command = f"python tune.py --resume --name {cfg.output.name}" + (
        f" --results {cfg.output.results_dir}" if args.results else "")
    if places.folder.is_local and not args.resume:
        # Resumed searches have part of their checkpoints on disk already: not estimated again.
        check_space(places.folder.local_path(), cfg.search.num_samples * len(cfg.data.targets), state_file_bytes(cfg))
    try:
        outcomes = run_search(cfg, address=args.address, resume=args.resume, final=final)
        if any(o.error and is_disk_full(o.error) for o in outcomes):
            raise disk_full_error(places.folder, resume_command)
        summary = export(cfg, finished=[o.target for o in outcomes if o.finished])  # checkpoints pruned only there
        if trials_hit_a_full_disk(places, cfg.data.targets):  # --resume retries those trials
            raise disk_full_error(places.folder, resume_command)
    except KeyboardInterrupt:  # in the final phase (Tune handles it while trials run)
        print(f"\ninterrupted: continue with {resume_command}", file=sys.stderr)
        return 130
    except Exception as err:
        if is_disk_full(err):
            raise disk_full_error(places.folder, resume_command) from None
        raise
    # A split with no outcome never started (the search was stopped before its driver ran): unfinished too.
    unfinished = [o.target for o in outcomes if not o.finished]
    unfinished += [t for t in cfg.data.targets if t not in {o.target for o in outcomes}]
    # A split that finished with no usable trial (all failed or diverged) has no best config.
    no_result = [s for s in summary.splits if s.best is None and s.target not in unfinished]
    exp = places.folder
    print(f"\nresults:     {exp}")
    print(f"tensorboard: tensorboard --logdir {exp}")
    if final is None:
        print(f"final:       python train.py --experiment {exp} --seeds 0 1 2 --baseline source_only"
              + ("" if exp.is_local else "   (final training runs on a local copy of the experiment)"))
    if no_result and len(no_result) == len(summary.splits) and not unfinished:
        # Bad input that every trial found in its Ray worker ends the search as if found before Ray.
        from search.analysis import read_split

        trials = [record for split in no_result for record in read_split(places, split.target)]
        raise_bad_input_of_every_run(trials, where=f"in the trials' error.txt under {places.folder}")
    for split in no_result:
        counts = ", ".join(f"{n} {status}" for status, n in split.counts.items() if n)
        print(f"\nNO RESULT: split {split.target}: every trial failed or diverged ({counts}), no best config exported; "
              f"see {summary.summary} and each trial's error.txt under {places.split(split.target)}",
              file=sys.stderr)
    for outcome in outcomes:
        if outcome.error:
            print(f"\nSPLIT STOPPED: {outcome.target}: {outcome.error}", file=sys.stderr)
    if unfinished:
        print(f"\nNOT FINISHED: split(s) {', '.join(unfinished)} did not complete. Continue with: {resume_command}",
              file=sys.stderr)
    protocol_code = 0 if final is None else conclude_final(cfg, final, resume_command)
    if unfinished or no_result:
        return 1
    print("every split finished.")
    return protocol_code


if __name__ == "__main__":
    sys.exit(main())
