"""The search end to end on SynthFER tiny: layout, export, TensorBoard, GPUs, resume, clusters."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest
import ray
from ray import tune
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lacmfer.config import config_from_dict, load_config, save_config
from lacmfer.errors import UserError
from lacmfer.run.trainer import Trainer
from search.algorithms import make_sampler, split_seed
from search.analysis import read_result_json
from search.driver import run_search
from search.spaces import SearchSpace, default_point
from search.storage import ExperimentLocations
from search.tuner import DIVERGED_CONSTRAINT, TUNE_TRIAL_ID
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
        ray.init(address="local", include_dashboard=False, log_to_driver=False, object_store_memory=128 * 1024**2, **kwargs)
        started.append(True)

    yield start
    if started:
        ray.shutdown()


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
    assert "## Slots" in (exp / "summary.md").read_text()  # the run's slot usage, over both splits

    table = pq.read_table(exp / "trials.parquet").to_pylist()
    assert len(table) == 8 and {r["target"] for r in table} == {"CK", "RAF"}
    assert {r["status"] for r in table} <= {"completed", "stopped early"}
    assert any(r["status"] == "stopped early" for r in table), "ASHA stopped no trial"
    for r in table:
        assert (r["cluster_gamma"] is None) == (r["cluster_ramp"] != "sigmoid")
        assert r["evaluations"] == 4 if r["status"] == "completed" else r["evaluations"] < 4

    originals = {}
    for target in ("CK", "RAF"):
        # The paper's defaults are the first point of each study; ASHA-stopped trials are PRUNED.
        study = optuna.load_study(study_name=ExperimentLocations.of(cfg).study_name(target), storage=f"sqlite:///{exp / 'optuna.db'}")
        originals[target] = study.trials
        assert study.trials[0].params["hyper_align"] == pytest.approx(0.4)
        states = {t.state for t in study.trials}
        assert len(study.trials) == 4 and states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
        assert_optuna_tells_what_tune_recorded(study, exp / target, [r for r in table if r["target"] == target])

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

    # A damaged optuna.db is rebuilt from the trials' reports: trial by trial what the searcher told Optuna.
    (exp / "optuna.db").write_bytes((exp / "optuna.db").read_bytes()[:4096] + b"damage")
    assert main(["--rebuild-study", "--name", "e2e", "--results", str(tmp_path)]) == 0
    for target in ("CK", "RAF"):
        name = ExperimentLocations.of(cfg).study_name(target)
        rebuilt = optuna.load_study(study_name=name, storage=f"sqlite:///{exp / 'optuna.db'}")
        assert_optuna_tells_what_tune_recorded(rebuilt, exp / target, [r for r in table if r["target"] == target])
        assert [t.params for t in rebuilt.trials] == [t.params for t in originals[target]]
        assert [t.distributions for t in rebuilt.trials] == [t.distributions for t in originals[target]]
    assert (exp / "optuna.db.damaged").exists()


OPTUNA_STATE = {"completed": optuna.trial.TrialState.COMPLETE, "stopped early": optuna.trial.TrialState.PRUNED,
                "diverged": optuna.trial.TrialState.PRUNED, "failed": optuna.trial.TrialState.FAIL}


def assert_optuna_tells_what_tune_recorded(study: optuna.Study, split_dir: Path, rows: list[dict]) -> None:
    """Trial by trial, the study holds what Tune's result.json and trials.parquet hold (scope best):
    every evaluation as an intermediate value at its training_iteration, the state, and the value.
    Optuna trials that no Tune trial ran (closed on resume), and the first attempt of a trial
    retried after an error, must be FAIL."""
    trials = study.trials
    matched = [t for t in trials if TUNE_TRIAL_ID in t.user_attrs]
    # A driver killed between Optuna's ask and the attribute leaves a trial that no Tune
    # trial ran: the resume must have closed it.
    assert all(t.state == optuna.trial.TrialState.FAIL for t in trials if t not in matched)
    by_tune_id = {t.user_attrs[TUNE_TRIAL_ID]: t for t in matched}  # the latest attempt
    assert all(t.state == optuna.trial.TrialState.FAIL for t in matched
               if by_tune_id[t.user_attrs[TUNE_TRIAL_ID]].number != t.number)
    assert {r["trial_id"] for r in rows} <= set(by_tune_id)
    ran = {r["trial_id"] for r in rows}
    assert all(t.state == optuna.trial.TrialState.FAIL for tid, t in by_tune_id.items() if tid not in ran)
    for row in rows:
        trial = by_tune_id[row["trial_id"]]
        [result_file] = split_dir.glob(f"**/{row['trial_id']}/result.json")  # in any round of the split
        history = [evaluation.metrics for evaluation in read_result_json(result_file)]
        told = {step: (None if math.isnan(v) else v) for step, v in trial.intermediate_values.items()}
        recorded = {int(r["training_iteration"]): (None if math.isnan(r["objective"]) else r["objective"])
                    for r in history}
        assert told == recorded and len(told) == row["evaluations"], row["trial_id"]
        assert trial.state == OPTUNA_STATE[row["status"]], row["trial_id"]
        if row["status"] == "completed":
            assert trial.value == row["objective_best"]
        elif row["status"] == "stopped early":  # Optuna keeps a pruned trial's last value
            assert trial.value == row["objective_last"]
        assert (trial.constraints.get(DIVERGED_CONSTRAINT, 0.0) > 0) == (row["status"] == "diverged")


def save_yaml(cfg, folder: Path) -> Path:
    path = folder / "search.yaml"
    save_config(cfg, path)
    return path


class MostTrialsRunning(tune.Callback):
    """The most trials Tune held RUNNING (resources placed) at once, seen at every start and result."""

    def __init__(self) -> None:
        self.most = 0

    def _count(self, trials) -> None:
        self.most = max(self.most, sum(t.status == "RUNNING" for t in trials))

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._count(trials)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._count(trials)


def trainable_behind_a_rendezvous(folder: Path, parties: int, patience_s: float):
    """The real trainable, entered only once `parties` trials have started (or after `patience_s`).

    Tiny trials end in about a second, less than a worker's start-up, so without this two trials
    that could share the GPU may still never overlap. The trials run on this machine, so the
    rendezvous is a folder of marker files. A trial waits at most `patience_s`: when Ray cannot
    place `parties` trials at once, the wait ends and the overlap is never seen.
    """
    from search import tuner

    real = tuner.lacmfer_trainable

    def trainable(config, **bound):
        (folder / uuid.uuid4().hex).touch()
        deadline = time.monotonic() + patience_s
        while len(list(folder.iterdir())) < parties and time.monotonic() < deadline:
            time.sleep(0.05)
        real(config, **bound)

    return trainable


def test_fractional_gpus_pack_two_trials(synth_tiny, tmp_path, local_ray, monkeypatch):
    local_ray(num_cpus=4, num_gpus=1)  # a logical GPU: trials still train on the CPU
    # CPUs for four trials, GPU shares for two: the GPU is what limits packing.
    cfg = search_config(synth_tiny, tmp_path, "gpu", data={"targets": ["CK"]},
                        search={"max_concurrent": 4, "asha": {"grace_period": 4}},
                        resources={"cpu": 1, "gpu": 0.5, "threads": 1})
    arrivals = tmp_path / "arrivals"
    arrivals.mkdir()
    monkeypatch.setattr("search.tuner.lacmfer_trainable", trainable_behind_a_rendezvous(arrivals, 2, 60.0))
    running = MostTrialsRunning()
    outcomes = run_search(cfg, callbacks=[running])
    assert outcomes[0].finished and outcomes[0].terminated == 4
    assert running.most == 2, "two half-GPU trials must run at once, and never more on one GPU"


class MeetATrialOfAnotherSplit(tune.Callback):
    """A rendezvous between splits: at each trial's start its split's driver waits (at most
    `patience_s`) until a trial of another split has started, and records whether one did.

    While the driver waits, its trial holds its slot (Tune releases it only once the driver
    takes the trial's end), so another split's trial starting meanwhile ran at the same time.
    Splits run in turn never meet: the wait ends in `alone`.
    """

    def __init__(self, folder: Path, patience_s: float) -> None:
        self.folder, self.patience_s = folder, patience_s

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        split = str(trial).split("_", 1)[0]  # the Tuner names trials <target>_<trial id>
        (self.folder / f"{split}.started").touch()
        deadline = time.monotonic() + self.patience_s

        def others() -> list[Path]:
            return [p for p in self.folder.glob("*.started") if p.stem != split]

        while not others() and time.monotonic() < deadline:
            time.sleep(0.1)
        (self.folder / f"{split}.{'met' if others() else 'alone'}").touch()


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
        (self.folder / f"{split}.waited.{'met' if started() else 'alone'}").touch()


def test_splits_run_at_once(synth_tiny, tmp_path, local_ray, capsys):
    """Both splits' trials run at once, and with the search's own final training (`final:`) a
    split's final runs start while the other split still searches; the table is written at the
    end. MFSAN is searched and DANN is its baseline: both methods' own modules train in Ray
    workers. Planted bugs caught: the final runs submitted only after every split's search
    (`final.split_ended` called after `run_in_processes` returns), or never collected."""
    from search.final_phase import FinalPhase
    from tune import conclude_final

    local_ray(num_cpus=2)
    cfg = search_config(synth_tiny, tmp_path, "at-once", data={"targets": ["CK", "RAF"]}, loss={"adaptation": "mfsan"},
                        search={"num_samples": 1, "use_default_space": True, "space": {}},
                        final={"seeds": [0], "baselines": ["dann"]})
    meetings = tmp_path / "meetings"
    meetings.mkdir()
    final = FinalPhase(cfg, ExperimentLocations.of(cfg))
    callbacks = [MeetATrialOfAnotherSplit(meetings, patience_s=120.0),
                 WaitForAFinalRunOf("CK", final.final_dir, meetings, patience_s=120.0)]
    outcomes = run_search(cfg, callbacks=callbacks, final=final)
    assert [(o.target, o.finished) for o in outcomes] == [("CK", True), ("RAF", True)]
    assert sorted(p.name for p in meetings.glob("*.met")) == ["CK.met", "RAF.met", "RAF.waited.met"], (
        "the splits never ran at once, or CK's final runs waited for RAF's search")
    assert sorted(final.results) == [f"{t}/{m}/seed0" for t in ("CK", "RAF") for m in ("dann", "mfsan")]
    assert "loss_domain" in final.results["CK/dann/seed0"].last  # DANN's own term, trained in a Ray worker
    assert conclude_final(cfg, final, "python tune.py --resume") == 0
    rows = pq.read_table(final.final_dir / "report.parquet").to_pylist()
    assert {(r["target"], r["method"], r["completed"]) for r in rows} >= {
        ("CK", "mfsan", 1), ("CK", "dann", 1), ("RAF", "mfsan", 1), ("RAF", "dann", 1)}
    # The slot record covers the protocol: the two trials and the four final runs.
    usage = json.loads((cfg.experiment_dir / "slots.json").read_text())[-1]
    assert usage["slots"] == 2 and usage["trials"] == 2 + 4 and usage["peak"] == 2
    assert "slot usage: 6 trial(s) on 2 slot(s)" in capsys.readouterr().out


def test_a_split_without_a_usable_trial_ends_with_an_error(synth_tiny, tmp_path, local_ray, capsys):
    local_ray(num_cpus=2)
    # lr 1e6 turns the weights NaN at once: every trial diverges at its first evaluation.
    # Quasi-random proposals and Hyperband's brackets: Optuna is told the truth under them too.
    cfg = search_config(synth_tiny, tmp_path, "bad", data={"targets": ["CK"]}, schedule={"lr": 1e6},
                        search={"num_samples": 2, "space": {"hyper_align": SPACE["hyper_align"]},
                                "sampler": "qmc", "scheduler": "hyperband"})
    from tune import main

    assert main(["--config", str(save_yaml(cfg, tmp_path)), "--results", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "NO RESULT: split CK: every trial failed or diverged (2 diverged)" in err
    assert not (cfg.experiment_dir / "best" / "CK.yaml").exists()
    # Optuna was told so: PRUNED and infeasible, with the NaN evaluation recorded.
    study = optuna.load_study(study_name=ExperimentLocations.of(cfg).study_name("CK"), storage=f"sqlite:///{cfg.experiment_dir / 'optuna.db'}")
    table = pq.read_table(cfg.experiment_dir / "trials.parquet").to_pylist()
    assert_optuna_tells_what_tune_recorded(study, cfg.experiment_dir / "CK", table)


def test_gpu_trials_without_gpus_fail_clearly(synth_tiny, tmp_path, local_ray):
    local_ray(num_cpus=2)
    cfg = search_config(synth_tiny, tmp_path, "nogpu", resources={"cpu": 1, "gpu": 0.25})
    with pytest.raises(UserError, match="resources.gpu: each trial asks for 0.25 GPU but the Ray cluster has no GPU"):
        run_search(cfg)
    # Refused before anything was written: the same command, fixed, is not told to --resume.
    assert not (cfg.experiment_dir / "config.yaml").exists()


def test_two_node_cluster_shares_storage(synth_tiny, tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    from search.export import export_experiment

    os.environ["RAY_AUTH_MODE"] = "disabled"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1})
    cluster.add_node(num_cpus=1, num_gpus=1)
    arrivals = tmp_path / "arrivals"
    arrivals.mkdir()
    monkeypatch.setattr("search.tuner.lacmfer_trainable", trainable_behind_a_rendezvous(arrivals, 2, 60.0))
    running = MostTrialsRunning()
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        # A journal file is the Optuna storage the README recommends for clusters.
        cfg = search_config(synth_tiny, tmp_path, "cluster", data={"targets": ["CK"]},
                            search={"asha": {"grace_period": 4}, "storage": str(tmp_path / "optuna.journal")},
                            resources={"cpu": 1, "gpu": 1, "threads": 1})
        outcomes = run_search(cfg, callbacks=[running])
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert outcomes[0].finished and outcomes[0].terminated == 4
    # One GPU per node and one GPU per trial: two trials at once means one on each node.
    assert running.most == 2
    for trial in (cfg.experiment_dir / "CK").glob("*/result.json"):
        assert list(trial.parent.glob("tb/events.out.tfevents.*")), f"{trial.parent} has no TensorBoard run"
    export_experiment(cfg.experiment_dir)
    assert not (cfg.experiment_dir / "optuna.db").exists()  # the journal, not the default SQLite
    study = optuna.load_study(study_name=ExperimentLocations.of(cfg).study_name("CK"), storage=ExperimentLocations.of(cfg).optuna_storage())
    table = pq.read_table(cfg.experiment_dir / "trials.parquet").to_pylist()
    assert_optuna_tells_what_tune_recorded(study, cfg.experiment_dir / "CK", table)


def test_resume_after_the_driver_is_killed_widens_the_search(synth_tiny, tmp_path):
    cfg = search_config(synth_tiny, tmp_path, "resume", data={"targets": ["CK"]},
                        schedule={"steps": 24, "lr_decay_steps": 24}, eval={"interval": 6},
                        search={"num_samples": 3, "max_concurrent": 1, "asha": {"grace_period": 4}})
    config = save_yaml(cfg, tmp_path)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "tune.py"), "--config", str(config)]
    driver = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    exp = cfg.experiment_dir
    deadline = time.time() + 240

    def finished_trials(target: str) -> dict[str, int]:
        out = {}
        for result in (exp / target).glob("**/result.json"):
            lines = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
            if lines and lines[-1].get("status") == "completed":
                out[result.parent.name] = len(lines)
        return out

    while len(finished_trials("CK")) < 1 and time.time() < deadline and driver.poll() is None:
        time.sleep(0.5)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
    driver.wait()
    before = finished_trials("CK")
    assert 1 <= len(before) < 3, "the driver must be killed mid-search"

    # Widen it: one more trial per split, and a split it did not have.
    resumed = subprocess.run([*cmd[:2], "--resume", "--name", "resume", "--results", str(tmp_path),
                              "--num-samples", "4", "--targets", "RAF"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # One progress display for both splits: no table per split from Tune, no line per
    # checkpoint from the trials' processes, no line per study from Optuna.
    console = resumed.stdout + resumed.stderr
    noise = ["Configuration for experiment", "Checkpoint successfully created", "A new study created"]
    assert [line for line in noise if line in console] == [] and "slot usage:" in console
    after = finished_trials("CK")
    for trial, reports in before.items():
        assert after[trial] == reports  # a finished trial was not run again
    saved = load_config(exp / "config.yaml")
    assert saved.data.targets == ["CK", "RAF"] and saved.search.num_samples == 4
    table = pq.read_table(exp / "trials.parquet").to_pylist()
    assert sorted(r["target"] for r in table) == ["CK"] * 4 + ["RAF"] * 4
    assert (exp / "CK" / "round-2").is_dir() and (exp / "best" / "RAF.yaml").exists()
    for target in ("CK", "RAF"):
        study = optuna.load_study(study_name=ExperimentLocations.of(cfg).study_name(target), storage=f"sqlite:///{exp / 'optuna.db'}")
        assert all(t.state.is_finished() for t in study.trials)  # none left RUNNING by the killed driver
        assert_optuna_tells_what_tune_recorded(study, exp / target, [r for r in table if r["target"] == target])


class KillOneWorkerOnce(tune.Callback):
    """SIGKILL the worker of the first trial that saves a checkpoint, once per test (a file
    remembers it: Tune restores a copy of its callbacks on resume)."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        if not self.flag.exists():
            self.flag.write_text(trial.trial_id)
            os.kill(trial.last_result["pid"], signal.SIGKILL)


def test_a_trial_retried_on_resume_after_an_error_is_told_to_optuna(synth_tiny, tmp_path, local_ray):
    from search.export import export_experiment

    local_ray(num_cpus=2)
    # The baseline pair, random search without early stopping: every trial runs its schedule.
    # DANN in its own default space: a method's own modules checkpointed and resumed in a trial.
    cfg = search_config(synth_tiny, tmp_path, "retry", data={"targets": ["CK"]}, loss={"adaptation": "dann"},
                        search={"num_samples": 2, "max_concurrent": 1, "max_failures": 0, "startup_trials": 1,
                                "sampler": "random", "scheduler": "fifo", "use_default_space": True, "space": {}})
    assert list(cfg.search.space) == ["hyper_domain"]
    flag = tmp_path / "killed"
    run_search(cfg, callbacks=[KillOneWorkerOnce(flag)])
    killed = flag.read_text()
    run_search(cfg, resume=True)  # retries the errored trial from its checkpoint
    export_experiment(cfg.experiment_dir)
    table = pq.read_table(cfg.experiment_dir / "trials.parquet").to_pylist()
    assert {r["trial_id"]: r["status"] for r in table}[killed] == "completed"
    study = optuna.load_study(study_name=ExperimentLocations.of(cfg).study_name("CK"), storage=f"sqlite:///{cfg.experiment_dir / 'optuna.db'}")
    assert len(study.trials) == 3  # the errored attempt (FAIL) and its retry
    assert_optuna_tells_what_tune_recorded(study, cfg.experiment_dir / "CK", table)
    assert [r["status"] for r in table] == ["completed", "completed"]
    # One trial at a time: the proposals are the configured sampler's asked alone (TPE, after
    # its one random start-up trial, would propose another second point).
    alone = optuna.create_study(sampler=make_sampler(cfg.search, split_seed(cfg.search.seed, "CK")))
    alone.enqueue_trial(default_point(cfg))
    expected = []
    for _ in range(2):
        trial = alone.ask()
        SearchSpace(cfg.search.space)(trial)
        expected.append(trial.params)
        alone.tell(trial, 0.0)
    assert [t.params for t in study.trials if "retry_of" not in t.user_attrs] == expected


def test_closing_trials_a_killed_driver_left_running():
    from search.driver import close_orphaned_trials

    study = optuna.create_study()
    resumes, lost, unnamed, done = (study.ask() for _ in range(4))
    resumes.set_user_attr(TUNE_TRIAL_ID, "a")
    lost.set_user_attr(TUNE_TRIAL_ID, "b")  # proposed after Tune's last snapshot
    done.set_user_attr(TUNE_TRIAL_ID, "c")
    study.tell(done, 0.5)
    assert close_orphaned_trials(study, continuing={"a", "c"}) == 2
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.FAIL,
                      optuna.trial.TrialState.COMPLETE]


