"""Whole-file writes and the one lock (lacmfer/files.py), used by configs, checkpoints, caches,
reports and the experiment folder."""

from __future__ import annotations

import os

import pytest

from lacmfer.files import atomic_path, exclusive_lock, write_text_atomic


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    """Mutation: renaming in a `finally` (also on error) puts the half-written file in place."""
    path = tmp_path / "best" / "CK.yaml"
    write_text_atomic(path, "old: 1\n")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half", encoding="utf-8")
        raise RuntimeError("killed mid-write")
    assert path.read_text(encoding="utf-8") == "old: 1\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["CK.yaml"]


def test_a_clean_write_replaces_the_file_through_a_unique_temporary_with_its_suffix(tmp_path):
    """matplotlib reads the format from the suffix; two writers must not share a temporary."""
    path = tmp_path / "chart.png"
    with atomic_path(path) as first, atomic_path(path) as second:
        assert first != second and first.suffix == second.suffix == ".png" and first.parent == tmp_path
        first.write_bytes(b"first")
        second.write_bytes(b"second")
    assert path.read_bytes() == b"first"  # the outer block ends last: its rename wins, whole
    assert [p.name for p in tmp_path.iterdir()] == ["chart.png"]


def test_a_held_lock_names_its_holder_and_a_refusal_stops_the_second_taker(tmp_path):
    """flock locks belong to an open file, so a second open in this process contends like another
    process would. Mutations: the holder's pid not written (`seen` is "unknown"); the lock not
    released at the end (the last block calls `refuse`)."""
    lock = tmp_path / ".lock"
    seen = []

    def refuse(holder: str) -> None:
        seen.append(holder)
        raise RuntimeError("busy")

    with exclusive_lock(lock, on_busy=refuse):
        with pytest.raises(RuntimeError, match="busy"), exclusive_lock(lock, on_busy=refuse):
            pass
    assert seen == [str(os.getpid())]
    with exclusive_lock(lock, on_busy=refuse):  # released: taken again without contention
        pass
    assert seen == [str(os.getpid())]
