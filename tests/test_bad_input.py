"""Bad lists stop `tune.py` before Ray starts, and `python train.py` before training.

Each case replaces CK's list (SynthFER tiny) with a broken one; both entry points must
exit 2 with a `file:line` (or `file:`) error and no traceback, and `tune.py` must not start Ray nor
create the experiment.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import ray
import yaml

import train
import tune
from lacmfer.config import save_config
from tests.conftest import tiny_config


def _label_out_of_range(tmp_path: Path, lines: list[str], root: Path) -> tuple[Path, str]:
    lines[2] = lines[2].rsplit(maxsplit=1)[0] + " 9"
    lst = tmp_path / "CK_bad.txt"
    lst.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lst, r"CK_bad\.txt:3: label '9' is not a class id 0\.\.6"


def _corrupt_image(tmp_path: Path, lines: list[str], root: Path) -> tuple[Path, str]:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    lines[2] = f"{broken} {lines[2].rsplit(maxsplit=1)[1]}"  # an absolute path, kept as is
    lst = tmp_path / "CK_bad.txt"
    lst.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lst, rf"CK_bad\.txt:3: cannot read image '{broken}'"


def _missing_list(tmp_path: Path, lines: list[str], root: Path) -> tuple[Path, str]:
    return tmp_path / "CK_missing.txt", r"CK_missing\.txt: list file not found"


BAD_LISTS = {"label out of range": _label_out_of_range, "corrupt image": _corrupt_image,
             "missing list file": _missing_list}


@pytest.fixture(params=list(BAD_LISTS))
def bad_config(request, synth_tiny, tmp_path) -> tuple[Path, str, Path]:
    """(config file, expected error pattern, experiment folder) for one broken CK list."""
    lines = (synth_tiny / "CK.txt").read_text(encoding="utf-8").splitlines()
    lst, pattern = BAD_LISTS[request.param](tmp_path, lines, synth_tiny)
    cfg = tiny_config(synth_tiny, data={"lists": {"CK": {"train": str(lst), "test": str(lst)}},
                                        "cache_dir": str(tmp_path / "cache")},
                      output={"results_dir": str(tmp_path / "results"), "name": "bad"})
    path = tmp_path / "bad.yaml"
    save_config(cfg, path)
    return path, pattern, cfg.experiment_dir


def _reported(capsys, pattern: str) -> None:
    """The error names the file (and line) and comes without a traceback.

    Several bad images are listed one per line after a summary line, as the cache
    reports them (lacmfer/data/cache.py); every other case is a single line.
    """
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert re.search(r"^error: ", err, re.MULTILINE), err
    assert re.search(rf"^(error: )?.*{pattern}", err, re.MULTILINE), err


def test_tune_refuses_a_bad_list_before_ray_starts(bad_config, capsys, monkeypatch):
    path, pattern, exp_dir = bad_config

    def no_ray(*args, **kwargs):
        raise AssertionError("tune.py started Ray with a bad list")

    monkeypatch.setattr(ray, "init", no_ray)
    with pytest.raises(SystemExit) as exit_info:
        tune.main(["--config", str(path)])
    assert exit_info.value.code == 2
    _reported(capsys, pattern)
    assert not ray.is_initialized()
    assert not (exp_dir / "config.yaml").exists()  # the fixed list runs without --resume


def test_final_training_refuses_a_bad_list(bad_config, capsys):
    path, pattern, _ = bad_config
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--config", str(path), "--target", "JAFFE", "--seeds", "0", "--no-progress"])
    assert exit_info.value.code == 2
    _reported(capsys, pattern)


def test_tune_builds_every_cache_before_ray_starts(synth_tiny, tmp_path, monkeypatch):
    """A good config: the driver decodes every list once, so trials only open caches."""
    cfg = tiny_config(synth_tiny, data={"cache_dir": str(tmp_path / "cache")},
                      output={"results_dir": str(tmp_path / "results"), "name": "good"})
    path = tmp_path / "good.yaml"
    save_config(cfg, path)
    caches_at_search_start: list[str] = []

    def fake_search(cfg, address=None, resume=False, final=None):
        caches_at_search_start.extend(sorted(p.name.split("-")[0] for p in (tmp_path / "cache").glob("*.arrow")))
        raise SystemExit(0)

    monkeypatch.setattr("search.driver.run_search", fake_search)
    with pytest.raises(SystemExit):
        tune.main(["--config", str(path)])
    assert caches_at_search_start == sorted(["CK", "JAFFE", "Oulu", "RAF_train", "RAF_test", "FER2013_train",
                                             "FER2013_test", "Aff_train", "Aff_test"])


def test_tune_refuses_cuda_trials_that_reserve_no_gpu(synth_tiny, tmp_path, capsys, monkeypatch):
    cfg = tiny_config(synth_tiny, resources={"device": "cuda", "gpu": 0},
                      output={"results_dir": str(tmp_path / "results"), "name": "cuda"})
    path = tmp_path / "cuda.yaml"
    save_config(cfg, path)
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("tune.py started Ray"))
    with pytest.raises(SystemExit) as exit_info:
        tune.main(["--config", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: resources.device: 'cuda' but resources.gpu is 0") and err.count("\n") == 1


def _write_not_a_checkpoint(path: Path) -> None:
    path.write_text("these are not weights\n", encoding="utf-8")


#: Bad `model.pretrained` files: (model.width, how the file is made, the expected error).
BAD_PRETRAINED = {
    "missing file": (1.0, None, r"^error: .*trunk\.pt: pretrained trunk file not found$"),
    "not a checkpoint": (1.0, _write_not_a_checkpoint, r"^error: .*trunk\.pt: cannot read as a torch state dict"),
    "width not 1": (0.25, _write_not_a_checkpoint,
                    r"^error: .*pretrained\.yaml: model: pretrained: .*trunk\.pt .*needs width 1, got width 0\.25"),
}


@pytest.fixture(params=list(BAD_PRETRAINED))
def bad_pretrained(request, synth_tiny, tmp_path) -> tuple[Path, str]:
    """(config file, expected error) for a `model.pretrained` file no run could load."""
    width, make, pattern = BAD_PRETRAINED[request.param]
    trunk = tmp_path / "trunk.pt"
    if make is not None:
        make(trunk)
    path = tmp_path / "pretrained.yaml"
    raw = tiny_config(synth_tiny, output={"results_dir": str(tmp_path / "results"), "name": "pretrained"}).to_dict()
    raw["model"].update(width=width, pretrained=str(trunk))
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path, pattern


def test_a_bad_pretrained_file_stops_both_entry_points_before_ray(bad_pretrained, capsys, monkeypatch):
    """One line naming the file (or the config and key), exit 2, for the search and final training alike."""
    path, pattern = bad_pretrained
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started with a bad model.pretrained"))
    for main, argv in ((tune.main, ["--config", str(path)]),
                       (train.main, ["--config", str(path), "--target", "CK", "--seeds", "0", "--no-progress"])):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err  # after the caches' progress bars
        assert "Traceback" not in err and err.count("error: ") == 1, err
        assert re.search(pattern, err.splitlines()[-1]), err
