"""Record LA-CMFER's landscape once: many configurations trained to the end, every evaluation kept.

    python bench/record_landscape.py                       # the recording in bench/landscape.parquet
    python bench/record_landscape.py --configs 8 --targets CK --out /tmp/l.parquet   # a small one

The recording the replay (`bench/replay_search.py`) and the landscape report
(`bench/landscape_report.py`) read, as HPOBench and LCBench record theirs. On the
embedded default (`configs/default.yaml`: SynthFER, its full 500-step budget) and per
split of `--targets`, it trains:

- `defaults`: the config's own values (the paper's loss weights);
- `source_only`: `loss.adaptation: source_only`;
- `sobol_NN`: `--configs` points (a power of two) of a scrambled Sobol sequence over the
  default search space (`lacmfer.hparams`), each unit coordinate mapped to its
  parameter's range (log scale for log-uniform ones, equal shares for choices; a
  conditional parameter keeps its coordinate and is set only where it applies);

each with training seed 0, and `defaults`, `source_only` and the first `--noise - 2`
Sobol points again with every other seed of `--seeds`, so the recording states its own
noise. `--confirm N`, once that is recorded, trains the N Sobol configurations of each
split with the highest final target accuracy again on every other seed, so a claim that
a configuration beats source-only rests on fresh runs, not on the best of 64 noisy ones. Every evaluation is kept: the step, the seconds since the run started (training
and evaluation), the objective, every validator and the target test accuracy (oracle;
read at every evaluation here, as final training does).

Resumable: each finished run is a JSON file under `--work`, and a run already there is
not trained again; the Parquet file is rebuilt from them after each run, with the
generator version, the commit and the command in its metadata. Runs go to `--jobs`
processes of one thread each.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from scipy.stats import qmc

from lacmfer.config import ExperimentConfig, ParamSpec, load_config
from lacmfer.files import write_text_atomic
from lacmfer.hparams import to_config_values
from search.spaces import SearchSpace

REPO = Path(__file__).resolve().parents[1]

#: Raised when what a recording holds changes meaning (columns, the mapping of Sobol points).
GENERATOR_VERSION = 1
DEFAULTS, SOURCE_ONLY = "defaults", "source_only"


@dataclass(frozen=True)
class RecordedConfig:
    """One configuration of the recording: its id and the search values it sets (search names)."""

    config_id: str
    values: dict[str, Any]
    adaptation: str = "lacmfer"


def unit_to_value(spec: ParamSpec, u: float) -> Any:
    """A unit coordinate in [0, 1) → the parameter's value over its range."""
    if spec.distribution == "loguniform":
        return math.exp(math.log(spec.low) + u * (math.log(spec.high) - math.log(spec.low)))
    if spec.distribution == "uniform":
        return spec.low + u * (spec.high - spec.low)
    if spec.distribution == "int":
        return int(min(spec.high, math.floor(spec.low + u * (spec.high - spec.low + 1))))
    if spec.distribution == "choice":
        return spec.choices[min(len(spec.choices) - 1, int(u * len(spec.choices)))]
    return spec.value


def sobol_configs(cfg: ExperimentConfig, count: int, seed: int = 0) -> list[RecordedConfig]:
    """`count` scrambled Sobol points over `cfg`'s search space, in the sequence's order."""
    space = SearchSpace(cfg.search.space)
    sampled = [n for n in space.order if space.space[n].distribution != "constant"]
    points = qmc.Sobol(len(sampled), scramble=True, seed=seed).random_base2(int(math.log2(count)))
    configs = []
    for k, point in enumerate(points):
        values: dict[str, Any] = {}
        for name, u in zip(sampled, point):
            if space.active(name, values):
                values[name] = unit_to_value(space.space[name], float(u))
        configs.append(RecordedConfig(f"sobol_{k:02d}", values))
    return configs


def plan(cfg: ExperimentConfig, targets: list[str], count: int, noise: int, seeds: list[int]
         ) -> list[tuple[str, RecordedConfig, int]]:
    """Every run of the recording as (target, configuration, seed), the most telling first."""
    anchors = [RecordedConfig(DEFAULTS, {}), RecordedConfig(SOURCE_ONLY, {}, "source_only")]
    sobol = sobol_configs(cfg, count)
    noisy = [*anchors, *sobol[: max(0, noise - len(anchors))]]
    first, others = seeds[0], seeds[1:]
    runs = [(t, c, first) for c in anchors for t in targets]
    runs += [(t, c, s) for c in anchors for s in others for t in targets]
    runs += [(t, c, first) for c in sobol for t in targets]
    runs += [(t, c, s) for c in noisy[len(anchors):] for s in others for t in targets]
    return runs


def confirmations(work: Path, runs: list[tuple[str, RecordedConfig, int]], count: int, seeds: list[int]
                  ) -> list[tuple[str, RecordedConfig, int]]:
    """The `count` Sobol configurations of each split with the highest final target accuracy at
    the first seed, trained again on every other seed: fresh draws, free of the selection that
    picked them (the winner's curse of the best of many noisy runs)."""
    extra = []
    for target in sorted({t for t, _, _ in runs}):
        scored = []
        for t, config, seed in runs:
            path = run_file(work, t, config, seed)
            if t == target and seed == seeds[0] and config.config_id.startswith("sobol_") and path.exists():
                history = json.loads(path.read_text())["history"]
                if history and math.isfinite(history[-1]["target_acc"]) and len(history) > 1:
                    scored.append((history[-1]["target_acc"], config))
        for _, config in sorted(scored, key=lambda sc: -sc[0])[:count]:
            extra += [(target, config, s) for s in seeds[1:]]
    return extra


