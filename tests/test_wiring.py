"""Wiring that one wrong line breaks without any other test noticing.

Each test names, in its docstring, the one-line mutations it was seen to fail under
(planted by hand, the test run, the line restored). Every config value used here differs
from its default and from the other values it could be confused with, so a key read in
place of another gives a different number.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lacmfer.method import losses
from lacmfer.method.methods import NetworkShape, build_method
from lacmfer.method.model import LACMFEROutput
from lacmfer.method.schedules import InverseDecay
from lacmfer.run.trainer import Trainer
from tests.conftest import tiny_config

SCHEDULE = {"steps": 20, "lr": 0.05, "trunk_lr_mult": 0.25, "momentum": 0.7, "nesterov": True, "weight_decay": 3e-4,
            "lr_gamma": 7.0, "lr_power": 0.5, "lr_decay_steps": 4}


@pytest.fixture(scope="module")
def trainer(synth_tiny) -> Trainer:
    return Trainer(tiny_config(synth_tiny, schedule=SCHEDULE), "CK")


def test_the_optimiser_takes_momentum_weight_decay_and_the_trunk_rate_from_the_schedule(trainer):
    """Mutations caught (lacmfer/run/trainer.py, the SGD constructor): `momentum=s.momentum` dropped
    or given `s.weight_decay`; `weight_decay=s.weight_decay` dropped; `nesterov` dropped;
    `param_groups(s.lr, s.trunk_lr_mult)` without its second argument (the default 0.1)."""
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert set(groups) == {"trunk", "branches"}
    for group in groups.values():
        assert (group["momentum"], group["weight_decay"], group["nesterov"]) == (0.7, 3e-4, True)
    assert groups["branches"]["initial_lr"] == pytest.approx(0.05)
    assert groups["trunk"]["initial_lr"] == pytest.approx(0.05 * 0.25)


def test_the_learning_rate_follows_the_inverse_decay_at_every_step(trainer):
    """Mutations caught (lacmfer/run/trainer.py): `self.scheduler.step()` deleted from `step()`;
    the schedule's arguments in another order, e.g.
    `inverse_decay_scheduler(self.optimizer, s.lr_power, s.lr_gamma, s.lr_decay_steps)`."""
    for _ in range(3):
        trainer.step()
        groups = {g["name"]: g for g in trainer.optimizer.param_groups}
        for name, base in (("branches", 0.05), ("trunk", 0.05 * 0.25)):
            expected = base * InverseDecay(gamma=7.0, power=0.5, decay_steps=4)(trainer.step_count)
            assert groups[name]["lr"] == pytest.approx(expected), (name, trainer.step_count)
    assert trainer.evaluate()["lr"] == pytest.approx(0.05 * InverseDecay(gamma=7.0, power=0.5, decay_steps=4)(3))


def _outputs(seed: int, n: int = 24, dim: int = 16, classes: int = 7) -> LACMFEROutput:
    g = torch.Generator().manual_seed(seed)
    # Logits of several scales: confidences from near-uniform to near-certain, so a
    # threshold of 0.3 and one of 0.9 keep different samples; the local view mostly agrees
    # with the global one, as a trained network's do (pseudo-labels need both to agree).
    logits_g = torch.linspace(0.5, 6.0, n).unsqueeze(1) * torch.randn(n, classes, generator=g)
    logits_l = logits_g + 0.3 * torch.randn(n, classes, generator=g)
    return LACMFEROutput(torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g), logits_g, logits_l)


def test_each_view_and_domain_feeds_its_own_term_with_its_own_threshold(synth_tiny):
    """Every term of LA-CMFER's loss, recomputed from `lacmfer.method.losses` with the views,
    domains and thresholds docs/METHOD.md §3 gives them.

    Mutations caught (lacmfer/method/methods.py): `lc.threshold` passed for `lc.ps_threshold` to
    the pseudo-label loss; `source.feat_l` in the global view's tuple (the views' features
    crossed); `target.feat_g, source.feat_g` (domains crossed); `source.logits_g` for
    `target.logits_g` in the MCC term; `hyper_intra` and `hyper_tgt` exchanged."""
    loss = {"threshold": 0.3, "ps_threshold": 0.9, "hyper_align": 0.7, "hyper_intra": 0.45, "hyper_tgt": 0.15,
            "label_smoothing": 0.05, "kernel_num": 3, "kernel_mul": 1.5, "mcc_input": "probs"}
    cfg = tiny_config(synth_tiny, loss=loss, schedule={"cluster_start": 0.0, "cluster_ramp": "step"})
    method = build_method(cfg, NetworkShape(16, 7, (1, 2, 3, 4, 5)))
    source, target = _outputs(0), _outputs(1)
    labels = torch.arange(24) % 7
    out = method.losses(source, labels, target, step=5)

    sup = (F.cross_entropy(source.logits_g, labels, label_smoothing=0.05)
           + F.cross_entropy(source.logits_l, labels, label_smoothing=0.05))
    kernel = {"kernel_num": 3, "kernel_mul": 1.5}
    views = ((source.feat_g, target.feat_g, source.logits_g, target.logits_g),
             (source.feat_l, target.feat_l, source.logits_l, target.logits_l))
    sid = sum(losses.sample_level_alignment(*v, labels, 0.3, release=cfg.loss.hardness, **kernel) for v in views)
    cid = sum(losses.cluster_level_alignment(*v, labels, 0.3, **kernel) for v in views)
    mcc = losses.cross_view_mcc(target.logits_g.softmax(1), target.logits_l.softmax(1))
    pseudo, kept = losses.multiview_pseudo_label_loss(target.logits_g, target.logits_l, 0.9)
    # The inputs tell the thresholds and the views apart (else the test could not see a swap).
    assert 0 < kept.sum() < losses.multiview_pseudo_label_loss(target.logits_g, target.logits_l, 0.3)[1].sum()

    lambda_cid = method.cluster_weight(5)
    assert lambda_cid > 0 and method.align_weight(5) == pytest.approx(0.7)
    expected = {"sup": sup, "sample_level": sid, "cluster_level": cid, "mcc": mcc, "pseudo_label": pseudo}
    assert set(out.terms) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(out.terms[name], value, msg=name)
    total = sup + 0.7 * (sid + lambda_cid * cid) + 0.45 * mcc + 0.15 * pseudo
    torch.testing.assert_close(out.total, total)
    torch.testing.assert_close(out.metrics["pl_train_coverage"], kept.float().mean())
