"""Disk space: the search's estimate before its first trial, and a full volume as one line with a way on.

A search at the paper's size keeps a checkpoint of every trial until the export prunes
them (`search.keep_checkpoints`), about 0.5 GiB each (docs/BENCHMARKS.md), so a full results
volume is the ordinary way a long search dies. Before the first trial the search compares
what it will keep with the free space of the volume that holds the results: too little is
refused, a narrow margin is said. When a write fails for space anyway (SQLite's "database or
disk is full", errno ENOSPC anywhere), the command ends with one line that names the folder
and its free space, says what is intact and how to go on.
"""

from __future__ import annotations

import errno
import shutil
import sys
from pathlib import Path

from lacmfer.errors import UserError

#: Below this multiple of the estimate, the search starts but says the margin is narrow.
WARN_MARGIN = 2.0


def free_bytes(folder: Path) -> int:
    """Free bytes on the volume of `folder` (of its nearest existing parent: it may not exist yet)."""
    path = Path(folder).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def check_space(folder: Path, trials: int, checkpoint_bytes: int) -> None:
    """Refuse a results volume that cannot hold `trials` checkpoints of `checkpoint_bytes` (each kept
    until the export, and a second one while it is being replaced); warn when it holds under
    WARN_MARGIN times that."""
    needed = trials * 2 * checkpoint_bytes
    free = free_bytes(folder)
    figures = (f"{trials} trial(s) × 2 checkpoints of about {human(checkpoint_bytes)} while one replaces the "
               f"other = {human(needed)}")
    if free < needed:
        raise UserError(f"{folder}: {human(free)} free, but the search keeps about {human(needed)} ({figures}); "
                        "free space, give another --results, or lower search.num_samples")
    if free < WARN_MARGIN * needed:
        print(f"WARNING: {folder}: {human(free)} free, close to the {human(needed)} the search keeps ({figures})",
              file=sys.stderr, flush=True)


def is_disk_full(error: BaseException | str) -> bool:
    """Whether an error (or an error's text, from a split driver) is a write that ran out of space."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error} {error.__cause__ or ''}"
    return "No space left on device" in text or "database or disk is full" in text or "Disk quota exceeded" in text


def disk_full_error(folder: Path | str, resume_command: str) -> UserError:
    """The one line a full volume ends a command with."""
    try:
        free = f"{human(free_bytes(Path(folder)))} free now"
    except OSError:
        free = "free space unknown"
    return UserError(f"no space left on the volume of {folder} ({free}): the command stopped; what it wrote before "
                     f"is intact (whole-file writes, finished trials and checkpoints, optuna.db); free space, then "
                     f"go on with: {resume_command}")
