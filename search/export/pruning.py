"""Checkpoint pruning after the export of a finished split: every trial's checkpoints but
the exported best trial's are deleted, since only that one can still be trained on or
inspected, and a search's checkpoints can fill a disk. Local results only (the caller
checks); it runs after the export's files are written."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from search.export.results import SplitExport
from search.storage import ExperimentLocations


def remove_checkpoints(split_dir: Path, keep_trial_id: str | None) -> tuple[int, int]:
    """Delete the checkpoint folders of every trial in `split_dir` (one round's Tune
    experiment folder) but `keep_trial_id`'s.

    A trial folder is recognised by the `trial_id` of its first report (result.json).
    Returns (checkpoints removed, bytes freed).
    """
    removed = freed = 0
    for result in sorted(Path(split_dir).glob("*/result.json")):
        with open(result, encoding="utf-8") as lines:
            first = lines.readline()
        if not first.strip() or json.loads(first).get("trial_id") == keep_trial_id:
            continue
        for checkpoint in sorted(result.parent.glob("checkpoint_*")):
            freed += sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file())
            shutil.rmtree(checkpoint)
            removed += 1
    return removed, freed


def prune_finished_splits(places: ExperimentLocations, splits: Sequence[SplitExport],
                          finished: Sequence[str]) -> tuple[int, int]:
    """`remove_checkpoints` in every round of the `finished` splits (whose search will not be
    resumed), keeping each split's exported trial; returns (checkpoints removed, bytes freed)."""
    removed = freed = 0
    for split in splits:
        if split.target in finished:
            for folder in places.rounds(split.target):
                count, size = remove_checkpoints(folder.local_path(), split.best and split.best.trial_id)
                removed += count
                freed += size
    return removed, freed
