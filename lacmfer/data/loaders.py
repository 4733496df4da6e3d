"""Batches for training and evaluation, from the decoded-image cache.

Training streams are infinite and resumable: batch number b is a pure function of
(seed, stream, b) — which rows it holds and the seed of each image's augmentation — so
a stream restored from `{"batches": b}` continues exactly, whatever `num_workers` is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from lacmfer.config import DataConfig, ExperimentConfig
from lacmfer.data.cache import DecodedImages, load_or_build
from lacmfer.data.manifest import Manifest, load_domains, unique_manifests
from lacmfer.data.splits import Part, Split, make_split

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images, labels, domain ids


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


class _TransformedImages(Dataset):
    """Keys are (index, seed): seed ≥ 0 fixes that image's augmentation, -1 means none needed."""

    def __init__(self, samples: SampleSet, transform: Callable[[torch.Tensor], torch.Tensor]):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        k, seed = key
        # Copy: the cache view is read-only and torch wants a writable buffer.
        image = torch.from_numpy(np.array(self.samples.image(k))).permute(2, 0, 1)
        if seed < 0:
            out = self.transform(image)
        elif get_worker_info() is not None:
            torch.manual_seed(seed)  # a worker's global RNG serves only this dataset
            out = self.transform(image)
        else:
            with torch.random.fork_rng(devices=[]):  # leave the training RNG untouched
                torch.manual_seed(seed)
                out = self.transform(image)
        return out, int(self.samples.labels[k]), int(self.samples.domains[k])


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


class BatchStream:
    """Infinite, resumable stream of augmented batches from a SampleSet.

    `pooled` draws from all samples at once (the paper); `balanced_domains` gives every
    domain an equal share of each batch.
    """

    def __init__(
        self,
        samples: SampleSet,
        batch_size: int,
        transform: Callable[[torch.Tensor], torch.Tensor],
        seed: int,
        stream_id: int,
        sampling: str = "pooled",
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        self.dataset = _TransformedImages(samples, transform)
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

    def batch_keys(self, batch: int) -> list[tuple[int, int]]:
        """The (row, augmentation seed) pairs of batch number `batch`."""
        rows = np.concatenate([c.take(batch) for c in self._cyclers])
        seeds = np.random.SeedSequence([self.seed, self.stream_id, batch]).generate_state(len(rows), np.uint32)
        return [(int(r), int(s)) for r, s in zip(rows, seeds, strict=True)]

    def _keys_from(self, start: int) -> Iterator[list[tuple[int, int]]]:
        batch = start
        while True:
            yield self.batch_keys(batch)
            batch += 1

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Batch:
        if self._iterator is None:
            loader = DataLoader(
                self.dataset,
                batch_sampler=self._keys_from(self._consumed),
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
            )
            self._iterator = iter(loader)
        batch = next(self._iterator)
        self._consumed += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"batches": self._consumed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self._consumed = int(state["batches"])
        self._iterator = None  # workers may have prefetched past the restored position


def eval_batches(
    samples: SampleSet,
    transform: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """One ordered pass over `samples`, without augmentation."""
    keys = [(k, -1) for k in range(len(samples))]
    chunks = [keys[i : i + batch_size] for i in range(0, len(keys), batch_size)]
    loader = DataLoader(
        _TransformedImages(samples, transform), batch_sampler=chunks, num_workers=num_workers, pin_memory=pin_memory
    )
    yield from loader


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
    bad list; `python -m lacmfer.data.cache` calls it to prebuild caches.
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
