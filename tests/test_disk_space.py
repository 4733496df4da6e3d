"""Disk space: the estimate before the first trial, and a full volume recognised as such (search/disk_space.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest

from lacmfer.config import load_config
from lacmfer.errors import UserError
from lacmfer.run.lifecycle import state_file_bytes
from search import disk_space
from tests.conftest import REPO


def test_the_estimate_refuses_a_volume_too_small_and_warns_when_close(tmp_path, monkeypatch, capsys):
    """Catches: no check, or one that forgets the second checkpoint written while the first is replaced."""
    monkeypatch.setattr(disk_space, "free_bytes", lambda folder: 30 * 2**20)
    with pytest.raises(UserError, match=r"results: 30.0 MiB free, but the search keeps about 40.0 MiB \(4 trial\(s\) "
                                        r"× 2 checkpoints of about 5.0 MiB"):
        disk_space.check_space(tmp_path / "results", 4, 5 * 2**20)
    disk_space.check_space(tmp_path / "results", 2, 5 * 2**20)  # 20 MiB of 30: starts, with a warning
    assert "WARNING: " in capsys.readouterr().err
    disk_space.check_space(tmp_path / "results", 1, 5 * 2**20)
    assert capsys.readouterr().err == ""


def test_a_checkpoint_of_the_paper_setting_is_about_half_a_gibibyte():
    """The estimate's base (docs/BENCHMARKS.md measured 0.5 GiB per checkpoint at the paper's size).

    Catches: the optimiser's momentum left out (half), or the wrong network built.
    """
    size = state_file_bytes(load_config(REPO / "configs" / "cmfer_six.yaml"))
    assert 480 * 2**20 < size < 530 * 2**20


@pytest.fixture
def tiny_volume(tmp_path):
    """A 256 KiB tmpfs, a real volume that fills up (needs root, as the CI's machine has)."""
    mount = tmp_path / "volume"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)  # the test's SQLite engine may still hold a file


def test_final_training_on_a_full_volume_is_one_line_and_resumes_once_space_is_freed(synth_tiny, tiny_volume,
                                                                                     capsys):
    """Final training's results on a volume too small for a run's checkpoint: one line naming the
    folder, with the free space and the --resume command, exit 2; the earlier files intact;
    once the volume is grown (space freed), the printed command finishes every run.

    Catches: the OSError traceback (or N "attempt failed" runs and exit 1) instead of the line,
    and a resume that starts over or loses the config written before the volume filled.
    """
    from lacmfer.config import save_config
    from tests.conftest import tiny_config
    from train import main

    cfg = tiny_config(synth_tiny, data={"targets": ["CK"]}, output={"results_dir": str(tiny_volume), "name": "exp"})
    save_config(cfg, cfg.experiment_dir / "config.yaml")
    save_config(cfg.with_values({"data.targets": ["CK"]}), cfg.experiment_dir / "best" / "CK.yaml")
    best = (cfg.experiment_dir / "best" / "CK.yaml").read_text()
    argv = ["--experiment", str(cfg.experiment_dir), "--seeds", "0", "--sequential", "--no-progress"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: no space left on the volume of {cfg.experiment_dir / 'final'} (")
    assert "free now): the command stopped" in err and err.endswith(f"python train.py {' '.join(argv)} --resume")
    assert (cfg.experiment_dir / "best" / "CK.yaml").read_text() == best
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_volume)], check=True)
    assert main([*argv, "--resume"]) == 0
    assert (cfg.experiment_dir / "final" / "report.md").exists()


def test_full_volume_errors_are_recognised(tiny_volume):
    """A real full volume: the OSError of a plain write and SQLite's error under Optuna are both a full disk.

    Catches: a full optuna.db (Optuna's StorageInternalError or SQLAlchemy's OperationalError,
    never an OSError) reported as a traceback or as a damaged database.
    """
    with pytest.raises(OSError) as plain:
        (tiny_volume / "big").write_bytes(b"\0" * 2**20)
    assert disk_space.is_disk_full(plain.value)
    (tiny_volume / "big").unlink()

    filler = tiny_volume / "filler"
    study = optuna.create_study(storage=f"sqlite:///{tiny_volume / 'optuna.db'}")
    filler.write_bytes(b"\0" * (256 * 1024 - Path(tiny_volume / "optuna.db").stat().st_size - 8192))
    with pytest.raises(Exception) as full:
        for _ in range(10_000):
            trial = study.ask()
            trial.set_user_attr("padding", "x" * 8000)
            study.tell(trial, 1.0)
    assert disk_space.is_disk_full(full.value), repr(full.value)
    assert not disk_space.is_disk_full(ValueError("a bad value"))
