"""The damaged files of an experiment: each is one line naming it, or rebuilt from what it was written from."""

from __future__ import annotations

import json

import pytest

from lacmfer.config import save_config
from lacmfer.errors import UserError
from search.slots import record_usage, slots_section
from search.storage import ExperimentLocations, location
from tests.conftest import tiny_config


def timeline_of_two_runs(path):
    """Two runs of one split: the first with two trials side by side for 10 s, the second with one."""
    lines = [{"event": "run", "t": 0.0, "slots": 2, "targets": ["CK"]},
             {"event": "start", "t": 0.0, "target": "CK", "trial": "a"},
             {"event": "start", "t": 0.0, "target": "CK", "trial": "b"},
             {"event": "end", "t": 10.0, "target": "CK", "trial": "a"},
             {"event": "end", "t": 10.0, "target": "CK", "trial": "b"},
             {"event": "run", "t": 100.0, "slots": 2, "targets": ["CK"]},
             {"event": "start", "t": 100.0, "target": "CK", "trial": "c"},
             {"event": "end", "t": 104.0, "target": "CK", "trial": "c"}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\0\0garbage\n", encoding="utf-8")


@pytest.mark.parametrize("damage", [b"[{\"started\": 0, \"slots\"", b"\xff\xfe not json", b"{\"a\": 1}"])
def test_a_damaged_slots_record_is_rebuilt_from_the_timeline(tmp_path, capsys, damage):
    """Catches: the export (and the end of a search) ending in a JSONDecodeError traceback on a
    truncated or overwritten slots.json, or rebuilding it with the latest run counted twice."""
    timeline = tmp_path / "timeline.jsonl"
    timeline_of_two_runs(timeline)
    slots = tmp_path / "slots.json"
    slots.write_bytes(damage)
    section = "\n".join(slots_section(location(slots), timeline))
    assert "| 2 | 2 | 10 | 2.00 | 2 | 1.00 |" in section and "| 2 | 1 | 4 | 1.00 | 1 | 0.50 |" in section
    assert f"WARNING: {slots} is damaged" in capsys.readouterr().err
    usage = record_usage(timeline, location(slots))  # the end of the second run records it
    assert usage.trials == 1
    assert [r["trials"] for r in json.loads(slots.read_text())] == [2, 1]


def test_a_damaged_config_of_the_experiment_is_one_line(synth_tiny, tmp_path):
    """Catches: a YAML parser error (traceback) on a truncated config.yaml at --resume or --export-only."""
    cfg = tiny_config(synth_tiny, output={"results_dir": str(tmp_path), "name": "exp"})
    path = cfg.experiment_dir / "config.yaml"
    save_config(cfg, path)
    path.write_text(path.read_text()[:200] + "\n  bad: [unclosed\n")
    with pytest.raises(UserError, match=rf"{path}"):
        ExperimentLocations.read(cfg.experiment_dir)


def test_a_damaged_best_config_is_one_line_for_final_training(synth_tiny, tmp_path, capsys):
    """Catches: train.py failing with a traceback on an exported best config that was cut short."""
    from train import main

    cfg = tiny_config(synth_tiny, data={"targets": ["CK"]}, output={"results_dir": str(tmp_path), "name": "exp"})
    save_config(cfg, cfg.experiment_dir / "config.yaml")
    best = cfg.experiment_dir / "best" / "CK.yaml"
    save_config(cfg.with_values({"data.targets": ["CK"]}), best)
    best.write_bytes(best.read_bytes()[:150] + b"\xff\n: :")
    with pytest.raises(SystemExit) as exit_info:
        main(["--experiment", str(cfg.experiment_dir), "--seeds", "0", "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(best) in err and "\n" not in err
