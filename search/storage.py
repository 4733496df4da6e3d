"""Where a search's results live: a local folder, or any URI pyarrow's filesystems open.

`output.results_dir` may be a local path or a URI such as `s3://bucket/prefix` (also
`gs://`, `hdfs://`, ... whatever `pyarrow.fs.FileSystem.from_uri` understands; S3
credentials, region and endpoint come from the usual AWS environment variables or
files, e.g. AWS_ENDPOINT_URL for an S3-compatible server). Ray Tune is given the same
string and resolves it the same way, so Tune's files, our exports and the resolved config
all end up in one place. `Location` is the little of pathlib the search needs, on top of
a pyarrow filesystem; a local location behaves exactly like the local folder it names.
Optuna's storage (config `search.storage`) is chosen here too (`optuna_storage`).
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pyarrow.fs as pafs

from lacmfer.config import ExperimentConfig, is_uri
from lacmfer.errors import UserError

#: Where a driver keeps what must stay on its own disk when the results are in object
#: storage: the experiment lock and the default Optuna SQLite database.
LOCAL_STATE_ROOT = Path.home() / ".cache" / "lacmfer" / "experiments"


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
        parent = self.path.rstrip("/").rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if not self.is_local:
            with self.fs.open_output_stream(self.path) as stream:
                stream.write(data)
            return
        tmp = f"{parent}/.{self.name}.tmp"
        try:
            with self.fs.open_output_stream(tmp) as stream:
                stream.write(data)
            self.fs.move(tmp, self.path)
        finally:
            if self.fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                self.fs.delete_file(tmp)

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


def experiment_location(cfg: ExperimentConfig) -> Location:
    """Where the experiment `cfg.output.name` lives: `<results_dir>/<name>`."""
    return location(cfg.output.results_dir) / cfg.output.name


def local_state_dir(cfg: ExperimentConfig) -> Path:
    """The driver's own folder for the experiment: the experiment folder itself when the
    results are local, else a folder under LOCAL_STATE_ROOT named after the URI."""
    if not is_uri(str(cfg.output.results_dir)):
        return cfg.experiment_dir
    uri = str(experiment_location(cfg))
    return LOCAL_STATE_ROOT / f"{cfg.output.name}-{hashlib.sha256(uri.encode()).hexdigest()[:12]}"


# ---------------------------------------------------------------- Optuna's storage


def optuna_storage(cfg: ExperimentConfig) -> optuna.storages.BaseStorage:
    """The storage of the experiment's studies (config `search.storage`).

    An RDB URL as given; a journal file for any other value (a path); by default SQLite
    `optuna.db` in `local_state_dir(cfg)`: the experiment folder for local results. With
    results in object storage that file is on the driver's disk (SQLite needs file locks)
    and `upload_study_copy` puts a copy beside the results after each split.
    """
    storage = cfg.search.storage
    if storage is None:
        folder = local_state_dir(cfg)
        folder.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(f"sqlite:///{folder / 'optuna.db'}")
    if is_uri(storage):
        return optuna.storages.RDBStorage(storage)
    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))


def upload_study_copy(cfg: ExperimentConfig) -> None:
    """Copy the driver's default SQLite database beside object-storage results (else nothing to do)."""
    local = local_state_dir(cfg) / "optuna.db"
    if cfg.search.storage is None and is_uri(str(cfg.output.results_dir)) and local.exists():
        (experiment_location(cfg) / "optuna.db").upload(local)


@contextlib.contextmanager
def readable_optuna_storage(cfg: ExperimentConfig, exp: Location) -> Iterator[str | optuna.storages.BaseStorage | None]:
    """The studies of the experiment at `exp`, for reading; None when there are none.

    Default storage: `exp/optuna.db`, or for object storage the driver's own copy when
    this machine ran the search (the newest), else the copy beside the results.
    """
    if cfg.search.storage is not None:
        yield optuna_storage(cfg)
        return
    db = exp / "optuna.db"
    own = local_state_dir(cfg) / "optuna.db" if not exp.is_local else None
    if exp.is_local or (own is not None and own.exists()):
        path = db.local_path() if own is None else own
        yield f"sqlite:///{path}" if path.exists() else None
        return
    if not db.exists():
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="lacmfer-optuna-") as folder:
        db.download(Path(folder) / "optuna.db")
        yield f"sqlite:///{folder}/optuna.db"
