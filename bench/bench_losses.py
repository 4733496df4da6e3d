"""Benchmark: the adaptation loss of one training step, vectorised vs straightforward loops.

Times forward + backward of everything docs/METHOD.md §3 adds on top of the supervised loss, for
both views g and l: sample-level + cluster-level alignment, the cross-view MCC and the
multi-view pseudo-label loss. `lacmfer.method.losses` (with `inter_domain_alignment`, one
distance matrix per view for both alignment terms, as the trainer calls it) is compared
with the loop implementation of `tests/reference_losses.py` (per-sample loops reading
values with `.item()`, one MMD call per class pair) on the same inputs, side by side in
one process, on CPU. Both compute squared distances as ‖a‖² + ‖b‖² − 2a·b, so the ratio
measures the loops and host reads removed, not a better distance formula; the B²·D
products both must do bound it as the batch grows.

    python bench/bench_losses.py [--batches 32 64 128] [--dim 1024] [--repeats 15] [--threads 1]

Prints a markdown table: median milliseconds per step for each implementation and the
speed-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lacmfer.method import losses  # noqa: E402
from tests import reference_losses  # noqa: E402

NUM_CLASSES = 7
THRESHOLD = 0.4  # default confidence threshold
PS_THRESHOLD = 0.9  # default pseudo-label threshold
CLUSTER_WEIGHT = 0.02  # hyper_inter at full ramp


def make_inputs(batch: int, dim: int, seed: int) -> dict[str, Tensor]:
    """Features and logits resembling a mid-training step: most sources confident and
    right, targets mixed, the two views mostly agreeing."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=gen)
    inputs: dict[str, Tensor] = {"labels_s": labels}
    for view in ("g", "l"):
        logits_s = torch.randn(batch, NUM_CLASSES, generator=gen) * 1.5
        logits_s[torch.arange(batch), labels] += 3.0
        inputs[f"logits_s_{view}"] = logits_s
        inputs[f"feat_s_{view}"] = torch.rand(batch, dim, generator=gen)
        inputs[f"feat_t_{view}"] = torch.rand(batch, dim, generator=gen) + 0.1
    shared = torch.randn(batch, NUM_CLASSES, generator=gen) * 3.0
    inputs["logits_t_g"] = shared + torch.randn(batch, NUM_CLASSES, generator=gen)
    inputs["logits_t_l"] = shared + torch.randn(batch, NUM_CLASSES, generator=gen)
    return inputs


def reference_alignment(*args: Tensor | float) -> tuple[Tensor, Tensor]:
    """(L_sid, L_cid) of one view from the loop implementation."""
    return reference_losses.sample_level_alignment(*args), reference_losses.cluster_level_alignment(*args)


IMPLEMENTATIONS: dict[str, tuple[Callable[..., tuple[Tensor, Tensor]], ModuleType]] = {
    "loops": (reference_alignment, reference_losses),
    "vectorised": (losses.inter_domain_alignment, losses),
}


def adaptation_loss(name: str, x: dict[str, Tensor]) -> Tensor:
    """Σ_v (L_sid^v + λ·L_cid^v) + L_mcc + L_mvv with the implementation `name`."""
    align, impl = IMPLEMENTATIONS[name]
    total = torch.zeros(())
    for view in ("g", "l"):
        sample, cluster = align(
            x[f"feat_s_{view}"], x[f"feat_t_{view}"], x[f"logits_s_{view}"], x[f"logits_t_{view}"],
            x["labels_s"], THRESHOLD,
        )
        total = total + sample + CLUSTER_WEIGHT * cluster
    total = total + impl.cross_view_mcc(x["logits_t_g"].softmax(1), x["logits_t_l"].softmax(1))
    mvv, _ = impl.multiview_pseudo_label_loss(x["logits_t_g"], x["logits_t_l"], PS_THRESHOLD)
    return total + mvv


def time_steps(x: dict[str, Tensor], repeats: int) -> dict[str, tuple[float, float]]:
    """Per implementation: (median ms of forward + backward, loss value).

    The implementations alternate within each repeat, so a load change on a shared
    machine hits both alike.
    """
    leaves = {k: (v.clone().requires_grad_() if v.is_floating_point() else v) for k, v in x.items()}

    def step(name: str) -> float:
        for v in leaves.values():
            v.grad = None
        loss = adaptation_loss(name, leaves)
        loss.backward()
        return loss.item()

    values = {name: step(name) for name in IMPLEMENTATIONS}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
    for _ in range(repeats):
        for name in IMPLEMENTATIONS:
            start = time.perf_counter()
            step(name)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: (statistics.median(times[name]), values[name]) for name in IMPLEMENTATIONS}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128], help="per-domain batch sizes")
    parser.add_argument("--dim", type=int, default=1024, help="feature dimension")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per cell (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU, {args.threads} thread(s), feature dim {args.dim}, "
          f"{NUM_CLASSES} classes, median of {args.repeats}, forward + backward, both views\n")
    print("| batch (per domain) | loops (ms) | vectorised (ms) | speed-up |")
    print("|---:|---:|---:|---:|")
    for batch in args.batches:
        x = make_inputs(batch, args.dim, seed=batch)
        result = time_steps(x, args.repeats)
        (ref_ms, ref_value), (our_ms, our_value) = result["loops"], result["vectorised"]
        # Same inputs, same losses: a mismatch means the comparison is meaningless.
        if abs(ref_value - our_value) > 1e-3 * max(1.0, abs(ref_value)):
            raise SystemExit(f"batch {batch}: loss mismatch, loops {ref_value} vs vectorised {our_value}")
        print(f"| {batch} | {ref_ms:.1f} | {our_ms:.1f} | {ref_ms / our_ms:.1f}× |")


if __name__ == "__main__":
    main()
