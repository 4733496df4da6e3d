"""What one LA-CMFER training step costs beyond the network itself, on CPU.

Side by side in one process, on the same model and the same fixed batch:
  network         — forward + backward of the network on both domains: the supervised loss
                    of the source batch plus a loss-free stand-in on the target batch (the
                    log-sum-exp of its logits), so the target half of the backward pass,
                    which every adaptation method pays, counts as the network's cost
  network + SGD   — the same and the optimiser step
  + losses        — the same plus every adaptation loss of docs/METHOD.md §3 (both views)
  trainer.step()  — the above plus drawing and augmenting the two batches
  draw + augment  — drawing both batches and augmenting them alone (for the breakdown)

    python bench/bench_step.py [--width 0.25] [--size 64] [--batch 32] [--repeats 30]

Prints a markdown table (median ms per step), the ratio to the network alone, the share
the adaptation losses add, (+ losses − network + SGD) / network, and last the line
`step/network: X.XX`, trainer.step() over the network's forward + backward.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lacmfer, not an installed one

from lacmfer.config import config_from_dict  # noqa: E402
from lacmfer.data.synth import generate_synthfer  # noqa: E402
from lacmfer.run.trainer import Trainer  # noqa: E402

CLOCKS = {
    # CPU time of this process: on a machine shared with other jobs it leaves out the time
    # the scheduler gives to them, which wall-clock time counts at random (1 torch thread,
    # no loader workers: all the work is this process's).
    "process": time.process_time,
    "wall": time.perf_counter,
}


def interleaved_median_ms(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 3,
                          clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median ms of each function, alternating them every repeat so load changes hit all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32, help="per domain (source and target each)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=list(CLOCKS), default="process",
                        help="process CPU time (default; steady on a shared machine) or wall-clock time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synthfer"
        generate_synthfer(root, scale="tiny", seed=0, progress=False)
        cfg = config_from_dict({
            "data": {"root": str(root), "image_size": args.size, "batch_size": args.batch, "num_workers": 0},
            "model": {"width": args.width, "global_blocks": [2, 1], "local_blocks": 1},
            # Thresholds at 0 and a step ramp: every loss term does its full work from step 0.
            "loss": {"threshold": 0.0, "ps_threshold": 0.0},
            "schedule": {"steps": 10_000, "cluster_ramp": "step"},
            "resources": {"threads": args.threads},
        })
        trainer = Trainer(cfg, "RAF")
        x_s, y_s = trainer._draw(trainer.source_stream)
        x_t, _ = trainer._draw(trainer.target_stream)
        model = trainer.model

        def network() -> None:  # the trainer's forward (per-domain by default), both domains back-propagated
            model.zero_grad(set_to_none=True)
            source, target = trainer._forward(x_s, x_t)
            supervised = sum(F.cross_entropy(z, y_s, label_smoothing=0.1) for z in (source.logits_g, source.logits_l))
            # The cheapest term that reaches every target activation: the losses' own work stays out.
            (supervised + sum(z.logsumexp(1).mean() for z in (target.logits_g, target.logits_l))).backward()

        def network_sgd() -> None:
            network()
            trainer.optimizer.step()

        def with_losses() -> None:
            source, target = trainer._forward(x_s, x_t)
            losses = trainer.method.losses(source, y_s, target, trainer.step_count)
            trainer.optimizer.zero_grad(set_to_none=True)
            losses.total.backward()
            trainer.optimizer.step()

        def draw_and_augment() -> None:
            trainer._draw(trainer.source_stream)
            trainer._draw(trainer.target_stream)

        timed = interleaved_median_ms(
            {"network": network, "network + SGD": network_sgd, "+ losses": with_losses, "trainer.step()": trainer.step,
             "draw + augment": draw_and_augment},
            args.repeats,
            clock=CLOCKS[args.clock],
        )
        rows = list(timed.items())

    base = rows[0][1]
    print(f"width {args.width}, {args.size} px, batch {args.batch}+{args.batch}, {args.threads} thread(s), "
          f"median of {args.repeats}, {args.clock} time")
    print("| step | ms | × network |\n|---|---:|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} | {ms / base:.2f} |")
    added = (rows[2][1] - rows[1][1]) / base
    print(f"\nthe adaptation losses add {100 * added:.1f} % to the network's forward + backward")
    print(f"step/network: {rows[3][1] / base:.2f}")


if __name__ == "__main__":
    main()
