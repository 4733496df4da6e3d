import math

import pytest
import torch

from lacmfer.data.loaders import load_split_data
from lacmfer.trainer import LOSS_TERMS, Trainer
from tests.conftest import NO_AUGMENT, tiny_config


@pytest.fixture(scope="module")
def ck_data(synth_tiny):
    return load_split_data(tiny_config(synth_tiny), "CK", progress=False)


def test_supervised_loss_decreases(synth_tiny, ck_data):
    cfg = tiny_config(synth_tiny, loss={"adaptation": "source_only"}, data={"augment": NO_AUGMENT},
                      schedule={"steps": 60, "lr": 0.05, "lr_decay_steps": 1000})
    trainer = Trainer(cfg, "CK", data=ck_data)
    sup = torch.stack([trainer.step()["sup"] for _ in range(60)])
    assert sup[-15:].mean() < 0.9 * sup[:15].mean()


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(synth_tiny, ck_data):
    cfg = tiny_config(synth_tiny, loss={"threshold": 0.0, "ps_threshold": 0.0})  # every term active
    straight = Trainer(cfg, "CK", data=ck_data)
    want = [straight.step() for _ in range(6)]
    assert all(want[-1][k] != 0 for k in ("sid", "cid", "mcc", "mvv"))

    first = Trainer(cfg, "CK", data=ck_data)
    for _ in range(3):
        first.step()
    state = first.state_dict()
    torch.manual_seed(1234)  # the resumed run must not depend on the global RNG left behind
    resumed = Trainer(cfg, "CK", data=ck_data)
    resumed.load_state_dict(state)
    got = [resumed.step() for _ in range(3)]
    for w, g in zip(want[3:], got, strict=True):
        assert all(torch.equal(w[k], g[k]) for k in LOSS_TERMS), (w, g)
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert straight.evaluate() == resumed.evaluate()


@pytest.mark.parametrize(
    ("loss", "zero", "nonzero"),
    [
        ({"adaptation": "source_only"}, ("sid", "cid", "mcc", "mvv"), ()),
        ({"adaptation": "mmd_baseline", "mcc": False, "pseudo_label": False}, ("cid", "mcc", "mvv"), ("sid",)),
        ({"threshold": 0.0, "cluster_level": False, "ps_threshold": 0.0}, ("cid",), ("sid", "mcc", "mvv")),
        ({"threshold": 0.0, "sample_level": False, "mcc": False}, ("sid", "mcc"), ("cid",)),
    ],
)
def test_every_term_switches(synth_tiny, ck_data, loss, zero, nonzero):
    # A step ramp puts the cluster term at full weight from step 0.
    cfg = tiny_config(synth_tiny, loss=loss, schedule={"cluster_ramp": "step"})
    trainer = Trainer(cfg, "CK", data=ck_data)
    steps = [trainer.step() for _ in range(4)]
    assert all(t[k] == 0 for t in steps for k in zero), steps
    # An enabled term can be 0 in a step (e.g. the two views agree on no target sample yet).
    assert all(any(t[k] != 0 for t in steps) for k in nonzero), steps
    terms = steps[-1]
    weights = {"mcc": trainer.cfg.loss.hyper_intra, "mvv": trainer.cfg.loss.hyper_tgt}
    expected = terms["sup"] + sum(w * terms[k] for k, w in weights.items())
    expected = expected + trainer.cfg.loss.hyper_align * (terms["sid"] + trainer.cluster_weight() * terms["cid"])
    # The weight of the cluster term is read after the step, so allow the schedule's drift.
    assert torch.allclose(terms["total"], expected, rtol=1e-2)


def test_evaluate_reports_every_metric(synth_tiny, ck_data):
    cfg = tiny_config(synth_tiny, eval={"objective": "im"})
    trainer = Trainer(cfg, "CK", data=ck_data)
    trainer.train_until(2)
    m = trainer.evaluate()
    for key in ("target_acc", "target_acc_g", "target_acc_l", "source_val_acc", "entropy", "im", "bnm", "snd",
                "pl_acc", "pl_coverage", "lr", "lr_trunk", "cluster_weight", *(f"loss_{k}" for k in LOSS_TERMS)):
        assert key in m and math.isfinite(m[key]), key
    assert m["objective"] == m["im"] and m["step"] == 2
    assert 0 <= m["target_acc"] <= 1 and m["entropy"] <= 0
    assert m["lr_trunk"] == pytest.approx(m["lr"] * 0.1)


