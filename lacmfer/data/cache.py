"""The decoded-image cache: images decoded and resized once, stored as uint8 in Arrow IPC.

Decoding a JPEG/PNG and resizing it costs far more than the augmentation that follows,
and every trial of a search would otherwise repeat it for every image of every epoch.
So each list is decoded once to `size`×`size` RGB and written to one Arrow IPC file:

    <cache_dir>/<name>-<size>px-<key[:16]>.arrow
    columns: pixels  fixed_size_binary(size*size*3)   one image, HWC uint8, row-major
             label   int64

Reading memory-maps the file, so every process on a node shares one copy through the
page cache and `DecodedImages[i]` is a zero-copy (size, size, 3) uint8 view.

Content addressing: `key` is a sha256 over the cache format version, the size, and for
every entry in order its path as given, its resolved path, its label, its file size and
its mtime (ns). A changed list or a touched image gives a new key, hence a new file,
built on next use; an unchanged one is reused without decoding anything. Old files of a
changed list are left in place (several configs may share one cache folder and several
lists may share a name hint, so deleting by name would be unsafe); delete them by hand.

Atomic build: the file is written to a unique temp file in the same folder, fsynced and
renamed into place (`lacmfer.files.atomic_path`), so the final path only ever holds a
complete file.
Builders on one node also take an advisory lock on `<cache_dir>/.build.lock` so that
trials starting together decode once instead of once each; where locking is unavailable
(some network filesystems) both build and the last rename wins with identical content.

Unreadable images are all collected and reported in one `UserError`: a summary line,
then one `list_file:line: cannot read image 'path': reason` line per image (at most
`max_errors`, then `... and N more`).
"""

from __future__ import annotations

import contextlib
import hashlib
import operator
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image
from tqdm import tqdm

from lacmfer.errors import UserError
from lacmfer.files import atomic_path, exclusive_lock

# Bump whenever decode_image or the file layout changes: old caches then stop matching.
CACHE_FORMAT_VERSION = 1

_META_VERSION = b"lacmfer.cache_format"
_META_SIZE = b"lacmfer.image_size"
# Record batches of about this many bytes: bounded memory while building, few batches.
_BATCH_BYTES = 64 * 1024 * 1024
# Failures that mean "this file is not a readable image", as opposed to a bug of ours.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def decode_image(path: Path, size: int) -> np.ndarray:
    """Decode one image to RGB (grayscale/NIR become 3 equal channels), resize to size×size.

    Bilinear resize with PIL's antialiasing; returns a C-contiguous (size, size, 3) uint8
    array. This is the one decode used by the cache and by anything decoding directly.
    """
    with Image.open(path) as image:
        rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return np.array(rgb, dtype=np.uint8)  # a writable copy; PIL's own buffer is read-only


def cache_key(paths: Sequence[Path], labels: Sequence[int], size: int) -> str:
    """sha256 hex digest of the format version, size and every (path, label, size, mtime).

    A missing image hashes as size/mtime -1, so the key exists and the build reports it.
    """
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    digest = hashlib.sha256(f"lacmfer-cache {CACHE_FORMAT_VERSION} {size} {len(paths)}\n".encode())
    for path, label in zip(paths, labels, strict=True):
        try:
            stat = os.stat(path)
            file_size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            file_size, mtime = -1, -1
        entry = f"{os.fspath(path)}\t{Path(path).resolve()}\t{int(label)}\t{file_size}\t{mtime}\n"
        digest.update(entry.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def cache_path(cache_dir: Path, name: str, size: int, key: str) -> Path:
    """Where the cache of a list lives: `<cache_dir>/<name>-<size>px-<key[:16]>.arrow`."""
    if not name or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"cache name must be a plain file-name part, got {name!r}")
    return Path(cache_dir) / f"{name}-{size}px-{key[:16]}.arrow"


class DecodedImages:
    """A memory-mapped cache file: `images[i]` is a read-only (size, size, 3) uint8 view.

    `take(indices)` gathers a batch into a new (B, size, size, 3) array; `labels` is the
    int64 label array. Pickling reopens the file by path, so DataLoader workers started
    with spawn map the same file (and share its pages) instead of copying the pixels.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        reader = pa.ipc.open_file(pa.memory_map(os.fspath(self.path), "r"))
        metadata = reader.schema.metadata or {}
        if metadata.get(_META_VERSION) != str(CACHE_FORMAT_VERSION).encode():
            raise ValueError(f"{self.path}: not a cache file of format {CACHE_FORMAT_VERSION}")
        self.size = int(metadata[_META_SIZE])
        row_bytes = self.size * self.size * 3
        expected = pa.schema([("pixels", pa.binary(row_bytes)), ("label", pa.int64())])
        if not reader.schema.equals(expected):
            raise ValueError(f"{self.path}: unexpected columns {reader.schema.names}")

        self._views: list[np.ndarray] = []
        labels = []
        starts = [0]
        for index in range(reader.num_record_batches):
            batch = reader.get_batch(index)
            pixels = batch.column(0)
            if pixels.null_count or batch.column(1).null_count:
                raise ValueError(f"{self.path}: null entries in record batch {index}")
            data = pixels.buffers()[1]  # [validity, data]; the data buffer lies in the map
            view = np.frombuffer(data, dtype=np.uint8, count=len(pixels) * row_bytes,
                                 offset=pixels.offset * row_bytes)
            self._views.append(view.reshape(len(pixels), self.size, self.size, 3))
            labels.append(batch.column(1).to_numpy())
            starts.append(starts[-1] + len(pixels))
        self._starts = np.asarray(starts, dtype=np.int64)
        self.labels: np.ndarray = (np.concatenate(labels) if labels else np.empty(0)).astype(np.int64)

    def __reduce__(self) -> tuple[type[DecodedImages], tuple[Path]]:
        return DecodedImages, (self.path,)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> np.ndarray:
        i = operator.index(index)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"image index {index} out of range for {n} images")
        batch = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._views[batch][i - self._starts[batch]]

    def take(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Copy the images at `indices` (non-negative) into a new (B, size, size, 3) array."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"image indices must lie in [0, {len(self)})")
        if len(self._views) == 1:
            return self._views[0][idx]
        out = np.empty((idx.size, self.size, self.size, 3), dtype=np.uint8)
        batches = np.searchsorted(self._starts, idx, side="right") - 1
        for batch in np.unique(batches):
            rows = batches == batch
            out[rows] = self._views[batch][idx[rows] - self._starts[batch]]
        return out


def _open_matching(path: Path, labels: np.ndarray, size: int) -> DecodedImages | None:
    """The cache at `path` if it is a complete file for these labels and size, else None."""
    try:
        images = DecodedImages(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError):  # damaged or foreign file: rebuild over it
        return None
    if images.size != size or not np.array_equal(images.labels, labels):
        return None
    return images


def build_lock(cache_dir: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive advisory lock on the cache folder, waited for when another process builds."""
    def wait(holder: str) -> None:
        print(f"waiting for process {holder}, which is building a cache in {cache_dir}", file=sys.stderr)

    return exclusive_lock(cache_dir / ".build.lock", on_busy=wait)


