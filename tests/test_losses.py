"""lacmfer.method.losses against the loop reference of docs/METHOD.md §3, edge cases and gradient flow."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lacmfer.method import losses
from tests import reference_losses as ref

C = 7
F64 = torch.float64
TOL = {"atol": 1e-6, "rtol": 1e-6}
THRESHOLD = 0.4


def make_batch(seed: int, n_s: int, n_t: int | None = None, dim: int = 12) -> dict[str, Tensor]:
    """Random float64 inputs with a realistic mix of confident and unconfident samples."""
    gen = torch.Generator().manual_seed(seed)
    n_t = n_s if n_t is None else n_t
    labels = torch.randint(0, C, (n_s,), generator=gen)
    logits_s = torch.randn(n_s, C, generator=gen, dtype=F64) * 1.5
    logits_s[torch.arange(n_s), labels] += 2.0
    return {
        "feat_s": torch.randn(n_s, dim, generator=gen, dtype=F64).requires_grad_(),
        "feat_t": (torch.randn(n_t, dim, generator=gen, dtype=F64) + 0.3).requires_grad_(),
        "logits_s": logits_s.requires_grad_(),
        "logits_t": (torch.randn(n_t, C, generator=gen, dtype=F64) * 2.5).requires_grad_(),
        "labels_s": labels,
    }


def alignment_args(b: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return b["feat_s"], b["feat_t"], b["logits_s"], b["logits_t"], b["labels_s"]


def feature_grads(loss: Tensor, b: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    return torch.autograd.grad(loss, [b["feat_s"], b["feat_t"]])


CASES = [(seed, n_s, n_t) for seed in (0, 1, 2) for n_s, n_t in ((6, 6), (16, 16), (40, 40), (24, 13))]


# --- multi_kernel_mmd ---------------------------------------------------------------


@pytest.mark.parametrize("seed,n_a,n_b", CASES)
def test_multi_kernel_mmd_matches_reference(seed: int, n_a: int, n_b: int) -> None:
    b = make_batch(seed, n_a, n_b)
    ours = losses.multi_kernel_mmd(b["feat_s"], b["feat_t"])
    theirs = ref.mmd(b["feat_s"], b["feat_t"])
    torch.testing.assert_close(ours, theirs, **TOL)
    for g_ours, g_ref in zip(feature_grads(ours, b), feature_grads(theirs, b)):
        torch.testing.assert_close(g_ours, g_ref, **TOL)


@pytest.mark.parametrize("kernel_num,kernel_mul", [(1, 2.0), (4, 2.0), (3, 1.5), (5, 3.0)])
def test_multi_kernel_mmd_kernel_parameters(kernel_num: int, kernel_mul: float) -> None:
    b = make_batch(3, 10, 7)
    ours = losses.multi_kernel_mmd(b["feat_s"], b["feat_t"], kernel_num, kernel_mul)
    theirs = ref.mmd(b["feat_s"], b["feat_t"], kernel_num, kernel_mul)
    torch.testing.assert_close(ours, theirs, **TOL)
    for g_ours, g_ref in zip(feature_grads(ours, b), feature_grads(theirs, b)):
        torch.testing.assert_close(g_ours, g_ref, **TOL)


def test_multi_kernel_mmd_is_zero_for_equal_sets_and_grows_with_shift() -> None:
    x = make_batch(4, 20)["feat_s"].detach()
    assert losses.multi_kernel_mmd(x, x).abs() < 1e-12
    near = losses.multi_kernel_mmd(x, x + 0.1)
    far = losses.multi_kernel_mmd(x, x + 1.0)
    assert 0 < near < far


# --- hardness_weights ---------------------------------------------------------------


def hardness_case(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(logits, labels, confidence mask, the other side's labels), classes 4..6 absent on the other side."""
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(30, C, generator=gen, dtype=F64) * 2).requires_grad_()
    labels = torch.randint(0, C, (30,), generator=gen)
    mask = torch.rand(30, generator=gen) < 0.7
    other = torch.randint(0, 4, (25,), generator=gen)
    return logits, labels, mask, other


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hardness_weights_match_reference(seed: int) -> None:
    logits, labels, mask, other = hardness_case(seed)
    ours = losses.hardness_weights(logits, labels, mask, other)
    theirs = ref.hardness_weights(logits, labels.tolist(), mask.tolist(), other.tolist())
    torch.testing.assert_close(ours, theirs, **TOL)
    assert not ours.requires_grad
    assert ours.sum().item() == pytest.approx(1.0)
    assert (ours[labels >= 4] == 0).all() and (ours[~mask] == 0).all()
    # A float mask gives the same weights as a bool one.
    torch.testing.assert_close(losses.hardness_weights(logits, labels, mask.to(F64), other), ours)


