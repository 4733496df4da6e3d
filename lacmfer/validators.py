"""Model-selection validators (docs/METHOD.md §6).

Convention: every validator returns a Python float where HIGHER IS BETTER, so a search
always maximises. Quantities that are naturally minimised are negated (entropy is
returned as `neg_entropy`).

Inputs are tensors over a whole evaluation set, on any device and dtype: logits or
probabilities [N, C], features [N, D], integer labels [N]. Computation is done in
float64 (SND's N×N similarities in float32) so values do not depend on the autocast
dtype of the forward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from lacmfer.losses import multiview_agreement
from lacmfer.names import TARGET_VALIDATOR_NAMES, add_name

#: Above this many samples SND runs on a fixed subsample (its cost is N×N).
SND_MAX_SAMPLES = 4096


def _as_matrix(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty [N, C] tensor, got shape {tuple(x.shape)}")
    return x.detach().to(torch.float64)


def _row_entropy(probs: torch.Tensor) -> torch.Tensor:
    """H(p_i) = −Σ_c p_ic log p_ic per row, with 0·log 0 = 0."""
    return -torch.special.xlogy(probs, probs).sum(dim=1)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy: mean_i [argmax_c z_ic = y_i], in [0, 1].

    Works on logits or probabilities (same argmax). The trainer calls it on the global,
    local and mean logits of the target test set (only where labels exist) and on the
    source validation hold-out.
    """
    scores = _as_matrix(logits, "logits")
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"labels must have shape ({scores.shape[0]},), got {tuple(labels.shape)}")
    return (scores.argmax(dim=1) == labels.to(scores.device)).double().mean().item()


def neg_entropy(probs: torch.Tensor) -> float:
    """Negated mean prediction entropy: −mean_i H(p_i), in [−log C, 0].

    Entropy minimisation: Grandvalet & Bengio, "Semi-supervised learning by entropy
    minimization", NeurIPS 2005; used as a model-selection validator for domain
    adaptation by Morerio et al., "Minimal-entropy correlation alignment", ICLR 2018.
    Confident predictions score high; note that a collapsed model scores high too.
    """
    return -_row_entropy(_as_matrix(probs, "probs")).mean().item()


def information_maximization(probs: torch.Tensor) -> float:
    """Mutual information between input and prediction: H(mean_i p_i) − mean_i H(p_i).

    In [0, log C]: high when each prediction is confident (low conditional entropy)
    and the predictions are spread over the classes (high marginal entropy), so it
    penalises the collapse that plain entropy rewards. Gomes, Krause & Perona,
    "Discriminative clustering by regularized information maximization", NeurIPS 2010;
    Shi & Sha, ICML 2012; SHOT, Liang et al., ICML 2020.
    """
    p = _as_matrix(probs, "probs")
    marginal = p.mean(dim=0, keepdim=True)
    return (_row_entropy(marginal).squeeze(0) - _row_entropy(p).mean()).item()


def bnm(probs: torch.Tensor) -> float:
    """Batch nuclear norm of the prediction matrix: ‖P‖_* / N.

    Cui et al., "Towards Discriminability and Diversity: Batch Nuclear-norm
    Maximization under Label Insufficient Situations", CVPR 2020 (they maximise the
    same quantity, normalised by the batch size, as a loss). Higher means confident
    and diverse predictions. With this normalisation the value depends on N (balanced
    one-hot predictions give sqrt(C/N)), so compare models on the same evaluation set
    only, which model selection does. NaN for non-finite input (a diverged model), where
    the SVD would raise.
    """
    p = _as_matrix(probs, "probs")
    if not torch.isfinite(p).all():
        return float("nan")
    return (torch.linalg.matrix_norm(p, ord="nuc") / p.shape[0]).item()


def snd(x: torch.Tensor, temperature: float = 0.05, max_samples: int = SND_MAX_SAMPLES) -> float:
    """Soft neighbourhood density, in [0, log(N−1)].

    Saito et al., "Tune it the Right Way: Unsupervised Validation of Domain Adaptation
    via Soft Neighborhood Density", ICCV 2021. Rows of `x` are L2-normalised; with
    S_ij = x̂_i·x̂_j for j ≠ i (the diagonal is excluded), the soft neighbour
    distribution of sample i is softmax_j(S_ij / τ), and SND is the mean over i of its
    entropy. Saito et al. compute it on the target softmax probabilities, which is what
    the trainer passes; features [N, D] are accepted as well. Higher is better: samples
    sitting in dense clusters have many near neighbours, hence spread-out neighbour
    distributions. (Like entropy, a fully collapsed output also scores high.)

    If N > `max_samples`, SND is computed on a fixed pseudo-random subsample of
    `max_samples` rows (seed 0, independent of the global RNG), so the value is
    deterministic and the N×N matrices stay small (float32: 64 MiB each at 4096).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    feats = _as_matrix(x, "x")
    n = feats.shape[0]
    if n < 2:
        raise ValueError("snd needs at least two samples")
    if n > max_samples:
        generator = torch.Generator().manual_seed(0)
        keep = torch.randperm(n, generator=generator)[:max_samples].sort().values
        feats = feats[keep.to(feats.device)]
        n = max_samples
    # float32 and in-place edits: the N×N matrices dominate memory on a shared GPU.
    feats = F.normalize(feats, dim=1).float()
    logits = feats @ feats.T
    logits.div_(temperature).fill_diagonal_(float("-inf"))
    neighbours = logits.softmax(dim=1)
    del logits
    return _row_entropy(neighbours).double().mean().item()


def pseudo_label_accuracy_and_coverage(
    probs_g: torch.Tensor,
    probs_l: torch.Tensor,
    labels: torch.Tensor,
    ps_threshold: float,
) -> tuple[float, float]:
    """Quality of the multi-view pseudo-labels (docs/METHOD.md §3.7) on a labelled target set.

    A sample is kept when both views predict the same class and either view's
    confidence max_c p_ic exceeds `ps_threshold` (strictly); its pseudo-label is that
    class. Returns `(accuracy, coverage)`: accuracy = fraction of kept samples whose
    pseudo-label equals the true label, coverage = kept / N. When nothing is kept both
    are 0.0 (never NaN, so a tracker can always log them).
    """
    pg = _as_matrix(probs_g, "probs_g")
    pl = _as_matrix(probs_l, "probs_l")
    if pg.shape != pl.shape:
        raise ValueError(f"probs_g {tuple(pg.shape)} and probs_l {tuple(pl.shape)} differ in shape")
    if labels.shape != (pg.shape[0],):
        raise ValueError(f"labels must have shape ({pg.shape[0]},), got {tuple(labels.shape)}")
    kept, pred_g = multiview_agreement(pg, pl, ps_threshold)
    n_kept = int(kept.sum().item())
    if n_kept == 0:
        return 0.0, 0.0
    correct = (pred_g[kept] == labels.to(pg.device)[kept]).sum().item()
    return correct / n_kept, n_kept / pg.shape[0]


#: The label-free validators computed from the target stream's probabilities [N, C]
#: (softmax of the inference logits), by metric key; each is also an `eval.objective`.
TARGET_VALIDATORS: dict[str, Callable[[torch.Tensor], float]] = {}


def register_validator(name: str, validator: Callable[[torch.Tensor], float]) -> None:
    """Make `validator(probs) -> float` (higher is better) a reported metric and an objective."""
    add_name(TARGET_VALIDATOR_NAMES, name)
    TARGET_VALIDATORS[name] = validator


register_validator("entropy", neg_entropy)
register_validator("im", information_maximization)
register_validator("bnm", bnm)
register_validator("snd", snd)
