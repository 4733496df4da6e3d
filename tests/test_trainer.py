import math

import pytest
import torch

from lacmfer.data.augment import network_input
from lacmfer.data.loaders import load_split_data
from lacmfer.method.model import mean_view_logits
from lacmfer.method.validators import accuracy
from lacmfer.run.trainer import Trainer
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
    assert all(want[-1][k] != 0 for k in ("sample_level", "cluster_level", "mcc", "pseudo_label"))

    first = Trainer(cfg, "CK", data=ck_data)
    for _ in range(3):
        first.step()
    state = first.state_dict()
    torch.manual_seed(1234)  # the resumed run must not depend on the global RNG left behind
    resumed = Trainer(cfg, "CK", data=ck_data)
    resumed.load_state_dict(state)
    got = [resumed.step() for _ in range(3)]
    for w, g in zip(want[3:], got, strict=True):
        assert w.keys() == g.keys() and all(torch.equal(w[k], g[k]) for k in w), (w, g)
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert straight.evaluate() == resumed.evaluate()


@pytest.mark.parametrize(
    ("loss", "terms"),
    [
        ({"adaptation": "source_only"}, {"sup"}),
        ({"adaptation": "mmd_baseline", "mcc": False, "pseudo_label": False}, {"sup", "mmd"}),
        ({"threshold": 0.0, "cluster_level": False, "ps_threshold": 0.0}, {"sup", "sample_level", "mcc", "pseudo_label"}),
        ({"threshold": 0.0, "sample_level": False, "mcc": False, "ps_threshold": 0.0},
         {"sup", "cluster_level", "pseudo_label"}),
        ({"threshold": 0.0, "ps_threshold": 0.0}, {"sup", "sample_level", "cluster_level", "mcc", "pseudo_label"}),
    ],
)
def test_every_term_switches_and_the_total_is_their_weighted_sum(synth_tiny, ck_data, loss, terms):
    # A step ramp puts the cluster term at its full weight λ = hyper_inter from step 0.
    cfg = tiny_config(synth_tiny, loss=loss, schedule={"cluster_ramp": "step"})
    trainer = Trainer(cfg, "CK", data=ck_data)
    steps = [trainer.step() for _ in range(4)]
    assert all(t.keys() == terms | {"total"} for t in steps), steps
    # An enabled term can be 0 in a step (e.g. the two views agree on no target sample yet).
    assert all(any(t[k] != 0 for t in steps) for k in terms), steps
    lc = trainer.cfg.loss
    t = {k: steps[-1].get(k, torch.tensor(0.0)) for k in ("sup", "sample_level", "cluster_level", "mmd", "mcc",
                                                          "pseudo_label", "total")}
    lam = trainer.cluster_weight()
    assert lam == lc.hyper_inter
    inter = t["mmd"] if lc.adaptation == "mmd_baseline" else t["sample_level"] + lam * t["cluster_level"]
    expected = t["sup"] + lc.hyper_align * inter + lc.hyper_intra * t["mcc"] + lc.hyper_tgt * t["pseudo_label"]
    torch.testing.assert_close(t["total"], expected, rtol=1e-6, atol=0)
    if "cluster_level" in terms:  # the tolerance is far below the smallest weighted term
        assert lc.hyper_align * lam * t["cluster_level"] > 1e-5 * t["total"]


def test_per_domain_forward_normalises_each_domain_with_its_own_statistics(synth_tiny, ck_data):
    x_s, x_t = torch.randn(6, 3, 48, 48), torch.randn(5, 3, 48, 48) + 1.0
    outputs = {}
    for bn in ("per_domain", "joint"):
        trainer = Trainer(tiny_config(synth_tiny, model={"bn": bn}), "CK", data=ck_data)
        trainer.model.train()
        source, target = trainer._forward(x_s, x_t)
        alone_s, alone_t = trainer.model(x_s), trainer.model(x_t)
        joint = trainer.model(torch.cat([x_s, x_t]))
        outputs[bn] = (source, target, alone_s, alone_t, joint)
    source, target, alone_s, alone_t, _ = outputs["per_domain"]
    torch.testing.assert_close(source.logits_g, alone_s.logits_g, rtol=0, atol=0)
    torch.testing.assert_close(target.feat_l, alone_t.feat_l, rtol=0, atol=0)
    source, target, _, _, joint = outputs["joint"]
    torch.testing.assert_close(source.logits_g, joint.logits_g[:6], rtol=0, atol=0)
    torch.testing.assert_close(target.feat_l, joint.feat_l[6:], rtol=0, atol=0)
    # The two modes differ: the batch statistics are not the same.
    assert not torch.allclose(outputs["per_domain"][0].logits_g, outputs["joint"][0].logits_g)


