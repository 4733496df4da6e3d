"""Batches of uint8 images for training and evaluation, gathered from the decoded-image cache.

Loaders only gather rows: a batch is (B, 3, S, S) uint8 straight from the memory-mapped
cache, and augmentation (`lacmfer.data.augment`) runs batched on the training device.
Training streams are infinite and resumable: batch number b is a pure function of
(seed, stream, b) — which rows it holds and the seed of its augmentation — so a stream
restored from `{"batches": b}` continues exactly, whatever `num_workers` is.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lacmfer.config import DataConfig, ExperimentConfig
from lacmfer.data.cache import DecodedImages, load_or_build
from lacmfer.data.manifest import Manifest, load_domains, unique_manifests
from lacmfer.data.splits import Part, Split, make_split


class Batch(NamedTuple):
    """uint8 images (B, 3, S, S), labels and domain ids (B,), and the augmentation seed."""

    images: torch.Tensor
    labels: torch.Tensor
    domains: torch.Tensor
    seed: int


class SampleSet:
    """The images of some split parts, indexed 0..n-1 across their list files."""

    def __init__(self, parts: Sequence[Part], decoded: Mapping[Path, DecodedImages], domain_ids: Mapping[str, int]):
        self.parts = tuple(parts)
        self._decoded = [decoded[p.manifest.list_file] for p in self.parts]
        self._part = np.concatenate([np.full(len(p), i, dtype=np.int64) for i, p in enumerate(self.parts)])
        self._row = np.concatenate([p.rows for p in self.parts])
        self.labels = np.concatenate([p.manifest.labels[p.rows] for p in self.parts])
        self.domains = np.concatenate([np.full(len(p), domain_ids[p.domain], dtype=np.int64) for p in self.parts])

    def __len__(self) -> int:
        return len(self._row)

    def image(self, k: int) -> np.ndarray:
        """(H, W, 3) uint8, a read-only view into the memory-mapped cache."""
        return self._decoded[self._part[k]][int(self._row[k])]

    def gather(self, indices: np.ndarray, seed: int = -1) -> Batch:
        """The samples at `indices` as one Batch, images channels-first and contiguous."""
        indices = np.asarray(indices, dtype=np.int64)
        parts = self._part[indices]
        first = self._decoded[0]
        images = np.empty((len(indices), first.size, first.size, 3), dtype=np.uint8)
        for part in np.unique(parts):
            at = parts == part
            images[at] = self._decoded[part].take(self._row[indices[at]])
        return Batch(
            torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
            torch.from_numpy(self.labels[indices]),
            torch.from_numpy(self.domains[indices]),
            seed,
        )


class _Cycler:
    """Walks endless seeded permutations of `members`, `per_batch` rows per batch."""

    def __init__(self, members: np.ndarray, per_batch: int, seed: Sequence[int]):
        self.members = members
        self.per_batch = per_batch
        self.seed = list(seed)
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            self._perms[epoch] = np.random.default_rng([*self.seed, epoch]).permutation(self.members)
        return self._perms[epoch]

    def take(self, batch: int) -> np.ndarray:
        n = len(self.members)
        positions = np.arange(batch * self.per_batch, (batch + 1) * self.per_batch)
        epochs, offsets = np.divmod(positions, n)
        out = np.empty(len(positions), dtype=np.int64)
        for epoch in np.unique(epochs):  # one or two epochs per batch unless the set is tiny
            at = epochs == epoch
            out[at] = self._perm(int(epoch))[offsets[at]]
        return out


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class _NumberedBatches(Dataset):
    """Item b is batch number b of a stream (a DataLoader with batch_size=None fetches it)."""

    def __init__(self, stream: BatchStream):
        self.samples = stream.samples
        self.rows = stream.batch_rows
        self.seed = stream.batch_seed

    def __getitem__(self, batch: int) -> Batch:
        return self.samples.gather(self.rows(batch), self.seed(batch))


class BatchStream:
    """Infinite, resumable stream of uint8 Batches from a SampleSet.

    `pooled` draws from all samples at once (the paper); `balanced_domains` gives every
    domain an equal share of each batch. With `num_workers` > 0 the batches are gathered
    ahead in worker processes; `pin_memory` puts them in page-locked memory so that the
    copy to the GPU can run asynchronously (`non_blocking=True`).
    """

    def __init__(
        self,
        samples: SampleSet,
        batch_size: int,
        seed: int,
        stream_id: int,
        sampling: str = "pooled",
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        self.samples = samples
        self.batch_size = batch_size
        self.seed = seed
        self.stream_id = stream_id
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        if sampling == "pooled":
            self._cyclers = [_Cycler(np.arange(len(samples)), batch_size, [seed, stream_id])]
        elif sampling == "balanced_domains":
            ids = np.unique(samples.domains)
            self._cyclers = [
                _Cycler(np.flatnonzero(samples.domains == d), share, [seed, stream_id, int(d)])
                for d, share in zip(ids, _shares(batch_size, len(ids)), strict=True)
                if share > 0
            ]
        else:
            raise ValueError(f"unknown sampling {sampling!r}")
        self._consumed = 0
        self._iterator: Iterator[Batch] | None = None

    def batch_rows(self, batch: int) -> np.ndarray:
        """The sample indices of batch number `batch`."""
        return np.concatenate([c.take(batch) for c in self._cyclers])

    def batch_seed(self, batch: int) -> int:
        """The augmentation seed of batch number `batch` (63 bits)."""
        words = np.random.SeedSequence([self.seed, self.stream_id, batch]).generate_state(2, np.uint64)
        return int(words[0] >> np.uint64(1))

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Batch:
        if self.num_workers == 0:
            batch = _NumberedBatches(self)[self._consumed]
            if self.pin_memory:
                batch = Batch(batch.images.pin_memory(), batch.labels.pin_memory(), batch.domains, batch.seed)
        else:
            if self._iterator is None:
                loader = DataLoader(_NumberedBatches(self), batch_size=None,
                                    sampler=itertools.count(self._consumed),  # type: ignore[arg-type]
                                    num_workers=self.num_workers, pin_memory=self.pin_memory)
                self._iterator = iter(loader)
            batch = next(self._iterator)
        self._consumed += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"batches": self._consumed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self._consumed = int(state["batches"])
        self._iterator = None  # workers may have prefetched past the restored position


class _Chunks(Dataset):
    def __init__(self, samples: SampleSet, chunks: list[np.ndarray]):
        self.samples, self.chunks = samples, chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> Batch:
        return self.samples.gather(self.chunks[i])


def eval_batches(
    samples: SampleSet,
    batch_size: int,
    indices: np.ndarray | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """One ordered pass over `samples` (or over `indices` of it), unaugmented uint8."""
    indices = np.arange(len(samples)) if indices is None else np.asarray(indices, dtype=np.int64)
    chunks = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    loader = DataLoader(_Chunks(samples, chunks), batch_size=None, num_workers=num_workers, pin_memory=pin_memory)
    yield from loader


def fixed_subset(size: int, limit: int | None, seed: Sequence[int]) -> np.ndarray | None:
    """Sorted indices of a seeded subset of `limit` of `size` samples; None: use them all."""
    if limit is None or limit >= size:
        return None
    return np.sort(np.random.default_rng(list(seed)).choice(size, limit, replace=False))


@dataclass(frozen=True)
class SplitData:
    """Everything one target split trains and evaluates on, decoded and memory-mapped."""

    split: Split
    source_train: SampleSet
    source_val: SampleSet | None
    target_train: SampleSet
    target_test: SampleSet
    target_val: SampleSet | None


def open_caches(data: DataConfig, parts: Sequence[Part], progress: bool = True) -> dict[Path, DecodedImages]:
    """The decoded images of every list file the parts use (built on first use)."""
    decoded: dict[Path, DecodedImages] = {}
    for part in parts:
        m = part.manifest
        if m.list_file not in decoded:
            decoded[m.list_file] = load_or_build(
                m.paths,
                m.labels,
                data.resolved_cache_size,
                data.resolved_cache_dir,
                m.name,
                list_file=m.list_file,
                line_numbers=m.line_numbers,
                progress=progress,
                max_errors=data.max_list_errors,
            )
    return decoded


def cache_every_list(data: DataConfig, workers: int = 2, progress: bool = True) -> list[tuple[Manifest, DecodedImages]]:
    """Check every list and image of `data`, and build (or open) the cache of every list.

    What a run would find wrong with the data is found here, each problem as a
    `file:line: ...` UserError: list lines that do not parse, labels out of range,
    missing images (the manifest), images that do not decode (the cache). `tune.py` calls
    it before Ray starts, so trials open the caches it built instead of each failing on a
    bad list; `python -m lacmfer.data.prebuild` calls it to prebuild caches.
    """
    cached = []
    for manifest in unique_manifests(load_domains(data)):
        images = load_or_build(
            manifest.paths, manifest.labels, data.resolved_cache_size, data.resolved_cache_dir, manifest.name,
            list_file=manifest.list_file, line_numbers=manifest.line_numbers, progress=progress,
            workers=workers, max_errors=data.max_list_errors,
        )
        cached.append((manifest, images))
    return cached


def domain_ids(data: DataConfig) -> dict[str, int]:
    return {name: i for i, name in enumerate(data.domains)}


def load_split_data(cfg: ExperimentConfig, target: str, progress: bool = True) -> SplitData:
    """Read the lists, plan the split for `target`, and open (or build) its caches."""
    data = cfg.data
    split = make_split(load_domains(data), target, data.source_val_fraction, data.split_seed)
    parts = [*split.source_train, *split.source_val, split.target_train, split.target_test]
    if split.target_val is not None:
        parts.append(split.target_val)
    decoded = open_caches(data, parts, progress)
    ids = domain_ids(data)

    def samples(ps: Sequence[Part]) -> SampleSet | None:
        return SampleSet(ps, decoded, ids) if ps else None

    return SplitData(
        split=split,
        source_train=SampleSet(split.source_train, decoded, ids),
        source_val=samples(split.source_val),
        target_train=SampleSet([split.target_train], decoded, ids),
        target_test=SampleSet([split.target_test], decoded, ids),
        target_val=samples([split.target_val] if split.target_val else []),
    )
