"""A simulated many-GPU cluster kept busy: splits in turn with √n trials at once (before) against
every split at once with trials from the cluster's slots (after). One markdown table.

A local Ray cluster of several nodes declares logical GPUs (`ray.cluster_utils.Cluster`,
its own raylets on loopback); trials ask for a fraction of one (default 0.25 GPU: four
trials per GPU) and train on the CPU, since torch sees no GPU there (lacmfer/run/device.py).
Each mode runs `python tune.py --address <cluster>` on the same config: the real
trainable, tiny SynthFER trials, ASHA, one Optuna study per split. "before" is the search
code of commit 79d421d (splits one after another, ⌊√num_samples⌋ trials at once), taken
from git into a temporary folder; "after" is this checkout.

Measured per mode and search seed, from Tune's own records (each trial's result.json,
the same for both modes): slot occupancy (busy slot-seconds ÷ available slot-seconds
between the first trial's start and the last trial's end; a trial is busy from its
trainable's start to its last report, so worker start-up counts as idle; Tune's
timestamps are whole seconds, so the peak can read a trial or two high), the search's wall
time (first trial start to last trial end), the command's, and the time from the command's
start to the first trial's, and the best objective per split (trials.parquet).

    python bench/bench_cluster.py                       # 2 nodes × 4 GPUs = 32 slots, 6 splits × 16 trials, 3 seeds
    python bench/bench_cluster.py --nodes 2 --gpus-per-node 1 --splits 3 --trials 8 --seeds 0   # a 2-core machine
    python bench/bench_cluster.py --device-step-s 1 --steps 20    # 32 slots on a 2-core machine, emulated accelerator
    python bench/bench_cluster.py --modes two-commands one-command --final-seeds 0 1 2   # the whole protocol

The protocol modes time the whole protocol (search, then each split's best config on the
final seeds beside source-only): `tune.py` followed by `train.py --experiment` against one
`tune.py --final-seeds`; a final run is busy from its training's start to its metrics.json
(its `time_s` before the file's time), so the slot accounting covers trials and final runs alike.

Trial processes are real: 32 slots need about 13 GiB of memory and, to show the wall-time
gain, about as many cores; on fewer cores the trials run CPU-bound and both modes are
limited by the cores, not by the scheduling. `--device-step-s S` emulates an accelerator
instead (bench/emulated_accelerator.py, a plugin both modes load through the config's
`plugins:` key): every training step of the real method also sleeps S seconds, its CPU idle
as on a GPU, on a smaller image (32 px) so the CPU part of a step is small.

Where idle slot-seconds go, from the same records: "ramp-up" before the first `slots`
trials have all started (worker start-up of the first wave), "tail" after the last trial
started (no trial left to start), "between" the rest (a slot waiting for its next trial:
the driver's latency, proposing, a worker starting or being reused; in "before" mostly the
slots its √n limit leaves empty).

Two references from the same trials' lengths say what the scheduling could reach at all:
"without overheads" replays the trials in the order they started, each on the first free
slot, with nothing between them (the tail stays: it is what a fixed number of trials
costs); "at best" is the least time any schedule of these trials could take, knowing every
length in advance (`makespan_bound`). Occupancy cannot exceed "at best".
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's lacmfer, not an installed one

from lacmfer.names import BUILTIN_DOMAIN_NAMES as DOMAINS

BEFORE_COMMIT = "79d421d"
EMULATOR = REPO / "bench" / "emulated_accelerator.py"
DEVICE_STEP_ENV = "LACMFER_EMULATED_DEVICE_STEP_S"  # read by EMULATOR in every process
#: The whole protocol (search, each split's best config on every final seed beside source-only):
#: `tune.py` then `train.py --experiment` against `tune.py --final-seeds` (this checkout both).
PROTOCOL_MODES = ("two-commands", "one-command")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=2, help="Ray nodes of the simulated cluster")
    p.add_argument("--gpus-per-node", type=int, default=4, help="logical GPUs per node")
    p.add_argument("--gpu-per-trial", type=float, default=0.25)
    p.add_argument("--splits", type=int, default=6, choices=range(1, 7), metavar="1..6")
    p.add_argument("--trials", type=int, default=16, help="trials per split")
    p.add_argument("--steps", type=int, default=40, help="training steps of a full trial")
    p.add_argument("--evaluations", type=int, default=4, help="evaluations of a full trial (ASHA's rungs)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="search seeds")
    p.add_argument("--modes", nargs="+", default=["before", "after"], choices=["before", "after", *PROTOCOL_MODES],
                   help="before/after: the search alone; two-commands/one-command: the whole protocol, "
                        "tune.py then train.py against tune.py --final-seeds")
    p.add_argument("--final-seeds", type=int, nargs="+", default=[0, 1, 2], help="the protocol modes' final seeds")
    p.add_argument("--workdir", type=Path, help="keep data and experiments here (default: a temporary folder)")
    p.add_argument("--device-step-s", type=float, help="emulate an accelerator: each training step also sleeps "
                   "this long (bench/emulated_accelerator.py); default: trials CPU-bound")
    args = p.parse_args()
    if args.nodes < 1 or args.gpus_per_node < 1 or args.trials < 1 or args.steps < args.evaluations:
        p.error("--nodes, --gpus-per-node, --trials must be ≥ 1 and --steps ≥ --evaluations")
    return args


def bench_config(args: argparse.Namespace, data: Path, seed: int) -> dict:
    """Tiny trials (the tests' size) of the real search: ASHA cuts at every evaluation.

    With an emulated accelerator: its method (the same LA-CMFER, plus the device's time per
    step) and 32-px images, so a step's CPU part is small beside the device's time."""
    interval = args.steps // args.evaluations
    emulated = args.device_step_s is not None
    config = {
        "data": {"root": str(data), "synth": {"scale": "tiny", "seed": 0}, "targets": DOMAINS[:args.splits],
                 "image_size": 32 if emulated else 48, "batch_size": 16, "eval_batch_size": 64, "num_workers": 0},
        "model": {"width": 0.125, "global_blocks": [1, 1], "local_blocks": 1},
        "schedule": {"steps": interval * args.evaluations, "lr_decay_steps": interval * args.evaluations},
        "eval": {"interval": interval},
        "search": {"num_samples": args.trials, "seed": seed, "startup_trials": max(2, args.trials // 4),
                   "asha": {"grace_period": 1, "reduction_factor": 2}},
        "resources": {"cpu": 1, "gpu": args.gpu_per_trial, "threads": 1},
    }
    if emulated:
        config["plugins"] = ["bench.emulated_accelerator"]
        config["loss"] = {"adaptation": "lacmfer_emulated_accelerator"}
    return config


def before_tree(workdir: Path) -> Path:
    """The search code of BEFORE_COMMIT, extracted from git (read-only for the repository),
    with this checkout's accelerator emulator beside its benchmarks: both modes load the same plugin."""
    tree = workdir / f"code-{BEFORE_COMMIT}"
    if not tree.exists():
        archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE_COMMIT], check=True,
                                 capture_output=True).stdout
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(tree, filter="data")
    # Its modules had the flat layout of before the rooms (lacmfer.methods, lacmfer.model).
    plugin = EMULATOR.read_text().replace("lacmfer.method.methods", "lacmfer.methods")
    (tree / "bench" / EMULATOR.name).write_text(plugin.replace("lacmfer.method.model", "lacmfer.model"))
    return tree


