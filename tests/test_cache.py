"""The decoded-image cache: round trip, memory mapping, invalidation, atomic builds, errors, CLI."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from lacmfer.data import cache, prebuild
from lacmfer.errors import UserError

SIZE = 24


def _write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Small images of mixed formats and modes: RGB/gray JPEG, RGB/gray/RGBA PNG, odd shapes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    kinds = [("jpg", "RGB"), ("png", "RGB"), ("jpg", "L"), ("png", "L"), ("png", "RGBA")]
    paths = []
    for i in range(count):
        ext, mode = kinds[i % len(kinds)]
        height, width = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
        path = folder / f"img {i:03d}.{ext}"  # a space in the name on purpose
        image.save(path)
        paths.append(path)
    return paths


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = cache.decode_image

    def counting(path: Path, size: int) -> np.ndarray:
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(cache, "decode_image", counting)
    return calls


def _arrow_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.arrow"))


def _leftovers(folder: Path) -> list[str]:
    """Anything in the cache folder but finished caches and the lock file (temporaries are hidden files)."""
    return sorted(p.name for p in folder.iterdir()
                  if not (p.suffix == ".arrow" and not p.name.startswith(".")) and p.name != ".build.lock")


# ---------------------------------------------------------------- round trip


def test_decode_image_contract(tmp_path: Path) -> None:
    paths = _write_images(tmp_path, 5)
    for path in paths:
        image = cache.decode_image(path, SIZE)
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        assert image.flags.c_contiguous and image.flags.writeable
    gray = cache.decode_image(paths[3], SIZE)  # mode L
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])
    # Antialiased bilinear: a 2-pixel checkerboard shrunk 8x averages to mid-grey, while a
    # plain (point-sampled) resize would keep black and white pixels.
    board = np.indices((64, 64)).sum(axis=0) % 2 * 255
    Image.fromarray(board.astype(np.uint8), "L").save(tmp_path / "board.png")
    shrunk = cache.decode_image(tmp_path / "board.png", 8)
    assert np.abs(shrunk.astype(int) - 127).max() <= 2


def test_round_trip_matches_direct_decoding(tmp_path: Path) -> None:
    paths = _write_images(tmp_path / "img", 12)
    labels = [i % 7 for i in range(len(paths))]
    images = cache.load_or_build(paths, labels, SIZE, tmp_path / "cache", "mixed", progress=False)
    assert len(images) == len(paths) and images.size == SIZE
    assert images.labels.dtype == np.int64 and images.labels.tolist() == labels
    for i, path in enumerate(paths):
        assert np.array_equal(images[i], cache.decode_image(path, SIZE)), path.name
    for i in (2, 3):  # grayscale JPEG and PNG: three equal channels
        assert np.array_equal(images[i][..., 0], images[i][..., 2])
    assert np.array_equal(images[-1], images[len(paths) - 1])
    with pytest.raises(IndexError):
        images[len(paths)]
    batch = images.take([5, 0, 5, 11])
    assert batch.shape == (4, SIZE, SIZE, 3) and batch.flags.writeable
    assert np.array_equal(batch[1], cache.decode_image(paths[0], SIZE))
    assert np.array_equal(batch[0], batch[2])


def test_several_record_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "_BATCH_BYTES", 3 * SIZE * SIZE * 3)  # three images a batch
    paths = _write_images(tmp_path / "img", 10)
    labels = [6 - i % 7 for i in range(10)]
    images = cache.load_or_build(paths, labels, SIZE, tmp_path / "cache", "batched", progress=False)
    with pa.ipc.open_file(pa.memory_map(str(images.path))) as reader:
        assert reader.num_record_batches == 4
    expected = np.stack([cache.decode_image(p, SIZE) for p in paths])
    order = np.array([9, 0, 3, 2, 7, 7, 4])  # crosses every batch boundary
    assert np.array_equal(images.take(order), expected[order])
    assert all(np.array_equal(images[i], expected[i]) for i in range(10))
    assert images.labels.tolist() == labels


# ---------------------------------------------------------------- memory mapping and reuse


def test_reading_is_zero_copy_from_a_memory_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _write_images(tmp_path / "img", 6)
    labels = [1] * 6
    first = cache.load_or_build(paths, labels, SIZE, tmp_path / "cache", "mm", progress=False)
    view = first[4]
    assert not view.flags.writeable  # a read-only map, not a private copy
    assert np.shares_memory(view, first[4])
    base = view
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, pa.Buffer) and not base.is_mutable

    [file] = _arrow_files(tmp_path / "cache")
    mtime = file.stat().st_mtime_ns
    calls = _count_decodes(monkeypatch)
    second = cache.load_or_build(paths, labels, SIZE, tmp_path / "cache", "mm", progress=False)
    assert calls == [] and file.stat().st_mtime_ns == mtime
    assert second.path == file and np.array_equal(second[4], view)

    # Pickling (DataLoader workers under spawn) reopens the same file instead of copying.
    clone = pickle.loads(pickle.dumps(second))
    assert len(pickle.dumps(second)) < 1000
    assert clone.path == file and np.array_equal(clone.take([0, 4]), second.take([0, 4]))


# ---------------------------------------------------------------- invalidation


def test_changed_image_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _write_images(tmp_path / "img", 6)
    labels = [0, 1, 2, 3, 4, 5]
    old = cache.load_or_build(paths, labels, SIZE, tmp_path / "cache", "ch", progress=False)
    old_key = cache.cache_key(paths, labels, SIZE)

    Image.new("RGB", (30, 30), (200, 10, 60)).save(paths[1])  # new content (a PNG)
    stat = paths[1].stat()
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # coarse-mtime filesystems
    new_key = cache.cache_key(paths, labels, SIZE)
    assert new_key != old_key

    calls = _count_decodes(monkeypatch)
    new = cache.load_or_build(paths, labels, SIZE, tmp_path / "cache", "ch", progress=False)
    assert len(calls) == len(paths)
    assert new.path != old.path and new.path.name == f"ch-{SIZE}px-{new_key[:16]}.arrow"
    assert np.all(new[1] == (200, 10, 60))
    assert np.array_equal(new[0], old[0])


def test_touching_an_image_changes_the_key(tmp_path: Path) -> None:
    paths = _write_images(tmp_path, 3)
    key = cache.cache_key(paths, [0, 0, 0], SIZE)
    stat = paths[2].stat()
    os.utime(paths[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert cache.cache_key(paths, [0, 0, 0], SIZE) != key


def test_key_covers_size_order_labels_and_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _write_images(tmp_path / "img", 4)
    labels = [0, 1, 2, 3]
    key = cache.cache_key(paths, labels, SIZE)
    assert key == cache.cache_key(list(paths), list(labels), SIZE)  # deterministic
    assert cache.cache_key(paths, labels, SIZE + 8) != key
    assert cache.cache_key(paths[::-1], labels[::-1], SIZE) != key  # same pairs, other order
    assert cache.cache_key(paths, [0, 1, 2, 4], SIZE) != key
    monkeypatch.setattr(cache, "CACHE_FORMAT_VERSION", cache.CACHE_FORMAT_VERSION + 1)
    assert cache.cache_key(paths, labels, SIZE) != key
    monkeypatch.undo()

    small = cache.load_or_build(paths, labels, SIZE, tmp_path / "cache", "sz", progress=False)
    large = cache.load_or_build(paths, labels, 2 * SIZE, tmp_path / "cache", "sz", progress=False)
    assert small.path != large.path and large[0].shape == (2 * SIZE, 2 * SIZE, 3)
    assert len(_arrow_files(tmp_path / "cache")) == 2


def test_damaged_cache_file_is_rebuilt(tmp_path: Path) -> None:
    paths = _write_images(tmp_path / "img", 3)
    key = cache.cache_key(paths, [0, 1, 2], SIZE)
    final = cache.cache_path(tmp_path / "cache", "dmg", SIZE, key)
    final.parent.mkdir()
    final.write_bytes(b"not an arrow file")
    images = cache.load_or_build(paths, [0, 1, 2], SIZE, tmp_path / "cache", "dmg", progress=False)
    assert images.path == final and np.array_equal(images[2], cache.decode_image(paths[2], SIZE))


# ---------------------------------------------------------------- atomicity and concurrency


def _child_build(paths: list[Path], cache_dir: Path, at_lock: multiprocessing.synchronize.Barrier,
                 decoding: multiprocessing.synchronize.Barrier | None, decoded: multiprocessing.Queue) -> None:
    """Build the cache in a child process, in step with its sibling: both have found the
    cache missing before either takes the build lock (`at_lock`), and, when `decoding` is
    given (no lock), both are decoding before either goes on."""
    calls = []
    real_decode, real_lock = cache.decode_image, cache.build_lock

    def recording(path: Path, size: int) -> np.ndarray:
        if not calls and decoding is not None:
            decoding.wait(timeout=60)
        calls.append(path)
        return real_decode(path, size)

    @contextlib.contextmanager
    def lock_in_step(cache_dir: Path):
        at_lock.wait(timeout=60)
        with real_lock(cache_dir):
            yield

    cache.decode_image, cache.build_lock = recording, lock_in_step
    images = cache.load_or_build(paths, [i % 7 for i in range(len(paths))], SIZE, cache_dir, "race",
                                 progress=False, workers=1)
    decoded.put((len(calls), len(images)))


@pytest.mark.parametrize("locked", [True, False], ids=["with-lock", "without-lock"])
def test_two_processes_build_the_same_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, locked: bool) -> None:
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs fork")
    if not locked:  # a filesystem without locks: both build, the atomic rename must suffice
        monkeypatch.setattr(cache, "build_lock", lambda cache_dir: contextlib.nullcontext())
    paths = _write_images(tmp_path / "img", 15)
    cache_dir = tmp_path / "cache"
    ctx = multiprocessing.get_context("fork")
    at_lock, decoded = ctx.Barrier(2), ctx.Queue()
    decoding = None if locked else ctx.Barrier(2)  # with the lock only one process decodes
    workers = [ctx.Process(target=_child_build, args=(paths, cache_dir, at_lock, decoding, decoded))
               for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    results = [decoded.get(timeout=5) for _ in workers]
    assert all(n == len(paths) for _, n in results)
    decode_counts = sorted(c for c, _ in results)
    # With the lock the second process waits and reuses; without it both decode everything.
    assert decode_counts == ([0, len(paths)] if locked else [len(paths), len(paths)])

    [file] = _arrow_files(cache_dir)
    assert _leftovers(cache_dir) == []
    images = cache.DecodedImages(file)
    assert all(np.array_equal(images[i], cache.decode_image(p, SIZE)) for i, p in enumerate(paths))


def test_final_path_never_holds_a_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "_BATCH_BYTES", 2 * SIZE * SIZE * 3)  # batches are written mid-build
    paths = _write_images(tmp_path / "img", 8)
    labels = [0] * 8
    cache_dir = tmp_path / "cache"
    final = cache.cache_path(cache_dir, "partial", SIZE, cache.cache_key(paths, labels, SIZE))
    real = cache.decode_image
    release = threading.Event()

    def blocking(path: Path, size: int) -> np.ndarray:
        if path == paths[6]:  # three batches are on disk by now
            assert release.wait(timeout=30)
        return real(path, size)

    monkeypatch.setattr(cache, "decode_image", blocking)
    result: list[cache.DecodedImages] = []
    builder = threading.Thread(
        target=lambda: result.append(cache.load_or_build(paths, labels, SIZE, cache_dir, "partial",
                                                         progress=False, workers=1)))
    builder.start()
    try:
        deadline = time.monotonic() + 30
        while not (cache_dir.exists() and _leftovers(cache_dir)):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        [tmp] = [cache_dir / p for p in _leftovers(cache_dir)]
        assert tmp.name.startswith(".") and ".tmp" in tmp.suffixes
        while tmp.stat().st_size < 3 * SIZE * SIZE * 3:  # the temp file really is half written
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not final.exists()
    finally:
        release.set()
        builder.join(timeout=30)
    assert final.exists() and _leftovers(cache_dir) == []
    assert len(result[0]) == 8


# ---------------------------------------------------------------- error reporting


def test_unreadable_images_are_all_reported_with_their_list_line(tmp_path: Path) -> None:
    paths = _write_images(tmp_path / "img", 5)
    missing = tmp_path / "img" / "gone.png"
    corrupt = tmp_path / "img" / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 this is no jpeg")
    truncated = tmp_path / "img" / "truncated.png"
    truncated.write_bytes(paths[1].read_bytes()[:60])
    all_paths = [paths[0], missing, paths[1], corrupt, truncated, paths[2]]
    list_file = tmp_path / "RAF_train.txt"
    lines = [3, 4, 6, 7, 9, 10]
    with pytest.raises(UserError) as err:
        cache.load_or_build(all_paths, [0] * 6, SIZE, tmp_path / "cache", "RAF_train",
                            list_file=list_file, line_numbers=lines, progress=False)
    message = str(err.value).splitlines()
    assert message[0].startswith("cannot build the image cache 'RAF_train': 3 unreadable image(s)")
    assert len(message) == 4
    assert message[1] == f"{list_file}:4: cannot read image '{missing}': file not found"
    assert message[2].startswith(f"{list_file}:7: cannot read image '{corrupt}': ")
    assert message[3].startswith(f"{list_file}:9: cannot read image '{truncated}': ")
    assert _arrow_files(tmp_path / "cache") == [] and _leftovers(tmp_path / "cache") == []


def test_error_list_is_capped(tmp_path: Path) -> None:
    missing = [tmp_path / f"missing{i}.png" for i in range(25)]
    with pytest.raises(UserError) as err:
        cache.load_or_build(missing, [0] * 25, SIZE, tmp_path / "cache", "many",
                            list_file=tmp_path / "l.txt", line_numbers=range(1, 26), max_errors=20,
                            progress=False)
    message = str(err.value).splitlines()
    assert len(message) == 22 and message[-1] == "... and 5 more"
    assert message[20].startswith(f"{tmp_path / 'l.txt'}:20: ")


# ---------------------------------------------------------------- command line


def test_cli_bad_config_path_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        prebuild.main(["--config", str(tmp_path / "nope.yaml")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.yaml" in err[0] and "not found" in err[0]


def test_cli_prebuilds_every_list(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    paths = _write_images(root / "faces", 6)
    (root / "CK.txt").write_text("".join(f"faces/{p.name} {i % 7}\n" for i, p in enumerate(paths[:3])))
    (root / "JAFFE.txt").write_text("\n".join(f'"faces/{p.name}" 2' for p in paths[3:]) + "\n")
    config = tmp_path / "exp.yaml"
    config.write_text(f"data:\n  root: {root}\n  domains: [CK, JAFFE]\n  targets: [CK]\n")
    prebuild.main(["--config", str(config), "--set", "data.cache_size=20", "--workers", "1"])
    built = {p.name.split("-")[0]: p for p in _arrow_files(root / ".cache")}
    assert set(built) == {"CK", "JAFFE"}
    ck = cache.DecodedImages(built["CK"])
    assert ck.size == 20 and ck.labels.tolist() == [0, 1, 2]
    assert np.array_equal(ck[2], cache.decode_image(paths[2], 20))
    assert "CK: 3 images at 20px" in capsys.readouterr().out

    calls = _count_decodes(monkeypatch)  # a second prebuild reuses both files
    prebuild.main(["--config", str(config), "--set", "data.cache_size=20"])
    assert calls == []
