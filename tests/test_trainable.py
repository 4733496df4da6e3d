"""The Ray Tune trainable, run through real `tune.Tuner`s on SynthFER tiny.

One Ray session serves the file. The first experiment runs a diverging trial, then a
normal one in the same (reused) worker; the second kills a trial's worker process at
its first checkpoint (the second of three evaluations) and lets Tune retry it from there.
"""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import pytest
import ray
import torch
from ray import tune
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2

from lacmfer.errors import UserError
from lacmfer.run.lifecycle import STATE_FILE
from lacmfer.run.trainer import Trainer
from tests.conftest import tiny_config
from trainables.lacmfer_trainable import lacmfer_trainable, trial_config

STEPS, INTERVAL = 6, 2  # three evaluations per trial
NORMAL_LR, DIVERGING_LR = 0.01, 1e6  # 1e6 turns the weights NaN within the first two steps
METRICS = ("step", "objective", "target_acc", "source_val_acc", "im", "bnm", "snd", "entropy",
           "loss_total", "loss_sup", "loss_sample_level", "loss_cluster_level", "loss_mcc", "loss_pseudo_label")


@pytest.fixture(scope="module")
def base_config(synth_tiny) -> dict:
    # threads unset: each trial takes its CPU allocation (1) as torch threads.
    cfg = tiny_config(synth_tiny, schedule={"steps": STEPS, "lr": NORMAL_LR, "lr_decay_steps": 20},
                      eval={"interval": INTERVAL}, resources={"threads": None},
                      search={"checkpoint_every": 2})  # checkpoints at the 2nd and the last evaluation
    return cfg.to_dict()


@pytest.fixture(scope="module")
def ray_session():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")  # ray 2.60 otherwise writes a token and warns
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=128 * 1024**2)
        try:
            yield
        finally:
            ray.shutdown()


def _fit(storage: Path, name: str, base_config: dict, param_space: dict, tune_config: tune.TuneConfig,
         **run_config) -> tune.ResultGrid:
    trainable = tune.with_resources(
        tune.with_parameters(lacmfer_trainable, base_config=base_config, target="CK"), {"cpu": 1}
    )
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune_config,
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                  sync_config=tune.SyncConfig(sync_artifacts=True), **run_config),
    )
    return tuner.fit()


def _by_lr(results: tune.ResultGrid) -> dict[float, tune.Result]:
    return {r.config["lr"]: r for r in results}


