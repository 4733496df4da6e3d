"""The whole protocol in one command (`tune.py --final-seeds`): each split's final runs join the
search's Ray cluster as soon as its search ends, the table is written at the end, and a driver
killed during final training resumes with every run trained once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from ray import tune

from search.driver import run_search
from search.final_phase import FinalPhase
from search.storage import ExperimentLocations
from tests.conftest import REPO
from tests.test_search import local_ray, save_yaml, search_config  # noqa: F401  (local_ray: a fixture)
from tune import conclude_final

#: MFSAN searched, DANN its baseline: both baselines with modules of their own run through Ray workers here.
FINAL = {"seeds": [0], "baselines": ["dann"]}


class WaitForAFinalRunOf(tune.Callback):
    """In the driver of every split but `other`: at its trial's start, wait (at most `patience_s`)
    until a final run of split `other` has started (its folder holds config.yaml), and record
    whether one did. The waiting split's trial holds its slot meanwhile, so its search is
    still running when that final run starts."""

    def __init__(self, other: str, final_dir: Path, folder: Path, patience_s: float) -> None:
        self.other, self.final_dir, self.folder, self.patience_s = other, final_dir, folder, patience_s

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        split = str(trial).split("_", 1)[0]  # the Tuner names trials <target>_<trial id>
        if split == self.other:
            return
        deadline = time.monotonic() + self.patience_s

        def started() -> list[Path]:
            return list(self.final_dir.glob(f"{self.other}/*/seed*/config.yaml"))

        while not started() and time.monotonic() < deadline:
            time.sleep(0.1)
        (self.folder / f"{split}.{'met' if started() else 'alone'}").touch()


def test_a_splits_final_runs_start_while_another_split_still_searches(synth_tiny, tmp_path, local_ray):  # noqa: F811
    """Planted bugs caught: the final runs submitted only after every split's search
    (`final.split_ended` called after `run_in_processes` returns), or never collected (no table)."""
    local_ray(num_cpus=2)
    cfg = search_config(synth_tiny, tmp_path, "protocol", data={"targets": ["CK", "RAF"]}, loss={"adaptation": "mfsan"},
                        search={"num_samples": 1, "use_default_space": True, "space": {}}, final=FINAL)
    places = ExperimentLocations.of(cfg)
    meetings = tmp_path / "meetings"
    meetings.mkdir()
    final = FinalPhase(cfg, places)
    outcomes = run_search(cfg, callbacks=[WaitForAFinalRunOf("CK", final.final_dir, meetings, 120.0)], final=final)
    assert [(o.target, o.finished) for o in outcomes] == [("CK", True), ("RAF", True)]
    assert [p.name for p in meetings.iterdir()] == ["RAF.met"], "CK's final runs waited for RAF's search"
    assert sorted(final.results) == [f"{t}/{m}/seed0" for t in ("CK", "RAF") for m in ("dann", "mfsan")]
    assert conclude_final(cfg, final, "python tune.py --resume") == 0
    rows = pq.read_table(final.final_dir / "report.parquet").to_pylist()
    assert {(r["target"], r["method"], r["completed"]) for r in rows} >= {
        ("CK", "mfsan", 1), ("CK", "dann", 1), ("RAF", "mfsan", 1), ("RAF", "dann", 1)}
    assert "loss_domain" in final.results["CK/dann/seed0"].last  # DANN's own term, trained in a Ray worker
    # The slot record covers the final runs: four trials' worth of slots more than the two trials.
    usage = json.loads((places.folder.local_path() / "slots.json").read_text())[-1]
    assert usage["trials"] == 2 + 4


def test_resume_after_the_driver_is_killed_in_final_training_trains_every_run_once(synth_tiny, tmp_path):
    """Killed once a final run has ended: `--resume` keeps it (its metrics.json untouched), trains
    the others, writes the table, exits 0. Planted bug caught: `finished_results` not consulted
    on resume (the ended run trained again: its metrics.json rewritten)."""
    cfg = search_config(synth_tiny, tmp_path, "killed", data={"targets": ["CK"]}, search={"num_samples": 1},
                        schedule={"steps": 24, "lr_decay_steps": 24}, eval={"interval": 6},
                        final={"seeds": [0, 1, 2], "baselines": []})
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "tune.py"), "--config", str(save_yaml(cfg, tmp_path))]
    driver = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = cfg.experiment_dir / "final" / "CK" / "lacmfer"
    deadline = time.time() + 240
    while not any(runs.glob("seed*/metrics.json")) and time.time() < deadline and driver.poll() is None:
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
    driver.wait()
    ended = {p.parent.name: p.read_bytes() for p in runs.glob("seed*/metrics.json")}
    assert 1 <= len(ended) < 3, "the driver must be killed during final training"

    resumed = subprocess.run([*cmd[:2], "--resume", "--name", "killed", "--results", str(tmp_path)],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{len(ended)} kept from before" in resumed.stdout
    for seed, before in ended.items():
        assert (runs / seed / "metrics.json").read_bytes() == before
    results = [json.loads((runs / f"seed{s}" / "metrics.json").read_text()) for s in range(3)]
    assert [r["status"] for r in results] == ["completed"] * 3
    assert (cfg.experiment_dir / "final" / "report.md").exists()
