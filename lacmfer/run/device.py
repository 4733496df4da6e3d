"""Where a run trains: the torch device and, for a fractional GPU, its memory bound.

Two callers. Final training (`python train.py`) has no scheduler: `device: auto`
takes CUDA when torch sees it. A search trial is told by its scheduler which GPUs are its
own (the trainable reads Ray's assignment and passes it here; this module knows nothing
of Ray): it trains on exactly that GPU, or on the CPU when it was given none, because a
trial that reserved no GPU may still see every GPU of the node, and using one would
crowd the trials that did reserve it. A trial given a share of a GPU has its CUDA
allocator capped at that share of the memory, so a trial that outgrows it fails alone
instead of taking its neighbours down.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lacmfer.errors import UserError


@dataclass(frozen=True)
class Placement:
    """The device of a run and the share of its memory the process may allocate (None: all)."""

    device: torch.device
    memory_fraction: float | None = None

    def describe(self) -> str:
        share = f", {self.memory_fraction:g} of its memory" if self.memory_fraction is not None else ""
        return f"{self.device}{share}"


def local_placement(choice: str) -> Placement:
    """The device of a run outside a scheduler: `auto` uses CUDA when torch can see it."""
    if choice == "auto":
        return Placement(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("resources.device: 'cuda' was asked for but torch sees no CUDA device")
    return Placement(torch.device(choice))


def _visible_index(gpu_id: str) -> int:
    """The torch index of a GPU known by its node-wide id.

    The scheduler (Ray) restricts CUDA_VISIBLE_DEVICES to the GPUs it assigned, and torch
    numbers the visible GPUs from 0, so the index is the id's position in that list; with
    no such list torch numbers every GPU of the node by its id.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if visible and visible != "NoDevFiles":
        ids = [part.strip() for part in visible.split(",")]
        if gpu_id not in ids:
            raise RuntimeError(f"GPU {gpu_id} was assigned to this trial but CUDA_VISIBLE_DEVICES={visible} hides it")
        return ids.index(gpu_id)
    return int(gpu_id)


def scheduled_placement(choice: str, gpu_ids: Sequence[str | int], share: float) -> Placement:
    """The device of a search trial that the scheduler gave `gpu_ids` and `share` GPUs.

    - no GPU assigned: the CPU (`device: cuda` is then an error: nothing was reserved);
    - one GPU: that GPU, with `memory_fraction = share` when the share is below 1; when
      torch sees no CUDA device (logical GPUs declared to test the scheduling) the CPU,
      unless `device: cuda` insists;
    - several GPUs: refused, LA-CMFER trains on one device.
    `device: cpu` always trains on the CPU.
    """
    ids = [str(gpu_id) for gpu_id in gpu_ids]
    if len(ids) > 1:
        raise UserError(
            f"resources.gpu: this trial was assigned {len(ids)} GPUs ({', '.join(ids)}) but LA-CMFER trains on "
            "one device; ask for at most 1 GPU per trial (fractions pack several trials on one GPU)"
        )
    if choice == "cpu":
        return Placement(torch.device("cpu"))
    if not ids:
        if choice == "cuda":
            raise UserError("resources.device: 'cuda' but the trial reserved no GPU (resources.gpu: 0); "
                            "set resources.gpu (e.g. 0.25) or resources.device: auto")
        return Placement(torch.device("cpu"))
    if not torch.cuda.is_available():
        if choice == "cuda":
            raise UserError(f"resources.device: 'cuda' but torch sees no CUDA device on the node that runs "
                            f"this trial (Ray assigned GPU {ids[0]})")
        return Placement(torch.device("cpu"))
    fraction = share if 0.0 < share < 1.0 else None
    return Placement(torch.device("cuda", _visible_index(ids[0])), fraction)


def claim(placement: Placement) -> torch.device:
    """Apply the placement's memory bound to this process; returns its device.

    `torch.cuda.set_per_process_memory_fraction` caps what the CUDA caching allocator of
    this process may hold on the device; beyond it an allocation raises
    `torch.cuda.OutOfMemoryError` (see `out_of_memory_message`).
    """
    if placement.memory_fraction is not None and placement.device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(placement.memory_fraction, placement.device)
    return placement.device


def out_of_memory_message(placement: Placement) -> str:
    """What a run that ran out of device memory should tell the user."""
    if placement.memory_fraction is not None:
        return (f"out of GPU memory within this trial's share of the GPU ({placement.describe()}, "
                f"resources.gpu: {placement.memory_fraction:g}): lower data.batch_size or model.width, "
                "or give each trial a larger resources.gpu")
    return f"out of memory on {placement.device}: lower data.batch_size or model.width"
