"""List files of the field: `relative/path label` per line, label last.

Every problem in a list (bad line, bad label, missing image) is collected and reported at
once as `file:line: what is wrong`, up to a limit, so a user fixes a list in one pass.
Images are only checked for existence here; the cache reports images that fail to decode.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import numpy as np

from lacmfer.config import DataConfig
from lacmfer.data.domains import DOMAINS, NUM_CLASSES
from lacmfer.errors import UserError


@dataclass(frozen=True)
class Manifest:
    """A validated list file: absolute image paths, labels and their source line numbers."""

    list_file: Path
    paths: list[Path]
    labels: np.ndarray  # int64, class ids 0..6
    line_numbers: np.ndarray  # int64, 1-based line of each entry in list_file

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def name(self) -> str:
        return self.list_file.stem


def _split_line(line: str) -> tuple[str, str]:
    """Split off the label (last token); the rest, possibly quoted or with spaces, is the path."""
    stripped = line.strip()
    if stripped[:1] in ("'", '"'):
        tokens = shlex.split(stripped, posix=True)
        if len(tokens) != 2:
            raise ValueError("expected a quoted path followed by a label")
        return tokens[0], tokens[1]
    parts = stripped.rsplit(maxsplit=1)
    if len(parts) != 2:
        raise ValueError("expected 'path label'")
    path, label = parts
    return path, label


def _resolve(path_text: str, root: Path) -> Path:
    # Windows separators appear in lists made on Windows; a drive path stays absolute.
    if "\\" in path_text:
        win = PureWindowsPath(path_text)
        if win.drive:
            return Path(path_text)
        path_text = win.as_posix()
    path = Path(path_text)
    return path if path.is_absolute() else root / path


def read_list_file(list_file: Path, root: Path, max_errors: int = 20, check_images: bool = True) -> Manifest:
    """Parse and validate one list file; images are relative to `root` unless absolute."""
    list_file = Path(list_file)
    try:
        # utf-8-sig: a byte-order mark (Windows Notepad writes one) is not part of the first path.
        text = list_file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{list_file}: list file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{list_file}: cannot read list file ({err})") from None

    paths: list[Path] = []
    labels: list[int] = []
    lines: list[int] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            path_text, label_text = _split_line(line)
        except ValueError as err:
            problems.append(f"{list_file}:{number}: {err}, got {line.strip()!r}")
            continue
        try:
            label = int(label_text)
        except ValueError:
            label = -1
        if not 0 <= label < NUM_CLASSES:
            problems.append(f"{list_file}:{number}: label {label_text!r} is not a class id 0..{NUM_CLASSES - 1}")
            continue
        path = _resolve(path_text, root)
        if check_images and not path.is_file():
            problems.append(f"{list_file}:{number}: image not found: {path}")
            continue
        paths.append(path)
        labels.append(label)
        lines.append(number)

    if problems:
        shown = problems[:max_errors]
        more = len(problems) - len(shown)
        tail = [f"... and {more} more problems in {list_file}"] if more else []
        raise UserError("\n".join(shown + tail))
    if not paths:
        raise UserError(f"{list_file}: the list has no images (expected lines 'path label')")
    return Manifest(list_file, paths, np.asarray(labels, dtype=np.int64), np.asarray(lines, dtype=np.int64))


@dataclass(frozen=True)
class DomainLists:
    """The manifests of one domain: unlabeled-stream/train list, test list, optional val list."""

    name: str
    train: Manifest
    test: Manifest
    val: Manifest | None


def _list_path(root: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else root / path


def ensure_data(data: DataConfig) -> None:
    """Generate SynthFER into the data root on first use when the config asks for it."""
    if data.synth is not None:
        from lacmfer.data.synth import ensure_synthfer  # generator only needed for SynthFER

        ensure_synthfer(data.root, data.synth.scale, data.synth.seed)
    elif not data.root.is_dir():
        raise UserError(f"data.root: folder not found: {data.root}")


def load_domains(data: DataConfig) -> dict[str, DomainLists]:
    """Read every domain's lists (defaults from the registry, overridable per domain)."""
    ensure_data(data)
    read: dict[Path, Manifest] = {}

    def manifest(root: Path, name: str) -> Manifest:
        path = _list_path(root, name)
        if path not in read:
            read[path] = read_list_file(path, root, data.max_list_errors)
        return read[path]

    domains = {}
    for name in data.domains:
        info = DOMAINS[name]
        override = data.lists.get(name)
        root = (override.root if override and override.root else None) or data.root
        train_name = (override.train if override else None) or info.train_list
        test_name = (override.test if override else None) or info.test_list
        val_name = override.val if override else None
        domains[name] = DomainLists(
            name,
            train=manifest(root, train_name),
            test=manifest(root, test_name),
            val=manifest(root, val_name) if val_name else None,
        )
    return domains


def unique_manifests(domains: dict[str, DomainLists]) -> list[Manifest]:
    """Every distinct list file once (lab sets use one list as both train and test)."""
    seen: dict[Path, Manifest] = {}
    for lists in domains.values():
        for m in (lists.train, lists.test, lists.val):
            if m is not None:
                seen.setdefault(m.list_file, m)
    return list(seen.values())
