"""The GPU benchmark behind `bench/gpu.sh`: the paper-size step and a short search, one table.

Measures, on SynthFER images cached at the network's input size:

1. the training step at the paper size (width 1, 224 px, batch 128 + 128, full docs/METHOD.md §4
   augmentation, every loss active), fp32 and bf16 (autocast, channels-last): images
   per second of `Trainer.step()`, and where a step's time goes — data (drawing both
   uint8 batches and copying them to the GPU), augmentation, network (forward, backward
   and SGD with the supervised loss only) and losses (what the adaptation losses add) —
   each phase timed alone between device synchronisations;
2. the GPU memory one trial needs (the allocator's peak over the bf16 and fp32 steps);
3. trials per hour on a short search (`python tune.py`, one split, no early stopping)
   with 1, 2 and 4 trials sharing the GPU (`--gpus-per-trial 1, 0.5, 0.25`), from the
   search's wall clock, and the peak GPU memory `nvidia-smi` saw per trial.

    bash bench/gpu.sh            # on a machine with one GPU: under 8 minutes
    bash bench/gpu.sh --tiny     # the same code at a tiny size, on the CPU when there is no GPU

Prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's lacmfer, not an installed one

from lacmfer.config import config_from_dict  # noqa: E402
from lacmfer.data.synth import generate_synthfer  # noqa: E402
from lacmfer.run.trainer import Trainer  # noqa: E402

PAPER = {"width": 1.0, "global_blocks": [6, 3], "local_blocks": 2, "size": 224, "batch": 128}
TINY = {"width": 0.125, "global_blocks": [1, 1], "local_blocks": 1, "size": 48, "batch": 8}


def step_config(root: Path, size: dict, precision: str, device: str, workers: int) -> dict:
    return {
        "data": {"root": str(root), "image_size": size["size"], "batch_size": size["batch"], "num_workers": workers},
        "model": {"width": size["width"], "global_blocks": size["global_blocks"], "local_blocks": size["local_blocks"],
                  "channels_last": precision == "bf16"},
        # Thresholds at 0 and a step ramp: every loss term does its full work from step 0.
        "loss": {"threshold": 0.0, "ps_threshold": 0.0},
        "schedule": {"steps": 100_000, "cluster_ramp": "step"},
        # On the CPU (the --tiny check) one thread: OpenMP threads on a busy machine wait on each other.
        "resources": {"device": device, "precision": precision, "threads": 1 if device == "cpu" else None},
    }


def median_ms(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure_step(trainer: Trainer, repeats: int) -> dict[str, float]:
    """ms of each phase of a step, and of the whole `Trainer.step()`; peak memory in GiB."""
    cuda = trainer.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(3):  # warm-up: cuDNN autotuning, allocator, DataLoader workers
        trainer.step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(trainer.device)
    streams = (trainer.source_stream, trainer.target_stream)

    def data() -> list:
        return [(b.images.to(trainer.device, non_blocking=True), b.seed) for b in map(next, streams)]

    on_device = data()
    y_s = next(trainer.source_stream).labels.to(trainer.device)

    def augment() -> list:
        return [trainer._memory_format(trainer.augment(images, seed)) for images, seed in on_device]

    x = torch.cat(augment())
    n_s = x.shape[0] // 2

    def network() -> None:  # the trainer's forward (per-domain by default), source loss only
        source, _ = trainer._forward(x[:n_s], x[n_s:])
        loss = sum(F.cross_entropy(z, y_s) for z in (source.logits_g, source.logits_l))
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()

    def network_and_losses() -> None:
        source, target = trainer._forward(x[:n_s], x[n_s:])
        losses = trainer.method.losses(source, y_s, target, trainer.step_count)
        trainer.optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        trainer.optimizer.step()

    ms = {
        "data": median_ms(data, repeats, sync),
        "augmentation": median_ms(augment, repeats, sync),
        "network": median_ms(network, repeats, sync),
        "network + losses": median_ms(network_and_losses, repeats, sync),
    }
    # The whole step as training runs it: no synchronisation inside, so phases overlap.
    steps = max(repeats, 5)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    sync()
    ms["step"] = 1000 * (time.perf_counter() - start) / steps
    ms["losses"] = max(0.0, ms["network + losses"] - ms["network"])
    ms["memory_gib"] = torch.cuda.max_memory_allocated(trainer.device) / 2**30 if cuda else float("nan")
    return ms


class GpuMemoryPeak:
    """Polls nvidia-smi once a second for the most memory used on the GPU (MiB)."""

    def __init__(self) -> None:
        self.peak = float("nan")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=10, check=True).stdout
            except (OSError, subprocess.SubprocessError):
                return
            used = max(float(v) for v in out.split())
            self.peak = used if self.peak != self.peak else max(self.peak, used)

    def __enter__(self) -> GpuMemoryPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def short_search(root: Path, results: Path, size: dict, per_gpu: int, gpu: bool, steps: int) -> dict[str, float]:
    """Run `python tune.py` on one split with `2 · per_gpu` trials; wall clock and memory."""
    trials = 2 * per_gpu
    interval = max(1, steps // 2)
    sets = {
        "data.root": str(root), "data.synth": None, "data.image_size": size["size"], "data.batch_size": size["batch"],
        "data.num_workers": 2, "model.width": size["width"], "model.global_blocks": size["global_blocks"],
        "model.local_blocks": size["local_blocks"], "model.channels_last": True, "resources.precision": "bf16",
        "resources.threads": 2, "schedule.steps": steps, "eval.interval": interval,
        "eval.target_subset": 512, "eval.source_val_subset": 256,
        # No early stopping: every trial runs its whole (short) schedule; all that fit at once.
        "search.asha.grace_period": 2, "search.startup_trials": trials, "search.max_concurrent": per_gpu,
    }
    command = [sys.executable, str(REPO / "tune.py"), "--config", str(REPO / "configs/default.yaml"),
               "--address", "local",  # a Ray of its own, never another one running on the machine
               "--name", f"per_gpu_{per_gpu}", "--results", str(results), "--targets", "CK",
               "--num-samples", str(trials), "--cpus-per-trial", "2",
               "--gpus-per-trial", str(1 / per_gpu if gpu else 0)]
    command += [arg for key, value in sets.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with GpuMemoryPeak() as memory:
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO, check=False)
        wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"the search with {per_gpu} trial(s) per GPU failed (exit {done.returncode})")
    return {"trials": trials, "wall_s": wall, "trials_per_hour": 3600 * trials / wall,
            "memory_gib_per_trial": memory.peak / 1024 / per_gpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny network and batch (checks the script on a CPU)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats of each step phase")
    parser.add_argument("--search-steps", type=int, default=60, help="training steps of each search trial")
    parser.add_argument("--per-gpu", type=int, nargs="*", default=[1, 2, 4],
                        help="trials sharing the GPU in each short search (none: skip the searches)")
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    size = TINY if args.tiny else PAPER
    if gpu:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        root = Path(tmp) / "synthfer"
        generate_synthfer(root, scale="tiny", seed=0, progress=False)
        rows: list[tuple[str, str]] = []
        memory = []
        for precision in ("fp32", "bf16"):
            cfg = config_from_dict(step_config(root, size, precision, device, workers=4 if gpu else 0))
            trainer = Trainer(cfg, "Aff")
            ms = measure_step(trainer, args.repeats)
            memory.append(ms["memory_gib"])
            images = 2 * size["batch"]
            parts = ("data", "augmentation", "network", "losses")
            total = sum(ms[p] for p in parts)
            rows.append((f"step {precision}: images/s (`Trainer.step()`, {ms['step']:.0f} ms)",
                         f"{1000 * images / ms['step']:,.0f}"))
            shares = " / ".join(f"{100 * ms[p] / total:.0f} %" for p in parts)
            times = " / ".join(f"{ms[p]:.1f}" for p in parts)
            rows.append((f"step {precision}: share data / augmentation / network / losses", f"{shares} ({times} ms)"))
            del trainer
            if gpu:
                torch.cuda.empty_cache()
        rows.append(("GPU memory per trial, allocator peak (fp32 / bf16)",
                     " / ".join(f"{m:.1f} GiB" for m in memory)))
        for per_gpu in args.per_gpu:
            run = short_search(root, Path(tmp) / "results", size, per_gpu, gpu, args.search_steps)
            detail = (f"{run['trials']} trials of {args.search_steps} steps in {run['wall_s']:.0f} s; "
                      f"nvidia-smi peak {run['memory_gib_per_trial']:.1f} GiB/trial")
            rows.append((f"search, {per_gpu} trial(s) per GPU (gpu {1 / per_gpu:g}): trials/hour",
                         f"{run['trials_per_hour']:,.0f} ({detail})"))

    name = torch.cuda.get_device_name() if gpu else "CPU (no GPU: a check of the script, not a GPU figure)"
    scale = "tiny size (--tiny)" if args.tiny else "paper size: width 1, 224 px, batch 128 + 128"
    print(f"\n{name}; {scale}; torch {torch.__version__}\n")
    print("| measurement | value |\n|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")
    print(f"| whole benchmark, wall clock | {time.perf_counter() - began:.0f} s |")


if __name__ == "__main__":
    main()
