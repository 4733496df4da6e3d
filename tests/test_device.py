"""Where a trial trains: the GPU Ray assigned (with its memory share) or the CPU.

No GPU here: torch.cuda's availability and its memory-fraction call are replaced through
monkeypatch, which is the seam `lacmfer.run.device` calls through; Ray's side is read from a
real Ray worker that reserved a logical GPU.
"""

from __future__ import annotations

import pytest
import ray
import torch

from lacmfer.data.loaders import load_split_data
from lacmfer.errors import UserError
from lacmfer.run.device import Placement, claim, local_placement, scheduled_placement
from lacmfer.run.trainer import Trainer
from tests.conftest import tiny_config
from trainables import lacmfer_trainable as trainable_module
from trainables import ray_session


@pytest.fixture
def gpu_machine(monkeypatch):
    """torch sees CUDA; every memory-fraction call is recorded instead of made."""
    calls: list[tuple[float, torch.device]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                        lambda fraction, device=None: calls.append((fraction, device)))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return calls


def test_a_trial_without_gpus_trains_on_the_cpu_on_a_gpu_machine(gpu_machine):
    placement = scheduled_placement("auto", [], 0.0)
    assert placement == Placement(torch.device("cpu"), None)
    assert claim(placement) == torch.device("cpu") and gpu_machine == []


def test_a_quarter_gpu_trial_trains_on_its_gpu_within_a_quarter_of_its_memory(gpu_machine, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # Ray shows the trial only the GPU it assigned
    placement = scheduled_placement("auto", ["3"], 0.25)
    assert placement == Placement(torch.device("cuda", 0), 0.25)
    assert claim(placement) == torch.device("cuda", 0)
    assert gpu_machine == [(0.25, torch.device("cuda", 0))]


def test_without_visible_devices_the_gpu_id_is_the_torch_index(gpu_machine):
    assert scheduled_placement("auto", [2], 0.5) == Placement(torch.device("cuda", 2), 0.5)


def test_a_whole_gpu_trial_has_no_memory_bound(gpu_machine, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    placement = scheduled_placement("auto", ["0"], 1.0)
    assert placement == Placement(torch.device("cuda", 1), None)
    claim(placement)
    assert gpu_machine == []


def test_two_gpus_per_trial_are_refused(gpu_machine):
    with pytest.raises(UserError, match="assigned 2 GPUs .* trains on one device"):
        scheduled_placement("auto", ["0", "1"], 2.0)


def test_two_gpus_per_trial_are_refused_by_the_config(synth_tiny):
    with pytest.raises(UserError, match=r"resources\.gpu: a trial trains on one device"):
        tiny_config(synth_tiny, resources={"gpu": 2})


def test_logical_gpus_train_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert scheduled_placement("auto", ["0"], 0.5) == Placement(torch.device("cpu"), None)
    with pytest.raises(UserError, match="torch sees no CUDA device"):
        scheduled_placement("cuda", ["0"], 0.5)


def test_device_choices_against_the_assignment(gpu_machine):
    with pytest.raises(UserError, match="reserved no GPU"):
        scheduled_placement("cuda", [], 0.0)
    assert scheduled_placement("cpu", ["0"], 0.25).device == torch.device("cpu")
    # outside a scheduler, `auto` takes the GPU torch sees (final training)
    assert local_placement("auto") == Placement(torch.device("cuda"), None)


def test_the_trainer_trains_where_its_placement_is_claimed(synth_tiny, monkeypatch):
    claimed = []
    # claim() is where the memory bound is set; here it records the call and hands out the CPU
    monkeypatch.setattr("lacmfer.run.trainer.claim", lambda placement: claimed.append(placement) or torch.device("cpu"))
    cfg = tiny_config(synth_tiny)
    placement = Placement(torch.device("cuda", 0), 0.25)
    trainer = Trainer(cfg, "CK", data=load_split_data(cfg, "CK", progress=False), placement=placement)
    assert claimed == [placement] and trainer.device == torch.device("cpu")
    assert next(trainer.model.parameters()).device == torch.device("cpu")


def test_out_of_memory_fails_the_trial_naming_its_share(synth_tiny, gpu_machine, monkeypatch):
    base = tiny_config(synth_tiny, resources={"threads": 1}).to_dict()
    monkeypatch.setattr(ray_session, "ray_gpu_assignment", lambda: (["0"], 0.25))

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("lacmfer.run.lifecycle.Run", out_of_memory)  # the trainable imports it when it runs
    with pytest.raises(RuntimeError, match=r"out of GPU memory within this trial's share .*resources\.gpu: 0\.25"):
        trainable_module.lacmfer_trainable({}, base_config=base, target="CK")


def test_ray_tells_the_trial_its_gpus_and_share(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=1, num_gpus=1, include_dashboard=False, log_to_driver=False,
             object_store_memory=128 * 1024**2)
    try:
        assignment = ray.remote(ray_session.ray_gpu_assignment)
        assert ray.get(assignment.options(num_cpus=0.5, num_gpus=0.25).remote()) == (["0"], 0.25)
        assert ray.get(assignment.options(num_cpus=0.5, num_gpus=0).remote()) == ([], 0.0)
    finally:
        ray.shutdown()