def test_evaluations_follow_the_interval(synth_tiny, ck_data):
    cfg = tiny_config(synth_tiny, schedule={"steps": 7}, eval={"interval": 3})
    steps = [m["step"] for m in Trainer(cfg, "CK", data=ck_data).evaluations()]
    assert steps == [3, 6, 7]


def test_bf16_and_channels_last_reach_the_network_and_resume_exactly(synth_tiny, ck_data):
    # CPU autocast runs the same code path as CUDA's bf16 (only the device type differs).
    cfg = tiny_config(synth_tiny, model={"channels_last": True}, resources={"precision": "bf16"},
                      loss={"threshold": 0.0, "ps_threshold": 0.0})
    straight = Trainer(cfg, "CK", data=ck_data)
    seen = []
    hook = straight.model.trunk.conv1.register_forward_hook(
        lambda module, inputs, out: seen.append((inputs[0].is_contiguous(memory_format=torch.channels_last),
                                                 out.dtype)))
    want = [straight.step() for _ in range(4)]
    hook.remove()
    assert seen == [(True, torch.bfloat16)] * 4
    assert all(p.dtype == torch.float32 for p in straight.model.parameters())  # the weights stay fp32
    assert all(torch.isfinite(t["total"]) for t in want)

    first = Trainer(cfg, "CK", data=ck_data)
    first.train_until(2)
    resumed = Trainer(cfg, "CK", data=ck_data)
    resumed.load_state_dict(first.state_dict())
    for w in want[2:]:
        g = resumed.step()
        assert all(torch.equal(w[k], g[k]) for k in LOSS_TERMS), (w, g)


@pytest.fixture(scope="module")
def raf_data(synth_tiny):
    return load_split_data(tiny_config(synth_tiny), "RAF", progress=False)


def test_evaluation_reads_fixed_subsets_and_the_whole_test_set_every_test_every(synth_tiny, raf_data):
    subsets = {"target_subset": 20, "source_val_subset": 16}
    cfg = tiny_config(synth_tiny, schedule={"steps": 5}, eval={"interval": 2, "test_every": 2, **subsets})
    trainer = Trainer(cfg, "RAF", data=raf_data)
    predicted = []
    predict = trainer._predict

    def spy(samples, indices=None):
        predicted.append((samples, None if indices is None else indices.tolist()))
        return predict(samples, indices)

    trainer._predict = spy
    evaluations = list(trainer.evaluations())  # at steps 2, 4 and 5 (the last)
    assert [m["step"] for m in evaluations] == [2, 4, 5]
    assert [math.isnan(m["target_acc"]) for m in evaluations] == [True, False, False]
    assert all(math.isfinite(m[k]) for m in evaluations for k in ("im", "snd", "pl_acc", "source_val_acc"))

    stream = trainer.target_subset.tolist()
    held_out = trainer.source_val_subset.tolist()
    assert len(stream) == 20 and len(held_out) == 16
    once = [(raf_data.target_train, stream), (raf_data.source_val, held_out)]
    with_test = [(raf_data.target_train, stream), (raf_data.target_test, None), (raf_data.source_val, held_out)]
    assert predicted == once + with_test + with_test
    # The subsets are part of the protocol, like the hold-out: the same for another seed.
    other = Trainer(cfg.with_values({"seed": 1}), "RAF", data=raf_data)
    assert other.target_subset.tolist() == stream and other.source_val_subset.tolist() == held_out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_pins_batches_and_checkpoints_its_rng(synth_tiny, ck_data):
    cfg = tiny_config(synth_tiny, model={"channels_last": True}, resources={"device": "cuda", "precision": "bf16"})
    trainer = Trainer(cfg, "CK", data=ck_data)
    assert next(trainer.source_stream).images.is_pinned()
    assert torch.isfinite(trainer.step()["total"])
    state = trainer.state_dict()
    assert isinstance(state["rng_cuda"], torch.Tensor)
    torch.cuda.manual_seed(123)
    trainer.load_state_dict(state)
    assert torch.equal(torch.cuda.get_rng_state(trainer.device), state["rng_cuda"])
