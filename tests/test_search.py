"""The search end to end on SynthFER tiny: layout, export, TensorBoard, GPUs, resume, clusters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest
import ray
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lacmfer.config import config_from_dict, load_config, save_config
from lacmfer.errors import UserError
from lacmfer.trainer import Trainer
from search.driver import run_search
from search.tuner import optuna_storage_url, study_name
from tests.conftest import REPO, tiny_config

SPACE = {
    "hyper_align": {"distribution": "loguniform", "low": 0.1, "high": 1.6},
    "threshold": {"distribution": "uniform", "low": 0.2, "high": 0.8},
    "cluster_ramp": {"distribution": "choice", "choices": ["sigmoid", "linear", "step"]},
    "cluster_gamma": {"distribution": "loguniform", "low": 2.0, "high": 20.0, "only_if": {"cluster_ramp": "sigmoid"}},
}


def search_config(root: Path, results: Path, name: str, **sections):
    base = {
        "schedule": {"steps": 8, "lr_decay_steps": 8},
        "eval": {"interval": 2},  # 4 evaluations: room for ASHA to stop some trials
        "search": {"num_samples": 4, "startup_trials": 2, "asha": {"grace_period": 1, "reduction_factor": 2},
                   "space": SPACE, "use_default_space": False},
        "resources": {"cpu": 1, "threads": 1},
        "output": {"results_dir": str(results), "name": name},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return tiny_config(root, **base)


@pytest.fixture
def local_ray():
    os.environ["RAY_AUTH_MODE"] = "disabled"
    started = []

    def start(**kwargs):
        ray.init(include_dashboard=False, log_to_driver=False, object_store_memory=128 * 1024**2, **kwargs)
        started.append(True)

    yield start
    if started:
        ray.shutdown()


def trial_times(exp_dir: Path, target: str) -> list[tuple[float, float]]:
    """(first report, last report) wall-clock times of every trial of a split."""
    spans = []
    for result in (exp_dir / target).glob("*/result.json"):
        stamps = [json.loads(line)["timestamp"] for line in result.read_text().splitlines() if line.strip()]
        spans.append((min(stamps) - 1.0, max(stamps)))  # a trial runs for a while before its first report
    return spans


def overlapping(spans: list[tuple[float, float]]) -> bool:
    return any(a0 < b1 and b0 < a1 for i, (a0, a1) in enumerate(spans) for b0, b1 in spans[i + 1:])


def test_search_end_to_end(synth_tiny, tmp_path, local_ray):
    local_ray(num_cpus=2)
    # One trial at a time, a continuous objective and a searched lr (so no two trials tie):
    # ASHA's decisions are reproducible and some trials fall below a rung's median.
    space = {**SPACE, "lr": {"distribution": "loguniform", "low": 0.003, "high": 0.3}}
    cfg = search_config(synth_tiny, tmp_path, "e2e", data={"targets": ["CK", "RAF"]}, eval={"objective": "entropy"},
                        search={"max_concurrent": 1, "space": space})
    from tune import main

    assert main(["--config", str(save_yaml(cfg, tmp_path)), "--results", str(tmp_path)]) == 0
    exp = tmp_path / "e2e"
    assert (exp / "config.yaml").exists() and (exp / "optuna.db").exists() and (exp / "summary.md").exists()

    table = pq.read_table(exp / "trials.parquet").to_pylist()
    assert len(table) == 8 and {r["target"] for r in table} == {"CK", "RAF"}
    assert {r["status"] for r in table} <= {"completed", "stopped early"}
    assert any(r["status"] == "stopped early" for r in table), "ASHA stopped no trial"
    for r in table:
        assert (r["cluster_gamma"] is None) == (r["cluster_ramp"] != "sigmoid")
        assert r["evaluations"] == 4 if r["status"] == "completed" else r["evaluations"] < 4

    for target in ("CK", "RAF"):
        # The SPEC defaults are the first point of each study; ASHA-stopped trials are PRUNED.
        study = optuna.load_study(study_name=study_name(cfg, target), storage=optuna_storage_url(exp))
        assert study.trials[0].params["hyper_align"] == pytest.approx(0.4)
        states = {t.state for t in study.trials}
        assert len(study.trials) == 4 and states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}

        best = load_config(exp / "best" / f"{target}.yaml")
        assert best.data.targets == [target]
        row = next(r for r in table if r["target"] == target and r["exported"])
        assert best.loss.hyper_align == pytest.approx(row["hyper_align"])
        trainer = Trainer(best.with_values({"schedule.steps": 2}), target)
        trainer.train_until(2)

        events = sorted((exp / target).glob("*/tb/events.out.tfevents.*"))
        assert len(events) == 4  # one TensorBoard run per trial
        acc = EventAccumulator(str(events[0].parent), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        scalars = set(acc.Tags()["scalars"])
        assert {"loss/total", "validators/objective", "target/acc", "hparam/objective_best"} <= scalars
        assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")


def save_yaml(cfg, folder: Path) -> Path:
    path = folder / "search.yaml"
    save_config(cfg, path)
    return path


def test_fractional_gpus_pack_two_trials(synth_tiny, tmp_path, local_ray):
    local_ray(num_cpus=2, num_gpus=1)  # a logical GPU: trials still train on the CPU
    cfg = search_config(synth_tiny, tmp_path, "gpu", data={"targets": ["CK"]},
                        search={"asha": {"grace_period": 4}}, resources={"cpu": 1, "gpu": 0.5, "threads": 1})
    outcomes = run_search(cfg)
    assert outcomes[0].finished and outcomes[0].terminated == 4
    assert overlapping(trial_times(cfg.experiment_dir, "CK")), "two half-GPU trials never ran at once"


def test_gpu_trials_without_gpus_fail_clearly(synth_tiny, tmp_path, local_ray):
    local_ray(num_cpus=2)
    cfg = search_config(synth_tiny, tmp_path, "nogpu", resources={"cpu": 1, "gpu": 0.25})
    with pytest.raises(UserError, match="resources.gpu: each trial asks for 0.25 GPU but the Ray cluster has no GPU"):
        run_search(cfg)


def test_two_node_cluster_shares_storage(synth_tiny, tmp_path):
    from ray.cluster_utils import Cluster

    os.environ["RAY_AUTH_MODE"] = "disabled"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1})
    cluster.add_node(num_cpus=1, num_gpus=1)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cfg = search_config(synth_tiny, tmp_path, "cluster", data={"targets": ["CK"]},
                            search={"asha": {"grace_period": 4}}, resources={"cpu": 1, "gpu": 1, "threads": 1})
        outcomes = run_search(cfg)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert outcomes[0].finished and outcomes[0].terminated == 4
    # One GPU per node and one GPU per trial: trials that overlap ran on different nodes.
    assert overlapping(trial_times(cfg.experiment_dir, "CK"))
    for trial in (cfg.experiment_dir / "CK").glob("*/result.json"):
        assert list(trial.parent.glob("tb/events.out.tfevents.*")), f"{trial.parent} has no TensorBoard run"


def test_resume_after_the_driver_is_killed(synth_tiny, tmp_path):
    cfg = search_config(synth_tiny, tmp_path, "resume", data={"targets": ["CK"]},
                        schedule={"steps": 24, "lr_decay_steps": 24}, eval={"interval": 6},
                        search={"num_samples": 4, "max_concurrent": 1, "asha": {"grace_period": 4}})
    config = save_yaml(cfg, tmp_path)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "tune.py"), "--config", str(config)]
    driver = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    split = cfg.experiment_dir / "CK"
    deadline = time.time() + 240

    def finished_trials() -> dict[str, int]:
        out = {}
        for result in split.glob("*/result.json"):
            lines = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
            if lines and lines[-1].get("final_evaluation") == 1.0:
                out[result.parent.name] = len(lines)
        return out

    while len(finished_trials()) < 1 and time.time() < deadline and driver.poll() is None:
        time.sleep(0.5)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
    driver.wait()
    before = finished_trials()
    assert 1 <= len(before) < 4, "the driver must be killed mid-search"

    resumed = subprocess.run([*cmd[:2], "--resume", "--name", "resume", "--results", str(tmp_path)],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = finished_trials()
    for trial, reports in before.items():
        assert after[trial] == reports  # a finished trial was not run again
    study = optuna.load_study(study_name=study_name(cfg, "CK"), storage=optuna_storage_url(cfg.experiment_dir))
    assert len([t for t in study.trials if t.state.is_finished()]) >= 4
    assert len(pq.read_table(cfg.experiment_dir / "trials.parquet")) == 4


def test_existing_experiment_is_not_overwritten(synth_tiny, tmp_path):
    cfg = search_config(synth_tiny, tmp_path, "exists")
    (cfg.experiment_dir).mkdir(parents=True)
    save_config(cfg, cfg.experiment_dir / "config.yaml")
    proc = subprocess.run([sys.executable, str(REPO / "tune.py"), "--config", str(save_yaml(cfg, tmp_path))],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2 and "already holds an experiment" in proc.stderr and "Traceback" not in proc.stderr


def test_dry_run_prints_splits_and_space(synth_tiny, tmp_path):
    cfg = search_config(synth_tiny, tmp_path, "dry", data={"targets": ["CK", "Aff"]})
    proc = subprocess.run([sys.executable, str(REPO / "tune.py"), "--config", str(save_yaml(cfg, tmp_path)),
                           "--dry-run"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "CK       <- JAFFE, Oulu, RAF, FER2013, Aff" in proc.stdout
    assert "cluster_gamma" in proc.stdout and "only if cluster_ramp = sigmoid" in proc.stdout
    assert not (tmp_path / "dry").exists()  # a dry run writes nothing


def test_oracle_objective_is_marked(synth_tiny, tmp_path):
    cfg = config_from_dict({**search_config(synth_tiny, tmp_path, "o").to_dict(), "eval": {"objective": "oracle_target_acc"}})
    proc = subprocess.run([sys.executable, str(REPO / "tune.py"), "--config", str(save_yaml(cfg, tmp_path)),
                           "--dry-run"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert "ORACLE" in proc.stdout
