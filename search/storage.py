"""Where a search's results live: a local folder, or any URI pyarrow's filesystems open.

`output.results_dir` may be a local path or a URI such as `s3://bucket/prefix` (also
`gs://`, `hdfs://`, ... whatever `pyarrow.fs.FileSystem.from_uri` understands; S3
credentials, region and endpoint come from the usual AWS environment variables or
files, e.g. AWS_ENDPOINT_URL for an S3-compatible server). Ray Tune is given the same
string and resolves it the same way, so Tune's files, our exports and the resolved config
all end up in one place. `Location` is the little of pathlib the search needs, on top of
a pyarrow filesystem; a local location behaves exactly like the local folder it names.
`ExperimentLocations` resolves, once, every place of one experiment: its folder, this
machine's state (lock, timeline), its rounds, and Optuna's storage (`search.storage`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pyarrow.fs as pafs

from lacmfer.config import ExperimentConfig, config_from_dict, is_uri, parse_yaml
from lacmfer.errors import UserError
from lacmfer.files import exclusive_lock, write_bytes_atomic
from search.disk_space import is_disk_full

#: Where a driver keeps what must stay on its own disk when the results are in object
#: storage: the experiment lock and the default Optuna SQLite database.
LOCAL_STATE_ROOT = Path.home() / ".cache" / "lacmfer" / "experiments"


class DamagedStudyStorage(UserError):
    """The experiment's Optuna storage exists but cannot be read as one (truncated, overwritten, foreign)."""

    def __init__(self, description: str, reason: str):
        self.description, self.reason = description, reason
        super().__init__(
            f"search.storage {description}: not a readable Optuna storage ({reason}); the trials' own records "
            "are intact: `tune.py --export-only` writes the best configs, trials.parquet and the summary without "
            "it (importances and search plots need it); `tune.py --rebuild-study` rebuilds it from them")


@contextlib.contextmanager
def reading_study_storage(description: str) -> Iterator[None]:
    """Turn the errors of a damaged Optuna storage into one line naming it (`DamagedStudyStorage`).

    SQLite raises DatabaseError ("database disk image is malformed", "file is not a
    database") as soon as it reads the file; a journal file with broken lines fails to
    decode. OperationalError (locked, unreachable) is not damage and passes through.
    """
    import sqlalchemy.exc

    try:
        yield
    except sqlalchemy.exc.OperationalError:
        raise
    except (sqlalchemy.exc.DatabaseError, optuna.exceptions.StorageInternalError, UnicodeDecodeError,
            json.JSONDecodeError) as err:
        if is_disk_full(err):  # a write that found no space: search.disk_space says so
            raise
        raise DamagedStudyStorage(description, str(getattr(err, "orig", None) or err).strip().splitlines()[0]) from None