def test_source_only_forwards_source_images_only(synth_tiny, ck_data, monkeypatch):
    trainer = Trainer(tiny_config(synth_tiny, loss={"adaptation": "source_only"}), "CK", data=ck_data)
    before = trainer.target_stream.state_dict()
    batch_sizes = []
    forward = trainer.model.forward
    monkeypatch.setattr(trainer.model, "forward", lambda x: batch_sizes.append(x.shape[0]) or forward(x))
    trainer.step()
    trainer.step()
    assert batch_sizes == [16, 16]  # the source batch alone, never the 32 of source + target
    assert trainer.target_stream.state_dict() == before


def test_loss_sums_are_saved_by_name(synth_tiny, ck_data):
    cfg = tiny_config(synth_tiny, loss={"mcc": False})
    trainer = Trainer(cfg, "CK", data=ck_data)
    trainer.step()
    sums = trainer.state_dict()["loss_sums"]
    instruments = {f"hardness_{kind}_{side}_{view}" for kind in ("ess", "empty") for side in "st" for view in "gl"}
    assert set(sums) == {"loss_total", "loss_sup", "loss_sample_level", "loss_cluster_level", "loss_pseudo_label",
                         "pl_train_coverage", *instruments}


def test_target_accuracy_is_that_of_the_models_inference_rule(synth_tiny, ck_data):
    trainer = Trainer(tiny_config(synth_tiny), "CK", data=ck_data)
    trainer.train_until(3)
    metrics = trainer.evaluate()
    test = trainer.evaluator.predict(trainer._network, trainer.data.target_test)
    uint8 = torch.stack([torch.from_numpy(ck_data.target_test.image(k).copy()).permute(2, 0, 1)
                         for k in range(len(ck_data.target_test))])
    images = network_input(uint8, trainer.cfg.data.image_size)
    with torch.no_grad():
        predicted = mean_view_logits(*trainer.model(images)[2:])
    assert metrics["target_acc"] == accuracy(predicted, test["y"])
    assert metrics["target_acc"] != accuracy(test["g"], test["y"]) or metrics["target_acc"] != accuracy(test["l"], test["y"])


def test_evaluate_reports_every_metric(synth_tiny, ck_data):
    cfg = tiny_config(synth_tiny, eval={"objective": "im"})
    trainer = Trainer(cfg, "CK", data=ck_data)
    trainer.train_until(2)
    m = trainer.evaluate()
    for key in ("target_acc", "target_acc_g", "target_acc_l", "source_val_acc", "entropy", "im", "bnm", "snd",
                "pl_acc", "pl_coverage", "pl_train_coverage", "lr", "lr_trunk", "cluster_weight", "loss_total",
                "loss_sup", "loss_sample_level", "loss_cluster_level", "loss_mcc", "loss_pseudo_label"):
        assert key in m and math.isfinite(m[key]), key
    for key in ("dev", "mixval", "class_ami", "im_st", "entropy_st", "ensemble"):
        assert key in m and math.isfinite(m[key]), key
    assert m["objective"] == m["im"] and m["step"] == 2
    assert 0 <= m["target_acc"] <= 1 and m["entropy"] <= 0
    assert m["lr_trunk"] == pytest.approx(m["lr"] * 0.1)


def test_mixval_probes_mix_the_network_inputs_of_the_subset_rows(synth_tiny, ck_data):
    trainer = Trainer(tiny_config(synth_tiny), "CK", data=ck_data)
    trainer.train_until(2)
    rows_a, rows_b = torch.tensor([0, 3, 5]), torch.tensor([7, 2, 5])
    images = network_input(torch.stack([torch.from_numpy(ck_data.target_train.image(int(k)).copy()).permute(2, 0, 1)
                                        for k in range(8)]), trainer.cfg.data.image_size)
    trainer.model.eval()
    with torch.no_grad():
        expected = mean_view_logits(*trainer.model(0.55 * images[rows_a] + 0.45 * images[rows_b])[2:])
    assert trainer.evaluator.predict_mixed(trainer._network, rows_a, rows_b, 0.55) == pytest.approx(expected, abs=1e-5)


