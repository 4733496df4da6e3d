"""Model-selection validators against hand-computed values (docs/METHOD.md §6)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lacmfer import names
from lacmfer.config import config_from_dict
from lacmfer.errors import UserError
from lacmfer.method.validators import (
    MIXVAL_LAMBDA,
    TARGET_VALIDATORS,
    EvaluationOutputs,
    accuracy,
    adjusted_mutual_information,
    bnm,
    class_ami,
    dev,
    dev_risk,
    domain_density_ratio,
    ensemble,
    entropy_source_target,
    evaluation_validators,
    im_source_target,
    information_maximization,
    mixval,
    mixval_pairs,
    neg_entropy,
    pseudo_label_accuracy_and_coverage,
    snd,
)

C = 7


def _uniform(n: int) -> torch.Tensor:
    return torch.full((n, C), 1.0 / C)


def _balanced_one_hot(per_class: int) -> torch.Tensor:
    return F.one_hot(torch.arange(C).repeat(per_class), C).float()


def _collapsed_one_hot(n: int) -> torch.Tensor:
    return F.one_hot(torch.zeros(n, dtype=torch.long), C).float()


# ---------------------------------------------------------------- accuracy


def test_accuracy_counts_argmax_matches() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [5.0, 0.0, 9.0], [1.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 0, 2])
    assert accuracy(logits, labels) == pytest.approx(0.5)
    assert accuracy(logits.softmax(dim=1), labels) == pytest.approx(0.5)


def test_accuracy_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="labels"):
        accuracy(torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))


# ---------------------------------------------------------------- entropy and IM


def test_neg_entropy_bounds() -> None:
    assert neg_entropy(_uniform(5)) == pytest.approx(-math.log(C))
    assert neg_entropy(_balanced_one_hot(2)) == 0.0  # 0·log 0 = 0, no NaN


def test_neg_entropy_hand_computed_and_low_precision_input() -> None:
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    assert neg_entropy(probs) == pytest.approx(-math.log(2) / 2)
    assert neg_entropy(probs.to(torch.bfloat16)) == pytest.approx(-math.log(2) / 2)


def test_information_maximization_extremes() -> None:
    assert information_maximization(_uniform(10)) == pytest.approx(0.0, abs=1e-12)
    assert information_maximization(_balanced_one_hot(3)) == pytest.approx(math.log(C))
    assert information_maximization(_collapsed_one_hot(10)) == pytest.approx(0.0, abs=1e-12)


def test_information_maximization_hand_computed() -> None:
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    marginal_entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    mean_entropy = math.log(2) / 2
    assert information_maximization(probs) == pytest.approx(marginal_entropy - mean_entropy)


# ---------------------------------------------------------------- BNM


def test_bnm_of_identity_is_one() -> None:
    assert bnm(torch.eye(C)) == pytest.approx(1.0)


def test_bnm_hand_computed_cases() -> None:
    # k stacked identities: C singular values sqrt(k), so sqrt(k)·C / (k·C)
    assert bnm(_balanced_one_hot(4)) == pytest.approx(1 / math.sqrt(4))
    # all rows on one class: rank 1, singular value sqrt(N)
    assert bnm(_collapsed_one_hot(14)) == pytest.approx(1 / math.sqrt(14))
    # uniform rows: rank 1, singular value ‖P‖_F = sqrt(N/C)
    assert bnm(_uniform(14)) == pytest.approx(math.sqrt(14 / C) / 14)


def test_bnm_prefers_confident_and_diverse() -> None:
    assert bnm(_balanced_one_hot(2)) > bnm(_collapsed_one_hot(2 * C)) > bnm(_uniform(2 * C))


# ---------------------------------------------------------------- SND


def _orthogonal_groups(groups: int, size: int) -> torch.Tensor:
    """`groups` clusters of `size` identical rows, the clusters mutually orthogonal."""
    return torch.eye(groups).repeat_interleave(size, dim=0)


def test_snd_hand_computed_on_orthogonal_groups() -> None:
    groups, size, tau = 3, 4, 0.5
    n = groups * size
    # Row i: size−1 neighbours at similarity 1, n−size at similarity 0.
    near, far = math.exp(1 / tau), 1.0
    z = (size - 1) * near + (n - size) * far
    expected = -((size - 1) * near / z * math.log(near / z) + (n - size) * far / z * math.log(far / z))
    assert snd(_orthogonal_groups(groups, size), temperature=tau) == pytest.approx(expected, rel=1e-6)


def test_snd_bounds() -> None:
    n = 30
    identical = torch.ones(n, 5)
    assert snd(identical) == pytest.approx(math.log(n - 1), rel=1e-6)  # the upper bound
    # Each row has one twin and all others orthogonal: the neighbour distribution is
    # nearly one-hot, so SND is near the lower bound 0.
    twins = _orthogonal_groups(n // 2, 2)
    assert 0.0 <= snd(twins) < 1e-4


def test_snd_scores_clustered_features_above_scattered_ones() -> None:
    generator = torch.Generator().manual_seed(0)
    dim, per_cluster = 64, 20
    centres = torch.randn(C, dim, generator=generator)
    noise = torch.randn(C * per_cluster, dim, generator=generator)
    tight = centres.repeat_interleave(per_cluster, dim=0) + 0.1 * noise
    loose = centres.repeat_interleave(per_cluster, dim=0) + 0.5 * noise
    scattered = torch.randn(C * per_cluster, dim, generator=generator)
    assert snd(tight) > snd(loose) > snd(scattered)


def test_snd_subsamples_large_sets_deterministically() -> None:
    x = torch.ones(50, 3)
    # On 10 of the 50 identical rows the value is log(9), not log(49).
    assert snd(x, max_samples=10) == pytest.approx(math.log(9), rel=1e-6)
    generator = torch.Generator().manual_seed(1)
    random = torch.randn(300, 8, generator=generator)
    assert snd(random, max_samples=64) == snd(random, max_samples=64)
    assert snd(random, max_samples=64) != snd(random)


def test_snd_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="temperature"):
        snd(torch.ones(4, 2), temperature=0.0)
    with pytest.raises(ValueError, match="two samples"):
        snd(torch.ones(1, 2))


# ---------------------------------------------------------------- pseudo-labels


def test_pseudo_label_accuracy_and_coverage() -> None:
    threshold = 0.9
    probs_g = torch.tensor(
        [
            [0.95, 0.05, 0.00],  # agree, g confident, correct            -> kept, right
            [0.00, 0.92, 0.08],  # agree, g confident, wrong              -> kept, wrong
            [0.60, 0.40, 0.00],  # agree, only l confident, correct       -> kept, right
            [0.95, 0.05, 0.00],  # views disagree                         -> dropped
            [0.80, 0.20, 0.00],  # agree, neither confident               -> dropped
            [0.90, 0.10, 0.00],  # agree, confidence equals the threshold -> dropped
        ]
    )
    probs_l = torch.tensor(
        [
            [0.50, 0.30, 0.20],
            [0.10, 0.60, 0.30],
            [0.97, 0.03, 0.00],
            [0.01, 0.99, 0.00],
            [0.85, 0.15, 0.00],
            [0.90, 0.10, 0.00],
        ]
    )
    labels = torch.tensor([0, 2, 0, 0, 0, 0])
    acc, coverage = pseudo_label_accuracy_and_coverage(probs_g, probs_l, labels, threshold)
    assert acc == pytest.approx(2 / 3)
    assert coverage == pytest.approx(3 / 6)


def test_pseudo_label_none_kept_is_zero_not_nan() -> None:
    probs = _uniform(5)
    labels = torch.zeros(5, dtype=torch.long)
    assert pseudo_label_accuracy_and_coverage(probs, probs, labels, 0.9) == (0.0, 0.0)


def test_pseudo_label_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        pseudo_label_accuracy_and_coverage(_uniform(4), _uniform(5), torch.zeros(4, dtype=torch.long), 0.9)


# ---------------------------------------------------------------- registry


def test_every_objective_is_accepted_by_the_config_and_selects_its_metric() -> None:
    for objective in names.objectives():
        assert config_from_dict({"eval": {"objective": objective}}).eval.objective == objective
    with pytest.raises(UserError, match="unknown objective 'target_acc'"):
        config_from_dict({"eval": {"objective": "target_acc"}})  # the metric, not an objective
    oracle = [o for o in names.objectives() if names.is_oracle(o)]
    assert oracle == [names.ORACLE_OBJECTIVE] and names.objective_metric(oracle[0]) == names.ORACLE_METRIC
    assert names.ORACLE_OBJECTIVE not in names.non_oracle_objectives()


def test_registered_validators_compute_what_their_names_say() -> None:
    # Balanced one-hot predictions, N = 3·C: entropy 0, IM = log C, BNM = sqrt(C/N).
    probs = F.one_hot(torch.arange(3 * C) % C, C).double()
    assert list(TARGET_VALIDATORS) == names.TARGET_VALIDATOR_NAMES
    got = {name: fn(probs) for name, fn in TARGET_VALIDATORS.items()}
    assert got["entropy"] == pytest.approx(0.0, abs=1e-12)
    assert got["im"] == pytest.approx(math.log(C))
    assert got["bnm"] == pytest.approx(math.sqrt(C / (3 * C)))
    # Each sample has 2 exact duplicates among the others: its neighbour distribution is
    # (nearly) uniform over those 2, so SND = log 2.
    assert got["snd"] == pytest.approx(math.log(2), rel=1e-6)


def test_validators_of_a_diverged_model_are_nan_not_errors():
    probs = torch.full((8, 7), float("nan"))
    assert all(math.isnan(v(probs)) for v in TARGET_VALIDATORS.values())


# ---------------------------------------------------------------- DEV


def test_dev_risk_hand_computed_with_its_control_variate() -> None:
    # L = (1, 2, 3, 4), w = (0.5, 1, 1, 2.5): w·L = (0.5, 2, 3, 10), mean 3.875; mean(w) = 1.25;
    # sample Var(w) = 2.25 / 3 = 0.75, Cov(w·L, w) = 10.875 / 3 = 3.625, so η = −3.625 / 0.75;
    # DEV = 3.875 + η·1.25 − η = 3.875 + 0.25·η = 2.6667.
    losses, weights = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0.5, 1.0, 1.0, 2.5])
    assert dev_risk(losses, weights) == pytest.approx(3.875 - 0.25 * 3.625 / 0.75)
    # Constant weights: no control variate, the weighted mean.
    assert dev_risk(losses, torch.full((4,), 2.0)) == pytest.approx(5.0)


def test_domain_density_ratio_recovers_the_ratio_of_a_binary_feature() -> None:
    # Source: 30 samples at x = 0, 10 at x = 1 (N_s = 40); target: 10 and 10 (N_t = 20).
    # An unregularised logistic regression on a binary feature fits the empirical
    # d(x) = P(target | x), so w(x) = p_t(x) / p_s(x): (10/20)/(30/40) = 2/3 at 0, (10/20)/(10/40) = 2 at 1.
    source = torch.cat([torch.zeros(30, 1), torch.ones(10, 1)])
    target = torch.cat([torch.zeros(10, 1), torch.ones(10, 1)])
    weights = domain_density_ratio(source, target, l2=0.0)
    assert weights[:30] == pytest.approx(torch.full((30,), 2 / 3, dtype=torch.float64), rel=1e-4)
    assert weights[30:] == pytest.approx(torch.full((10,), 2.0, dtype=torch.float64), rel=1e-4)


def test_domain_density_ratio_of_indistinguishable_domains_is_one() -> None:
    # The same features in both sets (twice as many target rows): the classifier says
    # N_t / (N_s + N_t) everywhere, and the weights are (N_s / N_t) · (N_t / N_s) = 1.
    features = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    weights = domain_density_ratio(features, torch.cat([features, features]))
    assert weights == pytest.approx(torch.ones(12, dtype=torch.float64), rel=1e-4)


def test_dev_is_the_negated_risk_of_the_source_cross_entropy() -> None:
    source = torch.cat([torch.zeros(30, 1), torch.ones(10, 1)])
    target = torch.cat([torch.zeros(10, 1), torch.ones(10, 1)])
    logits = torch.randn(40, C, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(40) % C
    losses = -torch.log_softmax(logits.double(), dim=1)[torch.arange(40), labels]
    expected = -dev_risk(losses, domain_density_ratio(source, target))
    assert dev(source, logits, labels, target) == pytest.approx(expected, rel=1e-9)
    assert math.isnan(dev(source * math.nan, logits, labels, target))


# ---------------------------------------------------------------- MixVal


def _mixing_threshold_model(positions: torch.Tensor, threshold: float):
    """predict_mixed of a 1-D "model": class 1 right of `threshold`, class 0 left of it."""

    def predict_mixed(rows_a: torch.Tensor, rows_b: torch.Tensor, lam: float) -> torch.Tensor:
        x = lam * positions[rows_a] + (1 - lam) * positions[rows_b]
        return torch.stack([threshold - x, x - threshold], dim=1)

    return predict_mixed


def test_mixval_pairs_are_within_and_across_clusters() -> None:
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3, 1, 0, 2])  # class 3 is a singleton
    anchors, partners, intra = mixval_pairs(labels, 12, torch.Generator().manual_seed(0))
    assert intra.sum() == 6 and (~intra).sum() == 6
    assert (labels[anchors[intra]] == labels[partners[intra]]).all() and (anchors != partners).all()
    assert (labels[anchors[~intra]] != labels[partners[~intra]]).all()
    assert 6 not in anchors[intra].tolist()  # a singleton cluster has no intra-cluster partner
    again = mixval_pairs(labels, 12, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(again, (anchors, partners, intra), strict=True))


def test_mixval_probes_worked_by_hand() -> None:
    # Four samples at 0 (pseudo-label 0), four at 1 (pseudo-label 1). Intra-cluster mixes
    # stay at 0 or 1: always right. An inter-cluster probe from an anchor at 0 sits at
    # 1 − λ = 0.45, from an anchor at 1 at λ = 0.55. All 8 samples anchor one of each kind.
    assert MIXVAL_LAMBDA == 0.55
    positions = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    labels = (positions > 0.5).long()
    # Boundary at 0.5: every probe on its anchor's side: ICE_intra = ICE_inter = 1.
    assert mixval(labels, _mixing_threshold_model(positions, 0.5), probes=16) == pytest.approx(1.0)
    # Boundary at 0.3 (same pseudo-labels): the probes at 0.45 cross it, those at 0.55 do
    # not: ICE_inter = 4/8, ICE_intra = 1, MixVal = 0.75.
    assert mixval(labels, _mixing_threshold_model(positions, 0.3), probes=16) == pytest.approx(0.75)
    # All pseudo-labels equal: no boundary to probe, ICE_inter = 0, MixVal = (1 + 0) / 2.
    assert mixval(torch.zeros(8, dtype=torch.long), _mixing_threshold_model(positions, 5.0), 16) == 0.5


# ---------------------------------------------------------------- ClassAMI


def test_adjusted_mutual_information_hand_cases() -> None:
    same = torch.tensor([0, 0, 1, 1])
    assert adjusted_mutual_information(same, torch.tensor([5, 5, 3, 3])) == pytest.approx(1.0)
    # Crossed halves: MI = 0; E[MI] = 4 cells × P(n_ij = 2) · (2/4)·log 2 = 4 · (1/6) · ½ log 2 = log 2 / 3,
    # H = log 2 each: AMI = (0 − log2/3) / (log 2 − log2/3) = −0.5.
    assert adjusted_mutual_information(same, torch.tensor([0, 1, 0, 1])) == pytest.approx(-0.5)
    # Sizes (2, 2) against (3, 1): every arrangement is the same up to renaming, so
    # MI = E[MI] = ½ log(4/3) + ¼ log(2/3) + ¼ log 2 and AMI = 0.
    assert adjusted_mutual_information(same, torch.tensor([0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-6)
    # b = (0, 0, 1, 2) refines a: MI = H(a) = log 2, H(b) = 1.5 log 2. E[MI]: the cells with
    # sizes (2, 2) give m = 2 with P = 1/6, (2/4)·log 2 each: 2 · log2/12; those with (2, 1)
    # give m = 1 with P = 1/2, (1/4)·log 2 each: 4 · log2/8; E[MI] = (2/3) log 2.
    # AMI = (1 − 2/3) / ((1 + 1.5)/2 − 2/3) = 4/7 (the arithmetic mean of the entropies).
    assert adjusted_mutual_information(same, torch.tensor([0, 0, 1, 2])) == pytest.approx(4 / 7)
    assert adjusted_mutual_information(torch.zeros(5), torch.zeros(5)) == 1.0


def test_class_ami_is_one_when_the_classes_are_the_feature_clusters() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(C) * 10
    classes = torch.arange(70) % C
    features = centres[classes] + 0.1 * torch.randn(70, C, generator=generator)
    predicted = F.one_hot((classes + 3) % C, C).float()  # renamed classes: the same partition
    assert class_ami(features, predicted) == pytest.approx(1.0)
    merged = F.one_hot(classes // 2, C).float()  # predictions that merge pairs of clusters
    assert class_ami(features, merged) < 0.9
    assert math.isnan(class_ami(features * math.nan, predicted))


# ---------------------------------------------------------------- source + target, ensemble


def test_source_target_variants_add_the_two_domains() -> None:
    confident, uniform = _balanced_one_hot(2), _uniform(14)
    assert im_source_target(confident, uniform) == pytest.approx(math.log(C))
    assert im_source_target(uniform, confident) == pytest.approx(math.log(C))
    assert entropy_source_target(confident, uniform) == pytest.approx(-math.log(C))
    assert entropy_source_target(uniform, uniform) == pytest.approx(-2 * math.log(C))


def test_ensemble_is_the_mean_of_scaled_members() -> None:
    metrics = {"source_val_acc": 0.6, "im": 0.5 * math.log(C), "mixval": 0.8, "class_ami": 0.3, "dev": -9.0}
    assert ensemble(metrics, C) == pytest.approx((0.6 + 0.5 + 0.8 + 0.3) / 4)
    assert ensemble(metrics | {"source_val_acc": math.nan}, C) == pytest.approx((0.5 + 0.8 + 0.3) / 3)
    assert math.isnan(ensemble(dict.fromkeys(metrics, math.nan), C))


def test_objectives_read_from_the_source_hold_out_need_one() -> None:
    for objective in names.SOURCE_READING_OBJECTIVES:
        with pytest.raises(UserError, match=f"eval.objective: {objective} is measured on a hold-out"):
            config_from_dict({"eval": {"objective": objective}, "data": {"source_val_fraction": 0}})
    # The ensemble and the target-only validators do without one.
    assert config_from_dict({"eval": {"objective": "ensemble"}, "data": {"source_val_fraction": 0}})


def test_evaluation_validators_without_a_source_hold_out() -> None:
    # Balanced one-hot predictions on features that are the classes: ClassAMI 1, IM = log C;
    # an identity "model" on mixes (logits = the mixed one-hot rows) classifies every
    # probe as its dominant sample (weight 0.55): MixVal 1.
    probs = _balanced_one_hot(3).double()
    outputs = EvaluationOutputs(probs, probs.clone(), None, None, None,
                                lambda a, b, lam: lam * probs[a] + (1 - lam) * probs[b])
    scores = evaluation_validators(outputs, {"source_val_acc": math.nan, "im": math.log(C)}, mixval_probes=16)
    assert all(math.isnan(scores[k]) for k in ("dev", "im_st", "entropy_st"))
    assert scores["mixval"] == 1.0 and scores["class_ami"] == pytest.approx(1.0)
    assert scores["ensemble"] == pytest.approx(1.0)  # mean of im/log C, mixval and class_ami
    assert set(scores) == set(names.EVALUATION_VALIDATOR_NAMES)