def trial_spans(exp: Path) -> list[tuple[str, float, float]]:
    """(split, start, end) of every trial: its trainable's start to its last report (result.json)."""
    spans = []
    for result in exp.glob("*/**/result.json"):  # <split>/<trial>/ and <split>/round-<k>/<trial>/
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if rows:
            last = rows[-1]
            split = result.relative_to(exp).parts[0]
            spans.append((split, last["timestamp"] - last["time_total_s"], float(last["timestamp"])))
    return spans


def occupancy(spans: list[tuple[str, float, float]], slots: int) -> tuple[float, float, float, int]:
    """(occupancy, mean trials at once, span seconds, peak trials at once)."""
    first, last = min(s for _, s, _ in spans), max(e for _, _, e in spans)
    busy = sum(e - s for _, s, e in spans)
    edges = sorted([(s, 1) for _, s, _ in spans] + [(e, -1) for _, _, e in spans])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return busy / (slots * (last - first)), busy / (last - first), last - first, peak


def idle_breakdown(spans: list[tuple[str, float, float]], slots: int) -> dict[str, float]:
    """Idle slot-seconds as fractions of the available ones (first start to last end), by phase:
    ramp-up (until the first `slots` trials have started), tail (after the last start), between."""
    starts = sorted(s for _, s, _ in spans)
    first, last = starts[0], max(e for _, _, e in spans)
    bounds = {"ramp-up": (first, starts[min(slots, len(starts)) - 1]),
              "between": (starts[min(slots, len(starts)) - 1], starts[-1]), "tail": (starts[-1], last)}

    def idle(a: float, b: float) -> float:
        busy = sum(max(0.0, min(e, b) - max(s, a)) for _, s, e in spans)
        return slots * (b - a) - busy

    return {phase: idle(a, b) / (slots * (last - first)) for phase, (a, b) in bounds.items()}