def test_evaluations_follow_the_interval(synth_tiny, ck_data):
    cfg = tiny_config(synth_tiny, schedule={"steps": 7}, eval={"interval": 3})
    steps = [m["step"] for m in Trainer(cfg, "CK", data=ck_data).training_loop()]
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
    assert seen == [(True, torch.bfloat16)] * 8  # two forwards a step: source and target (model.bn: per_domain)
    assert all(p.dtype == torch.float32 for p in straight.model.parameters())  # the weights stay fp32
    assert all(torch.isfinite(t["total"]) for t in want)

    first = Trainer(cfg, "CK", data=ck_data)
    first.train_until(2)
    resumed = Trainer(cfg, "CK", data=ck_data)
    resumed.load_state_dict(first.state_dict())
    for w in want[2:]:
        g = resumed.step()
        assert w.keys() == g.keys() and all(torch.equal(w[k], g[k]) for k in w), (w, g)


@pytest.fixture(scope="module")
def raf_data(synth_tiny):
    return load_split_data(tiny_config(synth_tiny), "RAF", progress=False)


def test_evaluation_reads_fixed_subsets_and_the_whole_test_set_every_test_every(synth_tiny, raf_data):
    subsets = {"target_subset": 20, "source_val_subset": 16}
    cfg = tiny_config(synth_tiny, schedule={"steps": 5}, eval={"interval": 2, "test_every": 2, **subsets})
    trainer = Trainer(cfg, "RAF", data=raf_data)
    predicted, mixed = [], []
    predict = trainer.evaluator.predict

    def spy(network, samples, indices=None, partners=None, lam=1.0):
        if partners is None:
            predicted.append((samples, None if indices is None else indices.tolist()))
        else:  # MixVal's probes
            mixed.append((samples, set(indices.tolist()) | set(partners.tolist())))
        return predict(network, samples, indices, partners, lam)

    trainer.evaluator.predict = spy
    evaluations = list(trainer.training_loop())  # at steps 2, 4 and 5 (the last)
    assert [m["step"] for m in evaluations] == [2, 4, 5]
    assert [math.isnan(m["target_acc"]) for m in evaluations] == [True, False, False]
    assert all(math.isfinite(m[k]) for m in evaluations for k in ("im", "snd", "pl_acc", "source_val_acc"))

    stream = trainer.evaluator.target_subset.tolist()
    held_out = trainer.evaluator.source_val_subset.tolist()
    assert len(stream) == 20 and len(held_out) == 16
    once = [(raf_data.target_train, stream), (raf_data.source_val, held_out)]
    with_test = [(raf_data.target_train, stream), (raf_data.target_test, None), (raf_data.source_val, held_out)]
    assert predicted == once + with_test + with_test
    # MixVal mixes images of the target subset only, once per evaluation.
    assert [samples for samples, _ in mixed] == [raf_data.target_train] * 3
    assert all(rows <= set(stream) for _, rows in mixed)
    # The subsets are part of the protocol, like the hold-out: the same for another seed.
    other = Trainer(cfg.with_values({"seed": 1}), "RAF", data=raf_data)
    assert other.evaluator.target_subset.tolist() == stream and other.evaluator.source_val_subset.tolist() == held_out


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


# ------------------------------------------------- released-code switches and instruments


def test_mfsan_warmup_scales_the_alignment_term_of_the_total(synth_tiny, ck_data):
    # Alignment only (its weight from the warm-up), every sample confident so L_sid ≠ 0.
    loss = {"threshold": 0.0, "cluster_level": False, "mcc": False, "pseudo_label": False,
            "align_warmup": "mfsan"}
    trainer = Trainer(tiny_config(synth_tiny, loss=loss, schedule={"steps": 20}), "CK", data=ck_data)
    first = trainer.step()
    assert first["sample_level"] > 0
    torch.testing.assert_close(first["total"], first["sup"])  # a(0) = 0
    trainer.train_until(10)
    mid = trainer.step()  # step 10 of 20: a = 2/(1 + e^−5) − 1
    a = 2 / (1 + math.exp(-5)) - 1
    torch.testing.assert_close(mid["total"], mid["sup"] + trainer.cfg.loss.hyper_align * a * mid["sample_level"],
                               rtol=1e-6, atol=0)