def test_a_second_driver_on_one_experiment_is_refused(synth_tiny, tmp_path, capsys):
    from tune import main

    cfg = search_config(synth_tiny, tmp_path, "busy")
    cfg.experiment_dir.mkdir(parents=True)
    save_config(cfg, cfg.experiment_dir / "config.yaml")
    with ExperimentLocations.of(cfg).lock():  # the first driver
        with pytest.raises(SystemExit) as exit_:
            main(["--resume", "--name", "busy", "--results", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"another tune.py (pid {os.getpid()}) is running this experiment" in err and "Traceback" not in err
    with ExperimentLocations.of(cfg).lock():  # free again once the first driver is gone
        pass


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
    assert "sampler:   tpe (Optuna TPE" in proc.stdout and "scheduler: asha (Ray Tune ASHAScheduler" in proc.stdout
    assert not (tmp_path / "dry").exists()  # a dry run writes nothing


def test_dry_run_shows_the_chosen_algorithms(synth_tiny, tmp_path, capsys):
    from tune import main

    config = str(save_yaml(search_config(synth_tiny, tmp_path, "dry"), tmp_path))
    assert main(["--config", config, "--dry-run", "--set", "search.sampler=qmc",
                 "--set", "search.scheduler=hyperband"]) == 0
    out = capsys.readouterr().out
    assert "sampler:   qmc (Optuna QMCSampler" in out and "scheduler: hyperband (Ray Tune AsyncHyperBandScheduler" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", config, "--dry-run", "--set", "search.scheduler=pbt"])
    assert exit_info.value.code == 2
    assert "search.scheduler: Input should be 'asha', 'fifo' or 'hyperband' (got 'pbt')" in capsys.readouterr().err


def test_oracle_objective_is_marked(synth_tiny, tmp_path):
    cfg = config_from_dict({**search_config(synth_tiny, tmp_path, "o").to_dict(), "eval": {"objective": "oracle_target_acc"}})
    proc = subprocess.run([sys.executable, str(REPO / "tune.py"), "--config", str(save_yaml(cfg, tmp_path)),
                           "--dry-run"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert "ORACLE" in proc.stdout