def run_file(work: Path, target: str, config: RecordedConfig, seed: int) -> Path:
    return work / f"{target}__{config.config_id}__seed{seed}.json"


_DATA: dict[str, Any] = {}  # per worker process: each split's decoded data, loaded once


def train_one(job: tuple[str, str, str, RecordedConfig, int]) -> str:
    """Train one configuration to its end in this process; writes its JSON file."""
    config_path, work, target, config, seed = job
    import torch

    from lacmfer.data.loaders import load_split_data
    from lacmfer.run.lifecycle import Keeping, Run

    torch.set_num_threads(1)
    base = load_config(Path(config_path))
    values = {**to_config_values(config.values), "seed": seed, "loss.adaptation": config.adaptation}
    cfg = base.with_values(values, source=f"{config.config_id} seed {seed}")
    if target not in _DATA:
        _DATA[target] = load_split_data(cfg, target, progress=False)
    out = Path(work) / "tb" / f"{target}__{config.config_id}__seed{seed}"
    run = Run(cfg, target, out, {"config_id": config.config_id}, Keeping(test_every_evaluation=True),
              data=_DATA[target])
    history, started = [], time.perf_counter()
    for evaluation in run.evaluations():
        history.append({**evaluation.metrics, "time_s": time.perf_counter() - started})
    # Every searched parameter's value as trained (the anchors' too: their config's own values).
    space, trained = SearchSpace(cfg.search.space), cfg.searchable_values()
    values: dict[str, Any] = {}
    for name in space.order:
        if space.active(name, {**trained, **values}):
            values[name] = trained[name]
    result = {"target": target, "config_id": config.config_id, "seed": seed, "adaptation": config.adaptation,
              "values": values, "status": run.status, "history": history}
    path = run_file(Path(work), target, config, seed)
    write_text_atomic(path, json.dumps(result, allow_nan=True))
    return path.name


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_recording(work: Path, out: Path, metadata: dict[str, str]) -> int:
    """Every finished run's evaluations as one Parquet table (one row per evaluation); returns the runs."""
    rows: list[dict[str, Any]] = []
    runs = sorted(work.glob("*__*__seed*.json"))
    for path in runs:
        run = json.loads(path.read_text())
        for iteration, metrics in enumerate(run["history"], start=1):
            rows.append({"target": run["target"], "config_id": run["config_id"], "seed": run["seed"],
                         "adaptation": run["adaptation"], "status": run["status"],
                         "training_iteration": iteration, "final_evaluation": iteration == len(run["history"]),
                         **{f"param.{k}": v for k, v in run["values"].items()}, **metrics})
    table = pa.Table.from_pylist(rows)
    table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in metadata.items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, out)
    return len(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs/default.yaml")
    parser.add_argument("--targets", nargs="+", default=["CK", "RAF"])
    parser.add_argument("--configs", type=int, default=64, help="Sobol points (a power of two)")
    parser.add_argument("--noise", type=int, default=8, help="configurations trained on every seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--confirm", type=int, default=0,
                        help="then train the N best Sobol configurations of each split on every other seed")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=REPO / "results/landscape")
    parser.add_argument("--out", type=Path, default=REPO / "bench/landscape.parquet")
    args = parser.parse_args(argv)
    if args.configs < 1 or args.configs & (args.configs - 1):
        parser.error(f"--configs: {args.configs} is not a power of two (a Sobol sequence is balanced at 2^m)")

    cfg = load_config(args.config)
    args.work.mkdir(parents=True, exist_ok=True)
    runs = plan(cfg, args.targets, args.configs, args.noise, args.seeds)
    if args.confirm:
        if any(not run_file(args.work, *r).exists() for r in runs):
            parser.error("--confirm: record every planned run first (run without --confirm)")
        runs += [r for r in confirmations(args.work, runs, args.confirm, args.seeds) if r not in runs]
    todo = [r for r in runs if not run_file(args.work, *r).exists()]
    metadata = {"generator_version": str(GENERATOR_VERSION), "commit": _commit(), "noise": str(args.noise),
                "seeds": " ".join(map(str, args.seeds)), "confirm": str(args.confirm),
                "command": shlex.join(["python", "bench/record_landscape.py", *(argv or sys.argv[1:])]),
                "config": args.config.resolve().relative_to(REPO).as_posix()
                if args.config.resolve().is_relative_to(REPO) else str(args.config)}
    print(f"{len(runs)} runs, {len(runs) - len(todo)} recorded already, {len(todo)} to train", flush=True)

    # Data and the pretext trunk once, before the workers open them.
    from lacmfer.data.loaders import cache_every_list
    from lacmfer.method.pretrained import ensure_pretrained
    cache_every_list(cfg.data, workers=args.jobs)
    ensure_pretrained(cfg)

    jobs = [(str(args.config), str(args.work), t, c, s) for t, c, s in todo]
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.jobs, maxtasksperchild=None) as pool:
        for k, name in enumerate(pool.imap_unordered(train_one, jobs), start=1):
            done = write_recording(args.work, args.out, metadata)
            elapsed = time.perf_counter() - started
            print(f"[{k}/{len(jobs)}] {name}  ({done}/{len(runs)} in the recording, {elapsed / 60:.1f} min, "
                  f"~{elapsed / k * (len(jobs) - k) / 60:.0f} min left)", flush=True)
    done = write_recording(args.work, args.out, metadata)
    print(f"{args.out}: {done} runs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