def test_model_switches_reach_the_network(synth_tiny, ck_data):
    cfg = tiny_config(synth_tiny, model={"cbam": "release", "branch_init": "pytorch"})
    block = Trainer(cfg, "CK", data=ck_data).model.global_branch.stage1[0]
    assert block.cbam.skip and block.cbam.spatial.conv.kernel_size == (49, 49)
    assert (block.conv1.weight.abs() <= 1 / math.sqrt(block.conv1.weight[0].numel())).all()


def test_hardness_instruments_count_what_the_weights_hold(synth_tiny, ck_data):
    from lacmfer.method.losses import sample_level_weights
    from lacmfer.method.methods import hardness_diagnostics
    from lacmfer.method.model import LACMFEROutput

    # Two confident source samples of class 0, equally hard (h = 1/3): w_s = (½, ½, 0), ESS 2;
    # the target's confident sample is of class 1, which no source label has: w_t = 0.
    z_s = torch.tensor([[5.0, 1, 0], [5.0, 0, 1], [0.1, 0, 0]])
    z_t = torch.tensor([[1, 5.0, 0], [0.1, 0, 0]])
    labels = torch.tensor([0, 0, 2])
    feats = torch.zeros(3, 4), torch.zeros(2, 4)
    source = LACMFEROutput(feats[0], feats[0], z_s, z_s)
    target = LACMFEROutput(feats[1], feats[1], z_t, z_t)
    w_s, _ = sample_level_weights(z_s, z_t, labels, 0.6)
    torch.testing.assert_close(w_s, torch.tensor([0.5, 0.5, 0.0]))
    m = hardness_diagnostics(source, labels, target, 0.6, "july2024")
    for view in "gl":
        assert m[f"hardness_ess_s_{view}"].item() == pytest.approx(2.0)
        assert m[f"hardness_empty_s_{view}"].item() == 0.0
        assert m[f"hardness_ess_t_{view}"].item() == 0.0 and m[f"hardness_empty_t_{view}"].item() == 1.0
    # June has no membership test: the confident target sample keeps its weight.
    june = hardness_diagnostics(source, labels, target, 0.6, "june2024")
    assert june["hardness_empty_t_g"].item() == 0.0 and june["hardness_ess_t_g"].item() == pytest.approx(1.0)
    # In training they are averaged over the interval and reported.
    trainer = Trainer(tiny_config(synth_tiny), "CK", data=ck_data)
    trainer.train_until(3)
    metrics = trainer.evaluate()
    assert all(0 <= metrics[f"hardness_empty_{s}_{v}"] <= 1 for s in "st" for v in "gl")


def test_gradient_ratio_measures_the_trunk_and_leaves_training_unchanged(synth_tiny, ck_data):
    cfg = tiny_config(synth_tiny, loss={"threshold": 0.0}, eval={"grad_ratio_every": 1})
    trainer = Trainer(cfg, "CK", data=ck_data)
    # By hand: align = 3·sup on the trunk's parameters gives a ratio of exactly 3.
    sup = sum((p ** 2).sum() for p in trainer.model.trunk.parameters())
    trainer._measure_grad_ratio(sup, 3 * sup)
    trainer._measure_grad_ratio(sup, sup)
    assert trainer.evaluate()["grad_ratio"] == pytest.approx(2.0)  # the mean of 3 and 1

    measured, plain = (Trainer(tiny_config(synth_tiny, loss={"threshold": 0.0}, eval={"grad_ratio_every": every}),
                               "CK", data=ck_data) for every in (1, None))
    for t in (measured, plain):
        t.train_until(3)
    for p, q in zip(measured.model.parameters(), plain.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert measured.evaluate()["grad_ratio"] > 0 and "grad_ratio" not in plain.evaluate()
    # Source-only has no alignment part: nothing to measure.
    source_only = Trainer(tiny_config(synth_tiny, loss={"adaptation": "source_only"},
                                      eval={"grad_ratio_every": 1}), "CK", data=ck_data)
    source_only.train_until(2)
    assert "grad_ratio" not in source_only.evaluate()
