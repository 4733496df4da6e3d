"""The final-training protocol: each split's best config trained on every seed beside each
baseline, which of its runs are over, and its table.

`python train.py` builds a `Protocol` from exported configs and trains it; `python tune.py
--final-seeds ...` (`final:` in the config) trains each split's share as soon as its search
ends, in that split's driver (`search.driver`), and concludes the whole protocol at the end.
Both go through the functions here, so a run is planned, kept, reported and counted one way.
Run folders: `<experiment>/final/<target>/<method>/seed<k>/` (`lacmfer.run.final_run`); the
table: `final/report.md`, `report.parquet` (`lacmfer.reports.final_report`). No Ray here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lacmfer.config import ExperimentConfig, load_config
from lacmfer.errors import UserError
from lacmfer.names import METHOD_NAMES, RunStatus
from lacmfer.reports.final_report import write_report
from lacmfer.run.final_run import FinalResult, FinalRun, read_result
from lacmfer.run.outcome import raise_bad_input_of_every_run
from search.disk_space import disk_full_error, is_disk_full

FINAL_DIR = "final"


@dataclass
class Protocol:
    """Every run of one final training, and what its report needs."""

    name: str
    final_dir: Path
    targets: list[str]
    methods: list[str]
    seeds: list[int]
    objective: str
    runs: list[FinalRun]


def protocol_methods(method: str, baselines: Sequence[str], option: str) -> list[str]:
    """The configs' own method, then each baseline once; `option` names where they were given."""
    for baseline in baselines:
        if baseline not in METHOD_NAMES:
            raise UserError(f"{option} {baseline}: unknown adaptation method (expected one of "
                            f"{', '.join(METHOD_NAMES)}; a plugin's method needs the plugin in the configs' plugins)")
        if baseline == method:
            raise UserError(f"{option} {baseline}: that is the configs' own method (loss.adaptation)")
    return [method, *dict.fromkeys(baselines)]


def protocol_runs(configs: Sequence[tuple[str, ExperimentConfig]], methods: Sequence[str], seeds: Sequence[int],
                  final_dir: Path) -> list[FinalRun]:
    """Target × method × seed, in that order: each config with the seed and the method set."""
    runs = []
    for target, cfg in configs:
        for method in methods:
            for seed in seeds:
                run_cfg = cfg.with_values({"seed": seed, "loss.adaptation": method},
                                          source=f"{target}/{method}/seed{seed}")
                runs.append(FinalRun(target, method, seed, run_cfg, final_dir / target / method / f"seed{seed}"))
    return runs


def supersede_stale_runs(runs: Sequence[FinalRun]) -> list[Path]:
    """Move aside the folder of every run that trained another config than it would now (a
    resumed search whose added trials found a new best): to `<seed folder>.superseded-<unix time>`,
    kept for the record; the run then trains afresh. Returns the folders moved."""
    moved = []
    for run in runs:
        saved = run.run_dir / "config.yaml"
        if saved.exists() and _trained(load_config(saved)) != _trained(run.config):
            aside = run.run_dir.with_name(f"{run.run_dir.name}.superseded-{int(time.time())}")
            run.run_dir.rename(aside)
            moved.append(aside)
    return moved


def _trained(cfg: ExperimentConfig) -> dict:
    # A run's task sets its torch threads from its CPUs (`with_threads`): not part of what it trains.
    return {section: values for section, values in cfg.to_dict().items() if section != "resources"}


def finished_results(runs: Sequence[FinalRun]) -> tuple[dict[str, FinalResult], list[FinalRun]]:
    """The results of the runs that are over (their metrics.json), by run name, and the runs still to train."""
    results, todo = {}, []
    for run in runs:
        result = read_result(run.run_dir)
        if result is None:
            todo.append(run)
        else:
            results[run.name] = result
    return results, todo


def conclude(protocol: Protocol, results: Mapping[str, FinalResult], resume: str) -> int:
    """Write the protocol's table from every run's result and say how it ended: 0, or 1 when a
    run failed (`resume` retries it). A full volume and bad input found by every run raise, as
    the command's one-line errors."""
    ordered = [results[r.name] for r in protocol.runs]
    # A run that failed writing to a full volume: one line with the free space and the way on.
    if any(r.status is RunStatus.FAILED and is_disk_full(r.error or "") for r in ordered):
        raise disk_full_error(protocol.final_dir, resume)
    raise_bad_input_of_every_run(ordered, where="in the lines above")  # found by every run: exit 2, not N failures
    path = write_report(protocol.final_dir, protocol.name, ordered, protocol.targets, protocol.methods,
                        protocol.seeds, protocol.objective)
    print(path.read_text(encoding="utf-8"))
    print(f"report: {path}   tensorboard --logdir {protocol.final_dir}")
    diverged = [r.name for r in ordered if r.status is RunStatus.DIVERGED]
    if diverged:
        print(f"warning: diverged runs (NaN/inf loss): {', '.join(diverged)}", file=sys.stderr)
    failed = [r.name for r in ordered if r.status is RunStatus.FAILED]
    if failed:
        print(f"FAILED runs: {', '.join(failed)}; retry them with {resume}", file=sys.stderr)
        return 1
    return 0