def test_hardness_weights_all_zero_when_nothing_qualifies() -> None:
    logits = torch.randn(8, C, dtype=F64)
    labels = torch.zeros(8, dtype=torch.long)
    no_mask = losses.hardness_weights(logits, labels, torch.zeros(8), labels)
    no_match = losses.hardness_weights(logits, labels, torch.ones(8), torch.ones(5, dtype=torch.long))
    for w in (no_mask, no_match):
        assert torch.equal(w, torch.zeros(8, dtype=F64))


# --- sample-level and cluster-level alignment ---------------------------------------


@pytest.mark.parametrize("seed,n_s,n_t", CASES)
def test_sample_level_matches_reference(seed: int, n_s: int, n_t: int) -> None:
    b = make_batch(seed, n_s, n_t)
    ours = losses.sample_level_alignment(*alignment_args(b), THRESHOLD)
    theirs = ref.sample_level_alignment(*alignment_args(b), THRESHOLD)
    assert theirs.abs() > 1e-4  # a non-trivial case
    torch.testing.assert_close(ours, theirs, **TOL)
    for g_ours, g_ref in zip(feature_grads(ours, b), feature_grads(theirs, b)):
        torch.testing.assert_close(g_ours, g_ref, **TOL)


@pytest.mark.parametrize("seed,n_s,n_t", CASES)
def test_cluster_level_matches_reference(seed: int, n_s: int, n_t: int) -> None:
    b = make_batch(seed, n_s, n_t)
    ours = losses.cluster_level_alignment(*alignment_args(b), THRESHOLD)
    theirs = ref.cluster_level_alignment(*alignment_args(b), THRESHOLD)
    assert theirs.abs() > 1e-4
    torch.testing.assert_close(ours, theirs, **TOL)
    for g_ours, g_ref in zip(feature_grads(ours, b), feature_grads(theirs, b)):
        torch.testing.assert_close(g_ours, g_ref, **TOL)


@pytest.mark.parametrize("threshold", [0.25, 0.6, 0.85])
def test_alignment_matches_reference_across_thresholds(threshold: float) -> None:
    b = make_batch(5, 30)
    for ours_fn, ref_fn in (
        (losses.sample_level_alignment, ref.sample_level_alignment),
        (losses.cluster_level_alignment, ref.cluster_level_alignment),
    ):
        ours = ours_fn(*alignment_args(b), threshold)
        theirs = ref_fn(*alignment_args(b), threshold)
        torch.testing.assert_close(ours, theirs, **TOL)
        for g_ours, g_ref in zip(feature_grads(ours, b), feature_grads(theirs, b)):
            torch.testing.assert_close(g_ours, g_ref, **TOL)


def test_class_present_on_one_side_only() -> None:
    b = make_batch(6, 20)
    with torch.no_grad():
        b["labels_s"].clamp_(max=C - 2)  # the source never has the last class ...
        b["logits_t"][:5, C - 1] += 20.0  # ... which five confident targets predict
    args = alignment_args(b)
    for ours_fn, ref_fn in (
        (losses.sample_level_alignment, ref.sample_level_alignment),
        (losses.cluster_level_alignment, ref.cluster_level_alignment),
    ):
        torch.testing.assert_close(ours_fn(*args, THRESHOLD), ref_fn(*args, THRESHOLD), **TOL)
    # Those five targets have no source counterpart: zero hardness weight.
    pseudo = b["logits_t"].argmax(1)
    w_t = losses.hardness_weights(b["logits_t"], pseudo, torch.ones(20), b["labels_s"])
    assert (w_t[:5] == 0).all() and w_t.sum() > 0


