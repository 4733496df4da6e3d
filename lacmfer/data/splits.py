"""Leave-one-domain-out splits (docs/METHOD.md §1), planned on manifests before any decoding.

For a target domain T: the other domains' train lists, pooled, are the labeled sources,
minus a stratified source-validation hold-out per source domain; T's train list is the
unlabeled stream and T's test list the test set (the same list for the lab sets: the
field's convention).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from lacmfer.data.domains import NUM_CLASSES
from lacmfer.data.manifest import DomainLists, Manifest
from lacmfer.errors import UserError


@dataclass(frozen=True)
class Part:
    """The rows of one list file that belong to a role of the split."""

    domain: str
    manifest: Manifest
    rows: np.ndarray  # int64 indices into the manifest

    def __len__(self) -> int:
        return len(self.rows)


def whole(domain: str, manifest: Manifest) -> Part:
    return Part(domain, manifest, np.arange(len(manifest), dtype=np.int64))


@dataclass(frozen=True)
class Split:
    target: str
    sources: tuple[str, ...]
    source_train: tuple[Part, ...]
    source_val: tuple[Part, ...]
    target_train: Part  # unlabeled stream: its labels are never used for training
    target_test: Part
    target_val: Part | None

    @property
    def target_test_is_train(self) -> bool:
        """True for the lab sets, where the unlabeled stream is also the test set (same list, same rows)."""
        return (self.target_test.manifest.list_file == self.target_train.manifest.list_file
                and np.array_equal(self.target_test.rows, self.target_train.rows))


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int, domain: str) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into (train, val) with `round(fraction·n_c)` val rows per class.

    Seeded by the domain's name, not by its position, so a source domain's hold-out is the
    same in every split it takes part in. Each class keeps at least one training row.
    """
    rng = np.random.default_rng([seed, zlib.crc32(domain.encode())])
    val_rows = []
    for c in range(NUM_CLASSES):
        rows = np.flatnonzero(labels == c)
        k = min(int(round(fraction * len(rows))), max(len(rows) - 1, 0))
        val_rows.append(rng.permutation(rows)[:k])
    val = np.sort(np.concatenate(val_rows)).astype(np.int64)
    train = np.setdiff1d(np.arange(len(labels), dtype=np.int64), val)
    return train, val


def make_split(domains: dict[str, DomainLists], target: str, val_fraction: float, seed: int) -> Split:
    """Plan the split for `target` from every domain's lists."""
    if target not in domains:
        raise UserError(f"data.targets: '{target}' is not one of the configured domains {sorted(domains)}")
    sources = tuple(name for name in domains if name != target)
    train_parts, val_parts = [], []
    for name in sources:
        manifest = domains[name].train
        train_rows, val_rows = stratified_holdout(manifest.labels, val_fraction, seed, name)
        train_parts.append(Part(name, manifest, train_rows))
        if len(val_rows):
            val_parts.append(Part(name, manifest, val_rows))
    tgt = domains[target]
    return Split(
        target=target,
        sources=sources,
        source_train=tuple(train_parts),
        source_val=tuple(val_parts),
        target_train=whole(target, tgt.train),
        target_test=whole(target, tgt.test),
        target_val=whole(target, tgt.val) if tgt.val is not None else None,
    )