def makespan_bound(durations: list[float], slots: int) -> float:
    """The least time any schedule of these trials on `slots` slots can take, each trial on one
    slot from start to end, with nothing between them and every length known in advance:
    the work spread evenly (sum ÷ slots), or, with the lengths sorted longest first
    (d_1 ≥ d_2 ≥ ...), (k + 1)·d_{k·slots+1} for every k, since some slot runs k + 1 of
    the k·slots + 1 longest trials."""
    d = sorted(durations, reverse=True)
    return max(sum(d) / slots, *((k + 1) * d[k * slots] for k in range(math.ceil(len(d) / slots))))


def replay_makespan(spans: list[tuple[str, float, float]], slots: int) -> float:
    """The same trials in the order they started, each on the first slot to free up, with
    nothing between them: what the run would take without start-up, hand-offs or any other
    overhead, its tail included."""
    free = [0.0] * slots
    for _, start, end in sorted(spans, key=lambda span: span[1]):
        heapq.heappush(free, heapq.heappop(free) + end - start)
    return max(free)


def final_spans(exp: Path) -> list[tuple[str, float, float]]:
    """(split, start, end) of every final run: its metrics.json written at its end, less its
    training time (`time_s`), as a trial's span is its trainable's time up to its last report."""
    spans = []
    for metrics in exp.glob("final/*/*/seed*/metrics.json"):
        run = json.loads(metrics.read_text())
        end = metrics.stat().st_mtime
        spans.append((run["target"], end - run["time_s"], end))
    return spans


def best_per_split(exp: Path) -> dict[str, float]:
    import pyarrow.parquet as pq

    best: dict[str, float] = {}
    for row in pq.read_table(exp / "trials.parquet").to_pylist():
        value = row["objective_best"]
        if row["status"] == "completed" and value is not None:
            best[row["target"]] = max(best.get(row["target"], float("-inf")), value)
    return best