def _tensorboard(result: tune.Result) -> EventAccumulator:
    acc = EventAccumulator(str(Path(result.path) / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def normal_and_diverging(ray_session, base_config, tmp_path_factory) -> dict[float, tune.Result]:
    # One trial at a time with reused actors: the normal trial runs in the diverging
    # trial's worker, so the checks on its events and checkpoint cover reuse too.
    tune_config = tune.TuneConfig(metric="objective", mode="max", max_concurrent_trials=1, reuse_actors=True)
    results = _fit(tmp_path_factory.mktemp("tune"), "lr", base_config,
                   {"lr": tune.grid_search([DIVERGING_LR, NORMAL_LR])}, tune_config)
    return _by_lr(results)


def test_trial_config_sets_sampled_values_and_rejects_out_of_range_ones(base_config):
    cfg = trial_config(base_config, {"hyper_align": 0.3, "cluster_ramp": "linear", "not_searched": 1})
    assert cfg.loss.hyper_align == 0.3 and cfg.schedule.cluster_ramp == "linear"
    with pytest.raises(UserError, match=r"loss\.threshold"):
        trial_config(base_config, {"threshold": 1.5})


def test_a_trials_config_is_validated_once(base_config, monkeypatch):
    """The sampled values and the derived torch threads: one validation (each imports the
    plugins and resolves paths again). Planted bugs caught: `trial_config` validating the base
    config and then the values (two), `with_threads` through `with_values` (another)."""
    from lacmfer import config as config_module
    from lacmfer.run.lifecycle import with_threads

    calls = []
    real = config_module.config_from_dict
    monkeypatch.setattr(config_module, "config_from_dict", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = with_threads(trial_config({**base_config, "resources": {"cpu": 2.0}}, {"hyper_align": 0.3}))
    assert len(calls) == 1
    assert cfg == cfg.with_values({"resources.threads": 2})  # what a validated copy holds too
    assert cfg.resources.threads == 2 and cfg.loss.hyper_align == 0.3


def test_trial_reports_every_evaluation_with_a_loadable_checkpoint(normal_and_diverging, base_config):
    result = normal_and_diverging[NORMAL_LR]
    assert result.error is None
    history = result.metrics_dataframe
    assert history["step"].tolist() == [2.0, 4.0, 6.0]
    assert history["training_iteration"].tolist() == [1, 2, 3]
    assert history["status"].tolist() == ["stopped early", "stopped early", "completed"]  # were it to end there
    for key in METRICS:
        assert history[key].notna().all(), key

    # Checkpoints every 2nd evaluation and at the last one, not at every evaluation.
    assert [metrics["step"] for _, metrics in result.best_checkpoints] == [4.0, 6.0]
    # The last checkpoint is the final trainer state: a fresh Trainer loads it and
    # evaluates to the reported metrics.
    trainer = Trainer(trial_config(base_config, result.config), "CK")
    with result.checkpoint.as_directory() as directory:
        trainer.load_state_dict(torch.load(Path(directory) / STATE_FILE, weights_only=False)["trainer"])
    assert trainer.step_count == STEPS
    again = trainer.evaluate()
    for key in ("target_acc", "source_val_acc", "im", "bnm", "snd", "objective"):
        assert again[key] == result.metrics[key], key

    tb = _tensorboard(result)
    scalars = tb.Tags()["scalars"]
    for tag in ("loss/total", "loss/sample_level", "validators/objective", "validators/im", "target/acc",
                "hparam/objective_best", "hparam/oracle_target_acc_best"):
        assert tag in scalars, tag
    assert [e.step for e in tb.Scalars("loss/total")] == [2, 4, 6]
    assert [e.value for e in tb.Scalars("loss/total")] == pytest.approx(history["loss_total"].tolist())
    best = [e.value for e in tb.Scalars("hparam/objective_best")]
    assert best == pytest.approx(history["objective"].cummax().tolist())

    hparams = tb.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in hparams
    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"])
    values = start.session_start_info.hparams
    assert values["trial_id"].string_value == result.metrics["trial_id"]
    assert values["lr"].number_value == NORMAL_LR and values["target"].string_value == "CK"


def test_diverging_trial_ends_itself_and_the_other_completes(normal_and_diverging):
    diverging, normal = normal_and_diverging[DIVERGING_LR], normal_and_diverging[NORMAL_LR]
    assert diverging.error is None and normal.error is None
    assert diverging.metrics["status"] == "diverged"
    assert math.isnan(diverging.metrics["objective"])
    assert diverging.metrics["step"] < STEPS  # it stopped training instead of running on
    # Every report before the divergence was finite and not flagged.
    earlier = diverging.metrics_dataframe.iloc[:-1]
    assert (earlier["status"] == "stopped early").all() and earlier["objective"].notna().all()
    assert normal.metrics["status"] == "completed"
    # Both trials' TensorBoard runs reached the storage folder, the second from a reused worker.
    assert normal.metrics["pid"] == diverging.metrics["pid"]
    for result in (diverging, normal):
        assert "_hparams_/session_start_info" in _tensorboard(result).PluginTagToContent("hparams")
    # The HParams table tells the diverged trial from the successful one.
    assert _tensorboard(diverging).Scalars("hparam/diverged")[-1].value == 1.0
    assert [e.value for e in _tensorboard(normal).Scalars("hparam/diverged")] == [0.0, 0.0, 0.0]


class _KillWorkerAtFirstCheckpoint(tune.Callback):
    """SIGKILL the trial's worker process (as a crashed node would) once its first checkpoint is saved."""

    def __init__(self) -> None:
        self.killed_pid: int | None = None

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        # Tune registers the checkpoint right after this hook, before it notices the death.
        if self.killed_pid is None:
            self.killed_pid = trial.last_result["pid"]
            os.kill(self.killed_pid, signal.SIGKILL)


def test_trial_resumed_after_a_crash_continues_exactly(ray_session, base_config, normal_and_diverging, tmp_path):
    killer = _KillWorkerAtFirstCheckpoint()
    results = _fit(tmp_path, "crash", base_config, {"lr": NORMAL_LR}, tune.TuneConfig(metric="objective", mode="max"),
                   callbacks=[killer], failure_config=tune.FailureConfig(max_failures=1))
    resumed = results[0]
    assert resumed.error is None and killer.killed_pid is not None
    history = resumed.metrics_dataframe
    # The retry ran in a new process and went on from the checkpoint, not from step 0.
    assert history["pid"].iloc[0] == killer.killed_pid and history["pid"].iloc[-1] != killer.killed_pid
    assert history["step"].tolist() == [2.0, 4.0, 6.0]
    assert history["status"].tolist() == ["stopped early", "stopped early", "completed"]

    straight = normal_and_diverging[NORMAL_LR].metrics_dataframe
    for key in METRICS:
        assert history[key].tolist() == straight[key].tolist(), key

    # TensorBoard: no step drawn twice, the hparams summary written once.
    tb = _tensorboard(resumed)
    assert [e.step for e in tb.Scalars("loss/total")] == [2, 4, 6]
    starts = [value for events in sorted((Path(resumed.path) / "tb").glob("events.out.tfevents.*"))
              for event in EventFileLoader(str(events)).Load()
              for value in event.summary.value if value.tag == "_hparams_/session_start_info"]
    assert len(starts) == 1
