"""search.export, computed first and written last: a failure before the write phase leaves the
previous export as it was, byte for byte (best/*.yaml, trials.parquet, summary.md, plots/*),
locally and in object storage (an S3 server on 127.0.0.1, the `s3` fixture of tests/conftest.py); a failure
inside the write phase leaves every file whole and summary.md the previous one.

The next export changes or removes every file of the previous one but the two pictures drawn
from the unchanged study (CHANGED, REMOVED): it selects by the last evaluation (another best
config for CK), has no exportable trial for JAFFE (its best config and learning curves are to
be removed), and fewer CK trials (another table, other pictures).
"""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

from search import storage
from search.analysis import TrialRecord
from search.export import write_export
from search.storage import ExperimentLocations, Location, location
from tests.test_export import ck_records, curve, jaffe_records, make_config, make_study

#: What the next export changes (CHANGED) or removes (REMOVED) of the previous one.
CHANGED = ["/best/CK.yaml", "/trials.parquet", "/summary.md", "/plots/CK_curves.png", "/plots/CK_validators.png"]
REMOVED = ["/best/JAFFE.yaml", "/plots/JAFFE_curves.png"]


def previous_records() -> dict[str, list[TrialRecord]]:
    unlabelled = [{k: v for k, v in report.items() if k != "target_acc"} for report in curve([0.4, 0.5], [0, 0])]
    jaffe = TrialRecord("jf_b", "JAFFE", {"hyper_align": 0.2, "threshold": 0.4, "cluster_ramp": "step"},
                        "completed", unlabelled)  # no target_acc: no validators picture (a second one costs 1 s)
    return {"CK": ck_records(), "JAFFE": [jaffe]}


def next_export(places: ExperimentLocations, cfg):
    return write_export(places, cfg, {"CK": ck_records()[:3], "JAFFE": jaffe_records()}, scope="last")


def snapshot(folder: Location) -> dict[str, bytes]:
    """Every file under `folder` (its path below it → its bytes), local or in object storage."""
    files = {}
    for info in folder.fs.get_file_info(pafs.FileSelector(folder.path, recursive=True)):
        if info.type == pafs.FileType.File:
            with folder.fs.open_input_stream(info.path) as stream:
                files[info.path[len(folder.path):]] = stream.read()
    return files


@pytest.fixture(params=["local", "s3"])
def previous(request, tmp_path, monkeypatch):
    """An experiment with a complete previous export (its study in optuna.db beside it),
    in a local folder or on the S3 server: (cfg, places, snapshot of the folder)."""
    cfg = make_config(tmp_path)
    (tmp_path / "study").mkdir()
    make_study(tmp_path / "study", "exp1/CK")
    if request.param == "local":
        folder = location(cfg.experiment_dir)
    else:
        request.getfixturevalue("s3")
        monkeypatch.setattr(storage, "LOCAL_STATE_ROOT", tmp_path / "driver-state")  # no copy of the db here
        folder = location("s3://results/exp1")
    (folder / "optuna.db").upload(tmp_path / "study" / "optuna.db")
    places = ExperimentLocations.of(cfg, folder)
    write_export(places, cfg, previous_records())
    before = snapshot(folder)
    assert set(CHANGED + REMOVED) <= set(before) and "/plots/CK_importance.png" in before
    return cfg, places, before


@pytest.mark.parametrize("failing", ["search.plots.plot_importance", "search.export.summary.slots_section"],
                         ids=["last picture", "summary"])
def test_a_late_failure_leaves_the_previous_export_intact(previous, monkeypatch, failing):
    """The importance bars (the last picture drawn: JAFFE has no study) or the slots' table (the
    last part of summary.md rendered) raise: everything else was computed by then, and nothing
    may have been written or deleted.

    Catches (search/export/__init__.py, `write_export`): trials.parquet written as soon as
    computed, `files.append((trials_path, trials_parquet(...)))` as
    `trials_path.write_bytes(trials_parquet(...))` (the table is new, the rest old); the
    pictures written as they are drawn, before the summary is computed (what `_plots` did),
    `files += plots.files(exp_dir)` as `[path.write_bytes(png) for path, png in plots.files(exp_dir) if png]`.
    """
    cfg, places, before = previous

    def fails(*args, **kwargs):
        raise RuntimeError("injected: a late part of the export fails")

    monkeypatch.setattr(failing, fails)
    with pytest.raises(RuntimeError, match="injected"):
        next_export(places, cfg)
    assert snapshot(places.folder) == before


def test_summary_md_is_written_last_and_no_file_is_half_written(tmp_path, monkeypatch):
    """A write phase that fails at its last file: every other file is the next export's
    (written or removed), summary.md is still the previous one, no file half-written.

    Catches (search/export/__init__.py, `_write`): summary.md written before the other
    files or the removals, e.g. `summary.write_bytes(summary_bytes)` moved to the top of
    `_write` (a summary of this export over files of the previous one).
    """
    cfg = make_config(tmp_path)
    cfg.experiment_dir.mkdir(parents=True)
    make_study(cfg.experiment_dir, "exp1/CK")
    places = ExperimentLocations.of(cfg)
    write_export(places, cfg, previous_records())
    before = snapshot(places.folder)
    write_bytes = Location.write_bytes

    def disk_full_at_the_summary(self, data):
        if self.name == "summary.md":
            raise OSError(28, "No space left on device")
        write_bytes(self, data)

    with monkeypatch.context() as patch:
        patch.setattr(Location, "write_bytes", disk_full_at_the_summary)
        with pytest.raises(OSError, match="No space left"):
            next_export(places, cfg)
    failed = snapshot(places.folder)
    assert failed["/summary.md"] == before["/summary.md"]
    assert all(failed[name] != before[name] for name in CHANGED if name != "/summary.md")
    assert not set(REMOVED) & set(failed)
    assert not list(cfg.experiment_dir.rglob(".*.tmp*"))  # each file whole (lacmfer.files.atomic_path)

    next_export(places, cfg)  # exporting again completes it
    after = snapshot(places.folder)
    assert after["/summary.md"] != before["/summary.md"]
    assert {name: data for name, data in after.items() if name != "/summary.md"} == {
        name: data for name, data in failed.items() if name != "/summary.md"}
