"""The whole protocol in one command (`tune.py --final-seeds`): a driver killed during final
training resumes with every run trained once, and a run of an earlier best config is retrained.
(A split's final runs starting while another split still searches: tests/test_search.py,
`test_splits_run_at_once`.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

from tests.conftest import REPO
from tests.test_search import save_yaml, search_config


def test_resume_after_the_driver_is_killed_in_final_training_trains_every_run_once(synth_tiny, tmp_path):
    """Killed once a final run has ended: `--resume` keeps it (its metrics.json untouched), trains
    the others, writes the table, exits 0. Planted bug caught: `finished_results` not consulted
    on resume (the ended run trained again: its metrics.json rewritten)."""
    cfg = search_config(synth_tiny, tmp_path, "killed", data={"targets": ["CK"]}, search={"num_samples": 1},
                        schedule={"steps": 12, "lr_decay_steps": 12}, eval={"interval": 6},
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
    # A run may still end in a worker of the killed Ray before it goes down: kept too, not trained again.
    queued, kept = map(int, re.search(r"final training: (\d+) run\(s\) queued, (\d+) kept from before",
                                      resumed.stdout).groups())
    assert kept >= len(ended) and queued + kept == 3, resumed.stdout[:3000]
    for seed, before in ended.items():
        assert (runs / seed / "metrics.json").read_bytes() == before
    results = [json.loads((runs / f"seed{s}" / "metrics.json").read_text()) for s in range(3)]
    assert [r["status"] for r in results] == ["completed"] * 3
    assert (cfg.experiment_dir / "final" / "report.md").exists()


def test_a_final_run_of_an_earlier_best_config_is_moved_aside_and_trained_again(synth_tiny, tmp_path):
    """A resumed search whose added trials found a new best: the runs trained on the old one are
    kept aside, not counted. Planted bug caught: `_trained` comparing whole configs (the task's
    torch threads would make every kept run look stale) or nothing (stale runs kept)."""
    from lacmfer.config import save_config
    from search.protocol import protocol_runs, supersede_stale_runs
    from tests.conftest import tiny_config

    cfg = tiny_config(synth_tiny)
    old, new = protocol_runs([("CK", cfg)], ["lacmfer"], [0, 1], tmp_path), protocol_runs(
        [("CK", cfg.with_values({"loss.hyper_align": 0.05}))], ["lacmfer"], [0], tmp_path)
    for run in old:
        run.run_dir.mkdir(parents=True)
        save_config(run.config.with_values({"resources.threads": 3}), run.run_dir / "config.yaml")
    assert supersede_stale_runs(old) == []  # the same config, threads aside
    moved = supersede_stale_runs(new)
    assert [p.name.split(".")[0] for p in moved] == ["seed0"] and not new[0].run_dir.exists()
    assert old[1].run_dir.exists()