def test_inter_domain_alignment_equals_separate_terms() -> None:
    b = make_batch(7, 25)
    sample, cluster = losses.inter_domain_alignment(*alignment_args(b), THRESHOLD)
    torch.testing.assert_close(sample, losses.sample_level_alignment(*alignment_args(b), THRESHOLD))
    torch.testing.assert_close(cluster, losses.cluster_level_alignment(*alignment_args(b), THRESHOLD))
    combined = feature_grads(sample + 0.3 * cluster, b)
    separate = feature_grads(
        losses.sample_level_alignment(*alignment_args(b), THRESHOLD)
        + 0.3 * losses.cluster_level_alignment(*alignment_args(b), THRESHOLD),
        b,
    )
    for g_a, g_b in zip(combined, separate):
        torch.testing.assert_close(g_a, g_b)


def test_alignment_gradients_reach_features_not_logits() -> None:
    b = make_batch(8, 16)
    for fn in (losses.sample_level_alignment, losses.cluster_level_alignment):
        loss = fn(*alignment_args(b), THRESHOLD)
        g_fs, g_ft, g_zs, g_zt = torch.autograd.grad(
            loss, [b["feat_s"], b["feat_t"], b["logits_s"], b["logits_t"]], allow_unused=True
        )
        assert g_zs is None and g_zt is None  # weights, masks and pseudo-labels are constants
        assert g_fs.abs().sum() > 0 and g_ft.abs().sum() > 0


def test_sample_level_gradient_equals_constant_weight_gradient() -> None:
    b = make_batch(9, 18)
    loss = losses.sample_level_alignment(*alignment_args(b), THRESHOLD)
    # The same quantity with the weights built by hand as plain constants.
    conf_s = b["logits_s"].softmax(1).max(1).values >= THRESHOLD
    conf_t, pseudo_t = b["logits_t"].softmax(1).max(1)
    w_s = losses.hardness_weights(b["logits_s"], b["labels_s"], conf_s, pseudo_t)
    w_t = losses.hardness_weights(b["logits_t"], pseudo_t, conf_t >= THRESHOLD, b["labels_s"])
    assert not w_s.requires_grad and not w_t.requires_grad
    w = torch.cat([w_s, -w_t]).detach().clone()
    k = ref.kernel_matrix(torch.cat([b["feat_s"], b["feat_t"]]))
    by_hand = w @ k @ w
    torch.testing.assert_close(loss, by_hand, **TOL)
    for g_ours, g_hand in zip(feature_grads(loss, b), feature_grads(by_hand, b)):
        torch.testing.assert_close(g_ours, g_hand, **TOL)