@dataclass(frozen=True)
class Location:
    """A file or folder on a pyarrow filesystem: `fs` and the path inside it, and the
    string a user knows it by (`uri`: the local path, or `s3://bucket/...`)."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        return Location(self.fs, self.path.rstrip("/").rsplit("/", 1)[0], self.uri.rstrip("/").rsplit("/", 1)[0])

    def __truediv__(self, name: str) -> Location:
        return Location(self.fs, f"{self.path.rstrip('/')}/{name}", f"{self.uri.rstrip('/')}/{name}")

    def __str__(self) -> str:
        return self.uri

    def local_path(self) -> Path:
        """The local path of a local location (a UserError for object storage)."""
        if not self.is_local:
            raise UserError(f"{self.uri}: this needs a local folder, not object storage")
        return Path(self.path)

    def _type(self) -> pafs.FileType:
        return self.fs.get_file_info(self.path).type

    def exists(self) -> bool:
        return self._type() != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def read_bytes(self) -> bytes:
        try:
            with self.fs.open_input_stream(self.path) as stream:
                return stream.read()
        except FileNotFoundError:
            raise UserError(f"{self.uri}: not found") from None

    def read_text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read_bytes().decode(encoding, errors)

    def write_bytes(self, data: bytes) -> None:
        """Write a whole file so that a reader never sees half of it.

        Local: a temp file renamed into place. Object storage: one PUT is atomic already
        (and a rename would be a copy).
        """
        if self.is_local:
            write_bytes_atomic(Path(self.path), data)
            return
        self.fs.create_dir(self.path.rstrip("/").rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(self.path) as stream:
            stream.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def unlink(self) -> None:
        """Delete the file if it is there."""
        if self._type() == pafs.FileType.File:
            self.fs.delete_file(self.path)

    def download(self, to: Path) -> None:
        """Copy this file to the local path `to`."""
        to.parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self.path, str(to), source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem())

    def upload(self, source: Path) -> None:
        """Copy the local file `source` here."""
        self.write_bytes(source.read_bytes())


def location(where: str | Path) -> Location:
    """The Location of a local path or a filesystem URI (see the module docstring)."""
    text = str(where)
    if not is_uri(text):
        return Location(pafs.LocalFileSystem(), str(Path(text).absolute()), str(Path(text).absolute()))
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (OSError, ValueError, TypeError) as err:  # pyarrow says which part it could not use
        raise UserError(f"{text}: cannot open this results location ({err})") from None
    return Location(fs, path, text.rstrip("/"))


#: File names inside an experiment's folders (the whole layout: docs/ARCHITECTURE.md).
CONFIG_FILE = "config.yaml"
OPTUNA_DB = "optuna.db"
TIMELINE_FILE = "timeline.jsonl"
SLOTS_FILE = "slots.json"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class ExperimentLocations:
    """Every place one experiment's search files live, resolved once (`of`) and handed to the
    driver, the Tuner, export, analysis and plots (final training's `final/` folders are laid
    out by train.py and lacmfer.run.final_run).

    folder        `<results_dir>/<name>`: the splits' Tune experiments, config.yaml, exports
    local_state   this machine's folder for the experiment: the driver lock, the slot
                  timeline and the default Optuna SQLite. The folder itself when the results
                  are local; under LOCAL_STATE_ROOT, named after the URI, when they are in
                  object storage (SQLite and flock need a local disk)
    storage       `search.storage` as configured; None for the default SQLite
    """

    name: str
    folder: Location
    local_state: Path
    storage: str | None

    @classmethod
    def of(cls, cfg: ExperimentConfig, folder: str | Path | Location | None = None) -> ExperimentLocations:
        """The locations of `cfg`'s experiment; `folder` where a finished one is read from
        elsewhere (a copy, a download) instead of `<results_dir>/<name>`."""
        if folder is None:
            folder = location(cfg.output.results_dir) / cfg.output.name
        elif not isinstance(folder, Location):
            folder = location(folder)
        if folder.is_local:
            local_state = folder.local_path()
        else:
            local_state = LOCAL_STATE_ROOT / f"{cfg.output.name}-{hashlib.sha256(folder.uri.encode()).hexdigest()[:12]}"
        return cls(cfg.output.name, folder, local_state, cfg.search.storage)

    @classmethod
    def read(cls, folder: str | Path | Location) -> tuple[ExperimentConfig, ExperimentLocations]:
        """The saved config of the experiment written by tune.py in `folder`, and its locations there."""
        folder = folder if isinstance(folder, Location) else location(folder)
        if not folder.is_dir():
            raise UserError(f"{folder}: no such experiment folder (run `python tune.py --name NAME` first)")
        path = folder / CONFIG_FILE
        if not path.exists():
            raise UserError(f"{path}: not found; {folder} does not look like a search written by tune.py")
        cfg = config_from_dict(parse_yaml(path.read_text(), str(path)), source=str(path))
        return cfg, cls.of(cfg, folder)

    @property
    def config_file(self) -> Location:
        return self.folder / CONFIG_FILE

    @property
    def timeline(self) -> Path:
        """The file every split's driver records its trials' starts and ends in."""
        return self.local_state / TIMELINE_FILE

    @property
    def slots_record(self) -> Location:
        """The slot usage of every run of the search (search.slots)."""
        return self.folder / SLOTS_FILE

    def split(self, target: str) -> Location:
        return self.folder / target

    def round(self, target: str, index: int) -> Location:
        """The Tune experiment folder of one round of a split's search.

        Round 1 is the split's folder `<exp>/<target>`; a resumed search given a larger
        `num_samples` runs its extra trials as round k ≥ 2 in `<exp>/<target>/round-<k>`
        (same Optuna study, a Tune experiment of its own), so every trial of a split stays
        under its folder.
        """
        return self.split(target) if index == 1 else self.split(target) / f"round-{index}"

    def rounds(self, target: str) -> list[Location]:
        """The rounds of a split that exist, in order."""
        found: list[Location] = []
        while self.round(target, len(found) + 1).is_dir():
            found.append(self.round(target, len(found) + 1))
        return found

    def study_name(self, target: str) -> str:
        """The split's Optuna study."""
        return f"{self.name}/{target}"

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Refuse a second driver on this experiment (an exclusive lock in `local_state`;
        a killed driver never leaves it locked)."""
        def refuse(holder: str) -> None:
            raise UserError(f"{self.local_state}: another tune.py (pid {holder}) is running this experiment; "
                            "wait for it to end (or stop it) before starting or resuming it")

        return exclusive_lock(self.local_state / LOCK_FILE, on_busy=refuse)

    # ------------------------------------------------------------ Optuna's storage

    @property
    def default_database(self) -> Path:
        return self.local_state / OPTUNA_DB

    def storage_description(self) -> str:
        """The studies' storage as a user configured it, for messages."""
        return self.storage or str(self.default_database)

    def optuna_storage(self) -> optuna.storages.BaseStorage:
        """The storage of the experiment's studies (config `search.storage`).

        An RDB URL as given; a journal file for any other value (a path); by default SQLite
        `optuna.db` in `local_state`. With results in object storage that file is on the
        driver's disk and `upload_study_copy` puts a copy beside the results after the search.
        A storage that cannot be read as Optuna's is a `DamagedStudyStorage`.
        """
        with reading_study_storage(self.storage_description()):
            return self._open_optuna_storage()

    def _open_optuna_storage(self) -> optuna.storages.BaseStorage:
        if self.storage is None:
            self.local_state.mkdir(parents=True, exist_ok=True)
            return optuna.storages.RDBStorage(f"sqlite:///{self.default_database}")
        if is_uri(self.storage):
            return optuna.storages.RDBStorage(self.storage)
        Path(self.storage).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(self.storage))

    def upload_study_copy(self) -> None:
        """Copy the driver's default SQLite database beside object-storage results (else nothing to do)."""
        if self.storage is None and not self.folder.is_local and self.default_database.exists():
            (self.folder / OPTUNA_DB).upload(self.default_database)

    @contextlib.contextmanager
    def readable_optuna_storage(self) -> Iterator[str | optuna.storages.BaseStorage | None]:
        """The experiment's studies, for reading; None when there are none.

        Default storage: `<folder>/optuna.db`, or for object storage this machine's own copy
        when it ran the search (the newest), else the copy beside the results.
        """
        if self.storage is not None:
            yield self.optuna_storage()
            return
        if self.folder.is_local or self.default_database.exists():
            yield f"sqlite:///{self.default_database}" if self.default_database.exists() else None
            return
        copy = self.folder / OPTUNA_DB
        if not copy.exists():
            yield None
            return
        with tempfile.TemporaryDirectory(prefix="lacmfer-optuna-") as folder:
            copy.download(Path(folder) / OPTUNA_DB)
            yield f"sqlite:///{folder}/{OPTUNA_DB}"