def run_mode(mode: str, code: Path, config: Path, address: str, results: Path, name: str,
             final_seeds: list[int]) -> float:
    """The mode's command(s) on the cluster; their wall time, end to end."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(code)}
    seeds = [str(s) for s in final_seeds]
    commands = [[sys.executable, str(code / "tune.py"), "--config", str(config), "--address", address,
                 "--results", str(results), "--name", name]]
    if mode == "one-command":
        commands[0] += ["--final-seeds", *seeds, "--baseline", "source_only"]
    elif mode == "two-commands":
        commands.append([sys.executable, str(code / "train.py"), "--experiment", str(results / name), "--seeds",
                         *seeds, "--baseline", "source_only", "--address", address, "--no-progress"])
    began = time.monotonic()
    log = []
    for command in commands:
        proc = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True, check=False)
        log.append(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            (results / f"{name}.log").write_text("\n".join(log))
            sys.exit(f"{mode}: {Path(command[1]).name} exited {proc.returncode}; see {results / f'{name}.log'}")
    (results / f"{name}.log").write_text("\n".join(log))
    return time.monotonic() - began


def main() -> int:
    import yaml
    from ray.cluster_utils import Cluster

    args = parse_args()
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a loopback cluster this process starts and stops
    if args.device_step_s is not None:  # before the nodes start: their workers inherit it
        os.environ[DEVICE_STEP_ENV] = str(args.device_step_s)
    slots = int(args.nodes * args.gpus_per_node / args.gpu_per_trial + 1e-9)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        workdir = (args.workdir or Path(tmp)).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        data = workdir / "synthfer-tiny"  # generated by the first tune.py (data.synth)
        codes = {"before": before_tree(workdir) if "before" in args.modes else None, "after": REPO,
                 **dict.fromkeys(PROTOCOL_MODES, REPO)}
        per_node = int(args.gpus_per_node / args.gpu_per_trial + 1e-9)  # logical CPUs: one per slot
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": per_node, "num_gpus": args.gpus_per_node})
        for _ in range(args.nodes - 1):
            cluster.add_node(num_cpus=per_node, num_gpus=args.gpus_per_node)
        rows = []
        try:
            for seed in args.seeds:
                config = workdir / f"bench-seed{seed}.yaml"
                config.write_text(yaml.safe_dump(bench_config(args, data, seed)))
                for mode in args.modes:
                    launched = time.time()
                    name = f"{mode}-seed{seed}-{int(launched)}"
                    wall = run_mode(mode, codes[mode], config, cluster.address, workdir, name, args.final_seeds)
                    exp = workdir / name
                    spans = trial_spans(exp) + final_spans(exp)
                    occ, mean, span, peak = occupancy(spans, slots)
                    idle = idle_breakdown(spans, slots)
                    busy = sum(end - start for _, start, end in spans)
                    # What the same trials would reach: in their own order without overheads, and at best.
                    replay = busy / (slots * replay_makespan(spans, slots))
                    bound = busy / (slots * makespan_bound([end - start for _, start, end in spans], slots))
                    # Before the search's span: tune.py's start-up, its driver processes, the first workers.
                    to_first = min(s for _, s, _ in spans) - launched
                    rows.append({"mode": mode, "seed": seed, "occupancy": occ, "mean": mean, "peak": peak,
                                 "search_s": span, "wall_s": wall, "to_first_s": to_first, "idle": idle,
                                 "replay": replay, "bound": bound,
                                 "best": best_per_split(exp)})
                    print(f"{mode} seed {seed}: occupancy {occ:.2f}, {mean:.1f} at once (peak {peak}), "
                          f"search {span:.0f} s, command {wall:.0f} s ({to_first:.0f} s to the first trial); idle: "
                          + ", ".join(f"{k} {v:.2f}" for k, v in idle.items())
                          + f"; occupancy without overheads {replay:.2f}, at best {bound:.2f}", flush=True)
                    if (exp / "slots.json").exists():  # the driver's own record (after): worker start-up busy
                        own = json.loads((exp / "slots.json").read_text())[-1]
                        print(f"{mode} seed {seed}, the driver's slots.json: occupancy {own['occupancy']:.2f}, "
                              f"{own['mean']:.1f} at once (peak {own['peak']}), {own['span_s']:.0f} s", flush=True)
        finally:
            cluster.shutdown()
    print_table(args, slots, rows)
    return 0


def print_table(args: argparse.Namespace, slots: int, rows: list[dict]) -> None:
    def mean(mode: str, key: str) -> float:
        return statistics.mean(r[key] for r in rows if r["mode"] == mode)

    device = (f"emulated accelerator, {args.device_step_s} s a step" if args.device_step_s is not None
              else "CPU-bound trials")
    print(f"\n{args.nodes} node(s) × {args.gpus_per_node} logical GPUs, {args.gpu_per_trial} GPU per trial = "
          f"{slots} slots; {args.splits} splits × {args.trials} trials, {args.steps} steps "
          f"({args.evaluations} evaluations); {device}; seeds {' '.join(map(str, args.seeds))}; "
          f"{os.cpu_count()} cores\n")
    print("| mode | occupancy | mean at once | peak | search wall (s) | command wall (s) | to the first trial (s) "
          "| idle: ramp-up | idle: between | idle: tail | without overheads | at best |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for mode in args.modes:
        idle = [statistics.mean(r["idle"][k] for r in rows if r["mode"] == mode) for k in ("ramp-up", "between", "tail")]
        print(f"| {mode} | {mean(mode, 'occupancy'):.2f} | {mean(mode, 'mean'):.1f} | "
              f"{max(r['peak'] for r in rows if r['mode'] == mode)} | {mean(mode, 'search_s'):.0f} | "
              f"{mean(mode, 'wall_s'):.0f} | {mean(mode, 'to_first_s'):.0f} | " + " | ".join(f"{v:.2f}" for v in idle)
              + f" | {mean(mode, 'replay'):.2f} | {mean(mode, 'bound'):.2f} |")
    if {"before", "after"} <= set(args.modes):
        print(f"\nwall-time ratio before/after: search {mean('before', 'search_s') / mean('after', 'search_s'):.2f}×, "
              f"command {mean('before', 'wall_s') / mean('after', 'wall_s'):.2f}×")
    if set(PROTOCOL_MODES) <= set(args.modes):
        print(f"\nthe protocol's wall time, two commands / one command: "
              f"{mean('two-commands', 'wall_s') / mean('one-command', 'wall_s'):.2f}× (the spans: "
              f"{mean('two-commands', 'search_s') / mean('one-command', 'search_s'):.2f}×)")
    splits = DOMAINS[:args.splits]
    print("\nbest objective per split (mean ± sd over seeds; per seed in brackets)\n")
    print("| mode | " + " | ".join(splits) + " |")
    print("|---|" + "---|" * len(splits))
    for mode in args.modes:
        cells = []
        for split in splits:
            values = [r["best"].get(split, float("nan")) for r in rows if r["mode"] == mode]
            sd = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.3f}{sd} [{', '.join(f'{v:.3f}' for v in values)}]")
        print(f"| {mode} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
