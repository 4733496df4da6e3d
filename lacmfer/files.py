"""Files that are never seen half-written, and folders one process at a time.

Every file the project writes for others to read (configs, checkpoints, caches, reports)
goes through `atomic_path`: a reader, a resumed run or a crash finds the old file or
the new one, never a mix. Folders that several processes may build at once (a cache, an
experiment) are guarded by `exclusive_lock`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the atomic renames still keep files whole
    fcntl = None


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; it replaces `path` in one rename when the
    block ends cleanly, and is deleted when it raises.

    The name is unique per writer, so two processes writing one file never share a temporary
    (the last rename wins, whole), and it keeps `path`'s suffix for writers that read the
    format from it (matplotlib).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def exclusive_lock(lock_file: Path, on_busy: Callable[[str], None]) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock_file` (created if missing), with this
    process's pid written in it.

    When another process holds it, `on_busy(its pid as written, or "unknown")` is called
    first: raising refuses, returning waits for the lock. The kernel releases the lock when
    its process ends, however it ends, so a killed holder never leaves it held. On a
    filesystem without locks (some NFS) the block runs unguarded.
    """
    if fcntl is None:
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+", encoding="utf-8") as handle:
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                on_busy(handle.read().strip() or "unknown")
                fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:  # no locking on this filesystem
            yield
            return
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