def _clusters(shift: float, spread: float, seed: int = 0) -> dict[str, Tensor]:
    """Three classes around well-separated centres; the target displaced by `shift`."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat_interleave(6)
    centres = torch.eye(8, dtype=F64)[:3] * spread
    offset = torch.zeros(8, dtype=F64)
    offset[5] = shift
    logits = torch.full((18, C), -5.0, dtype=F64)
    logits[torch.arange(18), labels] = 5.0  # everyone confident and right
    return {
        "feat_s": (centres[labels] + 0.3 * torch.randn(18, 8, generator=gen, dtype=F64)).requires_grad_(),
        "feat_t": (centres[labels] + offset + 0.3 * torch.randn(18, 8, generator=gen, dtype=F64)).requires_grad_(),
        "logits_s": logits,
        "logits_t": logits.clone(),
        "labels_s": labels,
    }


def test_cluster_level_pulls_same_class_clusters_together() -> None:
    values = [losses.cluster_level_alignment(*alignment_args(_clusters(s, 4.0)), THRESHOLD) for s in (0.0, 1.0, 2.0)]
    assert values[0] < values[1] < values[2]
    # Gradient descent on the target features moves each target cluster to its source cluster.
    b = _clusters(2.0, 4.0)
    labels = b["labels_s"]

    def same_class_gap(ft: Tensor) -> float:
        return sum(
            (b["feat_s"][labels == c].mean(0) - ft[labels == c].mean(0)).norm().item() for c in range(3)
        )

    feat_t = b["feat_t"].detach().clone().requires_grad_()
    before = same_class_gap(feat_t.detach())
    for _ in range(20):
        loss = losses.cluster_level_alignment(b["feat_s"].detach(), feat_t, b["logits_s"], b["logits_t"], labels, 0.4)
        (grad,) = torch.autograd.grad(loss, feat_t)
        with torch.no_grad():
            feat_t -= 2.0 * grad
    assert same_class_gap(feat_t.detach()) < 0.8 * before


def test_cluster_level_pushes_different_classes_apart() -> None:
    close = losses.cluster_level_alignment(*alignment_args(_clusters(0.0, 1.0)), THRESHOLD)
    apart = losses.cluster_level_alignment(*alignment_args(_clusters(0.0, 4.0)), THRESHOLD)
    assert apart < close < 0


# --- edge cases ---------------------------------------------------------------------


def _assert_finite_grads(loss: Tensor, inputs: list[Tensor]) -> list[Tensor]:
    assert torch.isfinite(loss)
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    for g in grads:
        assert g is None or torch.isfinite(g).all()
    return [g for g in grads if g is not None]


def test_no_confident_sample_gives_zero_alignment() -> None:
    b = make_batch(10, 12)
    for fn in (losses.sample_level_alignment, losses.cluster_level_alignment):
        loss = fn(*alignment_args(b), 1.01)  # no softmax reaches it
        assert loss == 0
        for g in _assert_finite_grads(loss, [b["feat_s"], b["feat_t"]]):
            assert (g == 0).all()


def test_one_class_only() -> None:
    b = make_batch(11, 12)
    with torch.no_grad():
        b["labels_s"].zero_()
        b["logits_s"][:, 0] += 30.0
        b["logits_t"][:, 0] += 30.0
    cluster = losses.cluster_level_alignment(*alignment_args(b), THRESHOLD)
    assert cluster == 0  # no pair of different classes: zero by definition (docs/METHOD.md §3.4)
    _assert_finite_grads(cluster, [b["feat_s"], b["feat_t"]])
    sample = losses.sample_level_alignment(*alignment_args(b), THRESHOLD)
    torch.testing.assert_close(sample, ref.sample_level_alignment(*alignment_args(b), THRESHOLD), **TOL)
    _assert_finite_grads(sample, [b["feat_s"], b["feat_t"]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("value", [0.0, 3.7])
def test_identical_samples_give_finite_values_and_gradients(dtype: torch.dtype, value: float) -> None:
    b = make_batch(12, 10)
    row = torch.full((1, 12), value, dtype=dtype)
    feat_s = row.repeat(10, 1).requires_grad_()
    feat_t = row.repeat(10, 1).requires_grad_()
    logits_s, logits_t = b["logits_s"].detach().to(dtype), b["logits_t"].detach().to(dtype)
    mmd = losses.multi_kernel_mmd(feat_s, feat_t)
    sample = losses.sample_level_alignment(feat_s, feat_t, logits_s, logits_t, b["labels_s"], THRESHOLD)
    cluster = losses.cluster_level_alignment(feat_s, feat_t, logits_s, logits_t, b["labels_s"], THRESHOLD)
    for loss in (mmd, sample, cluster):
        _assert_finite_grads(loss, [feat_s, feat_t])
    # Coincident points: every kernel entry is equal, so both MMDs vanish.
    assert mmd.abs() < 1e-5 and sample.abs() < 1e-5


def test_empty_kept_mask_gives_zero_pseudo_label_loss() -> None:
    b = make_batch(13, 12)
    logits_g = b["logits_t"]
    logits_l = (b["logits_t"].detach() * 1.0).requires_grad_()
    loss, keep = losses.multiview_pseudo_label_loss(logits_g, logits_l, 1.0)  # conf never exceeds 1
    assert loss == 0 and not keep.any()
    for g in _assert_finite_grads(loss, [logits_g, logits_l]):
        assert (g == 0).all()


# --- cross-view MCC -----------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cross_view_mcc_matches_reference(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    z_g = (torch.randn(20, C, generator=gen, dtype=F64) * 2).requires_grad_()
    z_l = (z_g.detach() + torch.randn(20, C, generator=gen, dtype=F64)).requires_grad_()
    ours = losses.cross_view_mcc(z_g.softmax(1), z_l.softmax(1))
    theirs = ref.cross_view_mcc(z_g.softmax(1), z_l.softmax(1))
    torch.testing.assert_close(ours, theirs, **TOL)
    for g_ours, g_ref in zip(torch.autograd.grad(ours, [z_g, z_l]), torch.autograd.grad(theirs, [z_g, z_l])):
        torch.testing.assert_close(g_ours, g_ref, **TOL)
        assert g_ours.abs().sum() > 0


def test_cross_view_mcc_known_values() -> None:
    agree = torch.eye(C, dtype=F64).repeat(3, 1)  # both views certain and agreeing
    assert losses.cross_view_mcc(agree, agree) == 0
    uniform = torch.full((10, C), 1.0 / C, dtype=F64)
    torch.testing.assert_close(losses.cross_view_mcc(uniform, uniform), torch.tensor((C - 1) / C, dtype=F64))


def test_cross_view_mcc_guards_zero_sums() -> None:
    # Class 6 never predicted by either view: its row and column of M are zero.
    z = torch.randn(9, C, dtype=F64)
    probs = torch.cat([z[:, :-1].softmax(1), torch.zeros(9, 1, dtype=F64)], 1).requires_grad_()
    _assert_finite_grads(losses.cross_view_mcc(probs, probs), [probs])
    # The reproduction switch feeds logits, whose sums can be exactly zero or negative.
    logits = torch.cat([z, -z]).requires_grad_()
    _assert_finite_grads(losses.cross_view_mcc(logits, logits), [logits])
    _assert_finite_grads(losses.cross_view_mcc(-logits.abs(), logits.abs()), [logits])


# --- multi-view pseudo-label loss ---------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ps_threshold", [0.5, 0.9])
def test_pseudo_label_loss_matches_reference(seed: int, ps_threshold: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    z_g = (torch.randn(30, C, generator=gen, dtype=F64) * 3).requires_grad_()
    z_l = (z_g.detach() + torch.randn(30, C, generator=gen, dtype=F64)).requires_grad_()
    ours, keep = losses.multiview_pseudo_label_loss(z_g, z_l, ps_threshold)
    theirs, ref_keep = ref.multiview_pseudo_label_loss(z_g, z_l, ps_threshold)
    assert torch.equal(keep, ref_keep) and 0 < keep.sum() < 30
    torch.testing.assert_close(ours, theirs, **TOL)
    for g_ours, g_ref in zip(torch.autograd.grad(ours, [z_g, z_l]), torch.autograd.grad(theirs, [z_g, z_l])):
        torch.testing.assert_close(g_ours, g_ref, **TOL)
        assert g_ours.abs().sum() > 0


def test_pseudo_label_keep_rule() -> None:
    big, small = 8.0, 0.5
    z_g = torch.zeros(4, C, dtype=F64)
    z_l = torch.zeros(4, C, dtype=F64)
    z_g[0, 1], z_l[0, 1] = big, small  # agree, only g confident -> kept
    z_g[1, 2], z_l[1, 2] = small, big  # agree, only l confident -> kept
    z_g[2, 3], z_l[2, 4] = big, big  # both confident, disagree -> dropped
    z_g[3, 5], z_l[3, 5] = small, small  # agree, neither confident -> dropped
    _, keep = losses.multiview_pseudo_label_loss(z_g, z_l, 0.9)
    assert keep.tolist() == [True, True, False, False]


# --- no host synchronisation, dtype ---------------------------------------------------


def _all_losses(b: dict[str, Tensor]) -> list[Tensor]:
    args = alignment_args(b)
    mvv, _ = losses.multiview_pseudo_label_loss(b["logits_t"], b["logits_s"], 0.9)
    return [
        losses.multi_kernel_mmd(b["feat_s"], b["feat_t"]),
        losses.hardness_weights(b["logits_s"], b["labels_s"], b["logits_s"][:, 0] > 0, b["labels_s"]),
        losses.sample_level_alignment(*args, THRESHOLD),
        losses.cluster_level_alignment(*args, THRESHOLD),
        *losses.inter_domain_alignment(*args, THRESHOLD),
        losses.cross_view_mcc(b["logits_t"].softmax(1), b["logits_s"].softmax(1)),
        mvv,
    ]


def test_no_host_synchronisation() -> None:
    # Meta tensors have no data: `.item()`, `nonzero`, boolean indexing or `bool(t)` raise.
    b = {k: v.detach().to("meta") for k, v in make_batch(14, 8).items()}
    for k in ("feat_s", "feat_t", "logits_s", "logits_t"):
        b[k].requires_grad_()
    total = sum(loss.sum() for loss in _all_losses(b))
    total.backward()
    assert b["feat_s"].grad is not None and b["logits_t"].grad is not None
    with pytest.raises(RuntimeError, match="meta"):  # the probe does catch a loop implementation
        ref.sample_level_alignment(*alignment_args(b), THRESHOLD)


def test_float32_in_float32_out_and_close_to_float64() -> None:
    # Wide features sharing a large offset (non-negative, like pooled ReLU outputs): there
    # ‖a‖² + ‖b‖² − 2a·b cancels most in float32 unless the features are centred first.
    b64 = make_batch(15, 32, dim=512)
    with torch.no_grad():
        b64["feat_s"].abs_().add_(20.0)
        b64["feat_t"].abs_().add_(20.0)
    b32 = {k: (v.detach().float() if v.is_floating_point() else v) for k, v in b64.items()}
    for low, high in zip(_all_losses(b32), _all_losses(b64)):
        assert low.dtype == torch.float32
        torch.testing.assert_close(low.double(), high.detach(), atol=1e-5, rtol=1e-4)


# --- the released code's two hardness weights (docs/METHOD.md §3.3) -------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_june2024_weights_skip_the_membership_test_and_carry_gradient(seed: int) -> None:
    logits, labels, mask, other = hardness_case(seed)
    ours = losses.hardness_weights(logits, labels, mask, other, release="june2024")
    theirs = ref.hardness_weights_june2024(logits, labels.tolist(), mask.tolist())
    torch.testing.assert_close(ours, theirs, **TOL)
    # Confident samples of a class the other side lacks keep their weight in June...
    assert (ours[(labels >= 4) & mask] > 0).all()
    july = losses.hardness_weights(logits, labels, mask, other)
    assert (july[labels >= 4] == 0).all()
    # ...and the gradient flows through the weights and their normalisation into the logits.
    probe = torch.arange(30, dtype=F64)
    (g_ours,) = torch.autograd.grad(ours @ probe, logits)
    (g_ref,) = torch.autograd.grad(theirs @ probe, logits)
    torch.testing.assert_close(g_ours, g_ref, **TOL)
    assert g_ours.abs().sum() > 0


def test_sample_level_release_decides_whether_logits_get_gradient() -> None:
    b = make_batch(8, 16)
    grads = {}
    for release in ("july2024", "june2024"):
        loss = losses.sample_level_alignment(*alignment_args(b), THRESHOLD, release=release)
        grads[release] = torch.autograd.grad(loss, [b["logits_s"], b["logits_t"]], allow_unused=True)
    assert grads["july2024"] == (None, None)
    assert all(g is not None and g.abs().sum() > 0 for g in grads["june2024"])
    # One distance matrix for both terms changes nothing under either release.
    for release in ("july2024", "june2024"):
        together, _ = losses.inter_domain_alignment(*alignment_args(b), THRESHOLD, release=release)
        alone = losses.sample_level_alignment(*alignment_args(b), THRESHOLD, release=release)
        torch.testing.assert_close(together, alone, **TOL)


def test_unknown_hardness_release_is_refused() -> None:
    with pytest.raises(ValueError, match="hardness release"):
        losses.hardness_weights(torch.zeros(2, C), torch.zeros(2, dtype=torch.long), torch.ones(2),
                                torch.zeros(2, dtype=torch.long), release="may2024")
