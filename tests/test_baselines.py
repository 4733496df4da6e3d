"""DANN and MFSAN (lacmfer/method/baselines.py): their losses on hand-worked cases, and the
seam they prove: a method's own modules are trained, checkpointed and resumed exactly."""

from __future__ import annotations

import math

import pytest
import torch

from lacmfer.data.loaders import load_split_data
from lacmfer.method.baselines import (
    DANN,
    MFSAN,
    classifier_discrepancy,
    domain_adversarial_loss,
    gradient_reversal,
)
from lacmfer.method.methods import NetworkShape
from lacmfer.method.model import LACMFEROutput
from lacmfer.method.schedules import alignment_warmup
from lacmfer.run.trainer import Trainer
from tests.conftest import tiny_config


def test_gradient_reversal_is_the_identity_forward_and_minus_lambda_backward():
    """Planted bug caught: `return ctx.coeff * grad` (no reversal) in `_GradientReversal.backward`."""
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = gradient_reversal(x, 0.25)
    assert torch.equal(y, x.detach())
    (y * torch.tensor([1.0, 2.0, 4.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-0.25, -0.5, -1.0]))


def test_the_domain_loss_labels_the_sources_one_and_the_target_zero():
    """By hand: source logit 2 → −log σ(2) = log(1 + e⁻²); target logit −1 → −log(1 − σ(−1)) =
    log(1 + e⁻¹); their mean 0.22009. Planted bug caught: the labels swapped (1.72)."""
    loss = domain_adversarial_loss(torch.tensor([[2.0]]), torch.tensor([[-1.0]]))
    assert loss.item() == pytest.approx((math.log1p(math.exp(-2)) + math.log1p(math.exp(-1))) / 2, rel=1e-6)
    assert loss.item() == pytest.approx(0.22009, abs=1e-5)


def test_classifier_discrepancy_is_the_mean_pairwise_l1_of_the_softmaxes():
    """By hand: softmax(0, 0) = (.5, .5), softmax(log 3, 0) = (.75, .25), softmax(0, log 3) =
    (.25, .75); pairwise mean |Δp| = .25, .25, .5, their mean 1/3. Planted bug caught: the L1 of
    the logits instead of the probabilities (0.549 for the first pair)."""
    log3 = math.log(3.0)
    two = torch.tensor([[[0.0, 0.0]], [[log3, 0.0]]])
    assert classifier_discrepancy(two).item() == pytest.approx(0.25, rel=1e-6)
    three = torch.tensor([[[0.0, 0.0]], [[log3, 0.0]], [[0.0, log3]]])
    assert classifier_discrepancy(three).item() == pytest.approx(1 / 3, rel=1e-6)
    assert classifier_discrepancy(two[:1]).item() == 0.0


def _outputs(features: torch.Tensor) -> LACMFEROutput:
    return LACMFEROutput(features, features * 0.5, torch.zeros(len(features), 3), torch.zeros(len(features), 3))


def test_dann_reverses_the_domain_gradient_into_the_features_at_the_papers_ramp(synth_tiny):
    """The features' gradient is ∂L_sup/∂f − λ·hyper_domain·∂L_d/∂f with λ = a(t), while the
    domain classifiers descend hyper_domain·L_d. Planted bugs caught: no gradient reversal
    (`d_s = self.discriminators[v](f_s)`), λ = 1 instead of the ramp, the weight left out."""
    cfg = tiny_config(synth_tiny, loss={"adaptation": "dann", "hyper_domain": 0.3}, schedule={"steps": 100})
    torch.manual_seed(0)
    method = DANN(cfg, NetworkShape(feature_dim=4, num_classes=3, source_domains=(1, 2)))
    method.eval()  # no dropout: the two passes below see the same classifiers
    f_s = torch.randn(5, 4, requires_grad=True)
    f_t = torch.randn(6, 4, requires_grad=True)
    step = 20
    out = method.losses(_outputs(f_s), torch.tensor([0, 1, 2, 0, 1]), _outputs(f_t), step)
    out.total.backward()
    got_s, got_t = f_s.grad.clone(), f_t.grad.clone()
    got_weights = [p.grad.clone() for p in method.parameters()]

    f_s.grad = f_t.grad = None
    method.zero_grad()
    plain = sum(domain_adversarial_loss(method.discriminators[v](a), method.discriminators[v](b))
                for v, a, b in (("g", f_s, f_t), ("l", f_s * 0.5, f_t * 0.5)))
    (0.3 * plain).backward()
    lam = alignment_warmup(step, 100, "mfsan")
    assert 0.5 < lam < 0.9
    # The features feed no supervised term here (the logits are separate tensors): their
    # gradient is the reversed domain gradient alone, on both sides.
    torch.testing.assert_close(got_s, -lam * f_s.grad)
    torch.testing.assert_close(got_t, -lam * f_t.grad)
    for got, want in zip(got_weights, (p.grad for p in method.parameters()), strict=True):
        torch.testing.assert_close(got, want)
    assert out.terms["domain"].item() == pytest.approx(plain.item(), rel=1e-6)
    torch.testing.assert_close(out.total, out.terms["sup"] + 0.3 * plain.detach())


