"""Model-selection validators against hand-computed values (docs/METHOD.md §6)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lacmfer import names
from lacmfer.config import config_from_dict
from lacmfer.errors import UserError
from lacmfer.validators import (
    TARGET_VALIDATORS,
    accuracy,
    bnm,
    information_maximization,
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