def _decode_or_reason(path: Path, size: int) -> tuple[np.ndarray | None, str]:
    try:
        return decode_image(path, size), ""
    except FileNotFoundError:
        return None, "file not found"
    except _DECODE_ERRORS as err:
        return None, str(err) or type(err).__name__


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable; not every platform can open a folder.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_cache(
    final: Path,
    paths: Sequence[Path],
    labels: np.ndarray,
    size: int,
    *,
    name: str,
    list_file: Path | None,
    line_numbers: Sequence[int] | None,
    progress: bool,
    workers: int,
    max_errors: int,
) -> None:
    """Decode every image and write the cache to a temp file renamed to `final` at the end."""
    row_bytes = size * size * 3
    rows_per_batch = max(1, _BATCH_BYTES // row_bytes)
    schema = pa.schema(
        [("pixels", pa.binary(row_bytes)), ("label", pa.int64())],
        metadata={_META_VERSION: str(CACHE_FORMAT_VERSION), _META_SIZE: str(size)},
    )
    problems: list[str] = []
    with (
        atomic_path(final) as tmp,
        open(tmp, "wb") as sink,
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,  # PIL decodes without the GIL
        tqdm(total=len(paths), desc=f"caching {name} at {size}px", unit="img",
             disable=not progress, file=sys.stderr) as bar,
    ):
        writer = pa.ipc.new_file(sink, schema)
        for start in range(0, len(paths), rows_per_batch):
            stop = min(len(paths), start + rows_per_batch)
            pixels = np.empty((stop - start, row_bytes), dtype=np.uint8)
            decoded = pool.map(_decode_or_reason, paths[start:stop], [size] * (stop - start))
            for row, (image, reason) in enumerate(decoded):
                bar.update()
                if image is None:
                    i = start + row
                    where = f"{list_file}:{line_numbers[i]}: " if list_file and line_numbers is not None else ""
                    problems.append(f"{where}cannot read image '{paths[i]}': {reason}")
                else:
                    pixels[row] = image.reshape(-1)
            if problems:  # keep decoding to report every bad image, but write nothing more
                continue
            column = pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(row_bytes), stop - start, [None, pa.py_buffer(pixels)]
            )
            writer.write_batch(pa.record_batch([column, pa.array(labels[start:stop])], schema=schema))
        if problems:
            shown = problems[:max_errors]
            more = [f"... and {len(problems) - len(shown)} more"] if len(problems) > len(shown) else []
            source = f" from {list_file}" if list_file else ""
            summary = f"cannot build the image cache '{name}': {len(problems)} unreadable image(s){source}"
            raise UserError("\n".join([summary, *shown, *more]))
        writer.close()
        sink.flush()
        os.fsync(sink.fileno())
    _fsync_dir(final.parent)


def load_or_build(
    paths: Sequence[Path],
    labels: Sequence[int],
    size: int,
    cache_dir: Path,
    name: str,
    *,
    list_file: Path | None = None,
    line_numbers: Sequence[int] | None = None,
    progress: bool = True,
    workers: int = 2,
    max_errors: int = 20,
) -> DecodedImages:
    """Open the cache of these images at `size` px, decoding and writing it first if needed.

    `name` is a human hint for the file name (e.g. the list name "RAF_train");
    `list_file`/`line_numbers` make decode errors point at the list line of each image.
    Raises UserError listing every unreadable image.
    """
    labels_array = np.asarray(labels, dtype=np.int64)
    if line_numbers is not None and len(line_numbers) != len(paths):
        raise ValueError(f"{len(paths)} paths but {len(line_numbers)} line numbers")
    cache_dir = Path(cache_dir)
    final = cache_path(cache_dir, name, size, cache_key(paths, labels_array, size))
    images = _open_matching(final, labels_array, size)
    if images is not None:
        return images
    cache_dir.mkdir(parents=True, exist_ok=True)
    with build_lock(cache_dir):
        # Another process may have finished this very cache while we waited for the lock.
        images = _open_matching(final, labels_array, size)
        if images is None:
            _write_cache(final, list(paths), labels_array, size, name=name, list_file=list_file,
                         line_numbers=line_numbers, progress=progress, workers=workers,
                         max_errors=max_errors)
            images = DecodedImages(final)
    return images
