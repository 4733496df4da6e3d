"""Results in object storage: a search, its export and its resume on an S3 server on 127.0.0.1 (moto)."""

from __future__ import annotations

import re

import optuna
import pyarrow.parquet as pq
import pytest
import ray

from lacmfer.config import config_from_dict, parse_yaml
from lacmfer.errors import UserError
from search import storage
from search.storage import Location, location
from tests.test_search import save_yaml, search_config


def test_results_uri_stays_a_uri_and_local_paths_stay_paths(tmp_path):
    cfg = config_from_dict({"output": {"results_dir": "s3://results/searches/", "name": "x"}})
    assert cfg.output.results_dir == "s3://results/searches"  # not Path("s3:/results/searches")
    with pytest.raises(UserError, match="output.results_dir: s3://results/searches is object storage"):
        cfg.experiment_dir  # noqa: B018 -- final training writes locally: refused clearly
    local = config_from_dict({"output": {"results_dir": str(tmp_path / "r"), "name": "x"}})
    assert local.experiment_dir == tmp_path / "r" / "x"
    assert str(storage.ExperimentLocations.of(local).folder) == str(tmp_path / "r" / "x")


def test_location_reads_and_writes_both_kinds(s3, tmp_path):
    for base in (location("s3://results/unit"), location(tmp_path / "unit")):
        file = base / "deep" / "a.txt"
        assert not file.exists()
        file.write_text("first")
        file.write_text("second")  # replaces
        assert file.read_text() == "second" and file.exists() and (base / "deep").is_dir()
        assert [f.base_name for f in base.fs.get_file_info(storage.pafs.FileSelector(f"{base.path}/deep"))] == ["a.txt"]
        file.unlink()
        assert not file.exists()


@pytest.fixture
def ray_with_s3_env(s3, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024**2)
    yield
    ray.shutdown()


def test_search_and_export_on_s3(synth_tiny, tmp_path, monkeypatch, ray_with_s3_env):
    from tune import main

    monkeypatch.setattr(storage, "LOCAL_STATE_ROOT", tmp_path / "driver-state")
    monkeypatch.chdir(tmp_path)
    cfg = search_config(synth_tiny, tmp_path, "on-s3", data={"targets": ["CK"]},
                        schedule={"steps": 4, "lr_decay_steps": 4}, search={"num_samples": 2, "max_concurrent": 2})
    config = save_yaml(cfg, tmp_path)
    assert main(["--config", str(config), "--results", "s3://results/searches"]) == 0
    assert not (tmp_path / "s3:").exists()  # nothing landed in a local folder named after the URI

    exp = location("s3://results/searches/on-s3")
    for name in ("config.yaml", "summary.md", "trials.parquet", "best/CK.yaml", "optuna.db"):
        assert (exp / name).exists(), name
    assert (exp / "CK").is_dir()  # Tune's own experiment folder
    table = pq.read_table((exp / "trials.parquet").path, filesystem=exp.fs).to_pylist()
    assert len(table) == 2 and sum(r["exported"] for r in table) == 1
    best = load_config_text(exp / "best" / "CK.yaml")
    row = next(r for r in table if r["exported"])
    assert best.loss.hyper_align == pytest.approx(row["hyper_align"]) and best.data.targets == ["CK"]
    study = optuna.load_study(study_name="on-s3/CK", storage=storage.ExperimentLocations.of(load_config_text(exp / "config.yaml")).optuna_storage())
    assert len(study.trials) == 2

    # The export from the bucket alone: another machine, without the driver's own database.
    for file in (exp / "summary.md", exp / "trials.parquet", exp / "best" / "CK.yaml"):
        file.unlink()
    monkeypatch.setattr(storage, "LOCAL_STATE_ROOT", tmp_path / "another-machine")
    assert main(["--export-only", "--name", "on-s3", "--results", "s3://results/searches"]) == 0
    again = pq.read_table((exp / "trials.parquet").path, filesystem=exp.fs).to_pylist()
    assert again == table
    summary = (exp / "summary.md").read_text()
    assert "optuna.db not found" not in summary and "complete of 2 Optuna trials" in summary
    pictures = re.findall(r"\]\((plots/[^)]+\.png)\)", summary)
    assert pictures and all((exp / picture).exists() for picture in pictures)  # drawn locally, uploaded
    assert load_config_text(exp / "best" / "CK.yaml") == best


def load_config_text(file: Location):
    return config_from_dict(parse_yaml(file.read_text(), str(file)), source=str(file))


def test_resume_on_s3_widens_the_search(synth_tiny, tmp_path, monkeypatch, capsys, ray_with_s3_env):
    from tune import main

    monkeypatch.setattr(storage, "LOCAL_STATE_ROOT", tmp_path / "driver-state")
    monkeypatch.chdir(tmp_path)
    cfg = search_config(synth_tiny, tmp_path, "wide", data={"targets": ["CK"]},
                        schedule={"steps": 4, "lr_decay_steps": 4}, search={"num_samples": 2, "max_concurrent": 2})
    assert main(["--config", str(save_yaml(cfg, tmp_path)), "--results", "s3://results/searches"]) == 0
    exp = location("s3://results/searches/wide")
    copy = (exp / "optuna.db").read_bytes()
    widen = ["--resume", "--name", "wide", "--results", "s3://results/searches", "--num-samples", "3", "--targets", "RAF"]

    # Another machine lacks the driver's database: refused, and the copy in the bucket kept.
    monkeypatch.setattr(storage, "LOCAL_STATE_ROOT", tmp_path / "another-machine")
    with pytest.raises(SystemExit) as exit_info:
        main(widen)
    assert exit_info.value.code == 2
    assert "--resume: split CK ran 2 trial(s) but its Optuna study wide/CK is lost" in capsys.readouterr().err
    assert (exp / "optuna.db").read_bytes() == copy

    monkeypatch.setattr(storage, "LOCAL_STATE_ROOT", tmp_path / "driver-state")
    assert main(widen) == 0
    table = pq.read_table((exp / "trials.parquet").path, filesystem=exp.fs).to_pylist()
    assert sorted(r["target"] for r in table) == ["CK"] * 3 + ["RAF"] * 3
    assert (exp / "best" / "RAF.yaml").exists() and (exp / "CK" / "round-2").is_dir()
    saved = load_config_text(exp / "config.yaml")
    assert saved.data.targets == ["CK", "RAF"] and saved.search.num_samples == 3
    for target in ("CK", "RAF"):  # the same study continued: Optuna holds every trial Tune ran
        study = optuna.load_study(study_name=f"wide/{target}", storage=storage.ExperimentLocations.of(saved).optuna_storage())
        assert len(study.trials) == 3 and all(t.state.is_finished() for t in study.trials)