def test_mfsan_routes_each_source_to_its_branch_and_aligns_the_classifiers_on_the_target(synth_tiny):
    """Branches set by hand: every specific feature is the constant 1, so MMD² = 0 exactly;
    classifier 0 says class 0 and classifier 1 class 1 with logit margin 10. Sources of domain
    ids 1 and 4, labelled 0 and 1: routed right, L_sup = 2 views · log(1 + e⁻¹⁰); the target's
    discrepancy is 2 views · (σ(10) − σ(−10)); total = L_sup + a(t)·hyper_disc·L_disc; the
    prediction is the log of the classifiers' mean softmax, (½, ½). Planted bugs caught:
    routing by the branch of the wrong domain (L_sup ≈ 20), the discrepancy on the source
    batch (a mix of routes), hyper_mmd in place of hyper_disc, the ramp left out."""
    cfg = tiny_config(synth_tiny, loss={"adaptation": "mfsan", "label_smoothing": 0.0, "hyper_mmd": 0.2,
                                        "hyper_disc": 0.7}, schedule={"steps": 100})
    method = MFSAN(cfg, NetworkShape(feature_dim=4, num_classes=2, source_domains=(1, 4)))
    with torch.no_grad():
        for v in ("g", "l"):
            for j in (0, 1):
                linear = method.specific[v][j][0]
                linear.weight.zero_()
                linear.bias.fill_(1.0)
                method.classifiers[v][j].weight.zero_()
                method.classifiers[v][j].bias.copy_(torch.tensor([10.0, 0.0] if j == 0 else [0.0, 10.0]))
    domains = torch.tensor([1, 4, 4, 1, 4])
    labels = torch.tensor([0, 1, 1, 0, 1])
    source, target = _outputs(torch.randn(5, 4)), _outputs(torch.randn(3, 4))
    out = method.losses(source, labels, target, step=30, domains=domains)

    assert out.terms["sup"].item() == pytest.approx(2 * math.log1p(math.exp(-10)), rel=1e-3)  # float32 log-softmax
    assert out.terms["mmd"].item() == 0.0
    margin = 1 / (1 + math.exp(-10)) - 1 / (1 + math.exp(10))
    assert out.terms["disc"].item() == pytest.approx(2 * margin, rel=1e-6)
    ramp = alignment_warmup(30, 100, "mfsan")
    assert out.total.item() == pytest.approx(out.terms["sup"].item() + ramp * 0.7 * 2 * margin, rel=1e-6)
    predicted = method.predict(target)
    torch.testing.assert_close(predicted.logits_g.exp(), torch.full((3, 2), 0.5))
    assert predicted.feat_g is target.feat_g


@pytest.mark.parametrize("adaptation", ["dann", "mfsan"])
def test_a_methods_own_modules_train_and_resume_exactly(synth_tiny, adaptation):
    """The Trainer puts the method's parameters in the optimiser, moves and checkpoints them:
    a resumed run continues with the losses and weights of an uninterrupted one. Planted bugs
    caught: the method's param group left out of the optimiser (its weights never change),
    `"method"` left out of `Trainer.state_dict` (the resumed run's losses differ)."""
    cfg = tiny_config(synth_tiny, loss={"adaptation": adaptation})
    data = load_split_data(cfg, "CK", progress=False)
    straight = Trainer(cfg, "CK", data=data)
    initial = {k: v.clone() for k, v in straight.method.state_dict().items()}
    want = [straight.step() for _ in range(4)]
    assert any(not torch.equal(initial[k], v) for k, v in straight.method.state_dict().items())

    first = Trainer(cfg, "CK", data=data)
    for _ in range(2):
        first.step()
    state = first.state_dict()
    torch.manual_seed(99)
    resumed = Trainer(cfg, "CK", data=data)
    resumed.load_state_dict(state)
    got = [resumed.step() for _ in range(2)]
    for w, g in zip(want[2:], got, strict=True):
        assert w.keys() == g.keys() and all(torch.equal(w[k], g[k]) for k in w), (w, g)
    for p, q in zip(straight.method.parameters(), resumed.method.parameters(), strict=True):
        assert torch.equal(p, q)
