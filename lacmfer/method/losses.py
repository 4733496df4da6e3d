"""The LA-CMFER adaptation losses (docs/METHOD.md §3.2–§3.7), vectorised.

Every function works on whole batches with tensor algebra: no Python loop over samples,
classes or class pairs, no host synchronisation (`.item()`, boolean indexing, `nonzero`),
and no N×N×D broadcast — squared distances come from ‖a‖² + ‖b‖² − 2a·b. Masks are float
multipliers, so a step can be queued on an accelerator without waiting for it. Functions
compute in the dtype and on the device of their inputs, and give first-order gradients
(no double backward). Under mixed precision, call them outside autocast on float32
features and logits: ‖a‖² + ‖b‖² − 2a·b in bf16 loses most of a distance's digits.

Notation: `z` logits (N×C), `p = softmax(z)`, `conf = max_c p`, `ŷ = argmax_c p`;
`τ` the confidence threshold; `K` kernel_num, `μ` kernel_mul.

The multi-kernel Gaussian kernel on a set X of points with squared distances D:
    β = mean_{i≠j} D_ij / μ^⌊K/2⌋                          (no gradient)
    k(x_i, x_j) = Σ_{k=0}^{K-1} exp(−D_ij / (β·μ^k))
β is floored at the dtype's machine epsilon (mean distance before the division), so that
a set of coincident points (β = 0) gives a kernel of ones instead of NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from lacmfer.names import HARDNESS_RELEASES

__all__ = [
    "multi_kernel_mmd",
    "hardness_weights",
    "sample_level_weights",
    "sample_level_alignment",
    "cluster_level_alignment",
    "inter_domain_alignment",
    "cross_view_mcc",
    "multiview_agreement",
    "multiview_pseudo_label_loss",
]


class _SquaredDistances(torch.autograd.Function):
    """D_ij = ‖x_i‖² + ‖x_j‖² − 2 x_i·x_j, clamped at 0, with a one-matmul backward.

    Autograd through `x @ x.T` would multiply the incoming gradient by x twice (once per
    operand); with S = G + Gᵀ (G the gradient w.r.t. D, zero where D was clamped),
    ∂L/∂x_i = 2 (Σ_j S_ij) x_i − 2 (S x)_i needs a single N×N by N×D product.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor) -> Tensor:
        gram = x @ x.T
        sq = gram.diagonal()  # norms from the Gram diagonal make D_ii = 0 exactly
        dists = sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * gram
        positive = dists > 0
        ctx.save_for_backward(x, positive)
        return dists * positive

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> Tensor:
        x, positive = ctx.saved_tensors
        sym = grad * positive
        sym = sym + sym.T
        return 2.0 * (sym.sum(1, keepdim=True) * x - sym @ x)


def _sq_dists(x: Tensor) -> Tensor:
    """Squared Euclidean distances between the rows of `x` (N×D → N×N), ≥ 0, zero diagonal."""
    # Distances are translation invariant; centring first shrinks the norms and with them
    # the cancellation error of ‖a‖² + ‖b‖² − 2a·b (the mean is a constant shift, so
    # detaching it leaves the gradient unchanged).
    return _SquaredDistances.apply(x - x.detach().mean(0, keepdim=True))


def _base_bandwidth(dist_sum: Tensor, pair_count: Tensor | float, kernel_num: int, kernel_mul: float) -> Tensor:
    """β = (Σ_{i≠j} D_ij / #off-diagonal pairs) / μ^⌊K/2⌋, the mean floored at machine epsilon."""
    if isinstance(pair_count, Tensor):
        pair_count = pair_count.clamp_min(1.0)
    else:
        pair_count = max(pair_count, 1.0)
    mean_dist = (dist_sum / pair_count).clamp_min(torch.finfo(dist_sum.dtype).eps)
    return mean_dist / kernel_mul ** (kernel_num // 2)


class _MultiKernel(torch.autograd.Function):
    """Σ_{k<K} exp(−s / μ^k) for s = D / β, with its derivative −Σ_k exp(−s / μ^k) / μ^k
    accumulated in the same pass, so backward is one multiplication instead of K exp nodes.

    For μ = 2 the K exponentials are one exponential and repeated squaring:
    exp(−s / 2^k) = exp(−s / 2^(k+1))².
    """

    @staticmethod
    def forward(ctx: FunctionCtx, scaled: Tensor, kernel_num: int, kernel_mul: float) -> Tensor:
        # K is a small fixed hyperparameter, not data, so a loop over it is fine.
        widest = kernel_mul ** (kernel_num - 1)
        term = torch.exp(scaled / -widest)
        total = term.clone()
        slope = term / widest
        for k in range(kernel_num - 2, -1, -1):
            if kernel_mul == 2.0:
                term = term * term
            else:
                term = torch.exp(scaled / -(kernel_mul**k))
            total.add_(term)
            slope.add_(term, alpha=kernel_mul**-k)
        ctx.save_for_backward(slope)
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, None, None]:
        (slope,) = ctx.saved_tensors
        return -grad * slope, None, None


def _multi_kernel(scaled: Tensor, kernel_num: int, kernel_mul: float) -> Tensor:
    """Σ_{k<K} exp(−scaled / μ^k), with scaled = D / β already divided by the base bandwidth."""
    return _MultiKernel.apply(scaled, kernel_num, kernel_mul)


def _full_kernel(dists: Tensor, kernel_num: int, kernel_mul: float) -> Tensor:
    """The multi-kernel over all rows of D, bandwidth from all off-diagonal pairs."""
    n = dists.shape[0]
    with torch.no_grad():
        beta = _base_bandwidth(dists.sum(), n * n - n, kernel_num, kernel_mul)
    return _multi_kernel(dists / beta, kernel_num, kernel_mul)


def _one_hot(labels: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    # A comparison instead of F.one_hot, which checks the label range on the host.
    classes = torch.arange(num_classes, device=labels.device)
    return (labels.unsqueeze(1) == classes).to(dtype)


@torch.no_grad()
def _confident_predictions(logits: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """(mask, ŷ): mask = [max softmax ≥ τ] as a float in the logits' dtype, ŷ = argmax."""
    conf, pred = logits.softmax(dim=1).max(dim=1)
    return (conf >= threshold).to(logits.dtype), pred


def multi_kernel_mmd(a: Tensor, b: Tensor, kernel_num: int = 5, kernel_mul: float = 2.0) -> Tensor:
    """Biased (V-statistic) multi-kernel MMD² between the rows of `a` (n×D) and `b` (m×D).

        MMD²(A, B) = mean_{i,i'} k(a_i, a_i') + mean_{j,j'} k(b_j, b_j') − 2 mean_{i,j} k(a_i, b_j)

    with the multi-kernel of the module docstring, its bandwidth β computed from A ∪ B
    (mean over the (n+m)² − (n+m) off-diagonal pairs, no gradient). Both sets must be
    non-empty. This is also the plain, unweighted MMD of the "baseline" ablation.
    """
    n = a.shape[0]
    kernel = _full_kernel(_sq_dists(torch.cat([a, b])), kernel_num, kernel_mul)
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2.0 * kernel[:n, n:].mean()


def hardness_weights(
    logits: Tensor, labels: Tensor, mask: Tensor, other_labels: Tensor, *, release: str = "july2024"
) -> Tensor:
    """Hardness weights of one domain's samples (docs/METHOD.md §3.3), normalised.

        h_i = mean_c (z_ic − 1[c = y_i] · max_c' z_ic')² · mask_i · 1[y_i ∈ other_labels]
        w_i = h_i / Σ_j h_j          (all zero when Σ_j h_j = 0)

    `logits` z (N×C), `labels` y (N,) — true labels for the source, pseudo-labels ŷ for the
    target — `mask` (N,) the confidence mask (bool or 0/1 float), `other_labels` the labels
    of the *other* domain in the batch. Choice where the method is open: the membership test uses
    every label of the other domain's batch, confident or not (all target pseudo-labels for
    the source side, all source labels for the target side).

    `release` picks between the authors' two released loss files (docs/METHOD.md §3.3):
    `july2024` (the default) detaches the weights and applies the membership test;
    `june2024` drops the membership factor and lets the gradient flow through h and the
    normalisation into the logits.
    """
    if release not in HARDNESS_RELEASES:
        raise ValueError(f"unknown hardness release {release!r}; expected one of {HARDNESS_RELEASES}")
    if release == "july2024":
        logits = logits.detach()
    num_classes = logits.shape[1]
    onehot = _one_hot(labels, num_classes, logits.dtype)
    top = logits.max(dim=1, keepdim=True).values
    hardness = (logits - onehot * top).square().mean(dim=1) * mask.to(logits.dtype)
    if release == "july2024":
        present = _one_hot(other_labels, num_classes, logits.dtype).amax(dim=0)  # (C,) 1 if seen
        hardness = hardness * (onehot @ present)
    return hardness / hardness.sum().clamp_min(torch.finfo(logits.dtype).tiny)


def sample_level_weights(
    logits_s: Tensor, logits_t: Tensor, labels_s: Tensor, threshold: float, *, release: str = "july2024"
) -> tuple[Tensor, Tensor]:
    """(w_s, w_t): the source and target hardness weights of one view's sample-level term.

    m^s = [conf^s ≥ τ], m^t = [conf^t ≥ τ], ŷ^t = argmax z^t;
    w_s = hardness_weights(z^s, y, m^s, ŷ^t), w_t = hardness_weights(z^t, ŷ^t, m^t, y).
    """
    mask_s, _ = _confident_predictions(logits_s, threshold)
    mask_t, pseudo_t = _confident_predictions(logits_t, threshold)
    w_s = hardness_weights(logits_s, labels_s, mask_s, pseudo_t, release=release)
    w_t = hardness_weights(logits_t, pseudo_t, mask_t, labels_s, release=release)
    return w_s, w_t


def _sample_level(
    dists: Tensor, logits_s: Tensor, logits_t: Tensor, labels_s: Tensor, threshold: float, kernel_num: int,
    kernel_mul: float, release: str,
) -> Tensor:
    """L_sid from the distance matrix D of [f^s; f^t] (see `sample_level_alignment`)."""
    w_s, w_t = sample_level_weights(logits_s, logits_t, labels_s, threshold, release=release)
    kernel = _full_kernel(dists, kernel_num, kernel_mul)
    # The three terms are one quadratic form in the signed weights [w_s; −w_t].
    signed = torch.cat([w_s, -w_t]).to(kernel.dtype)
    return signed @ kernel @ signed


def _cluster_level(
    dists: Tensor, logits_s: Tensor, logits_t: Tensor, labels_s: Tensor, threshold: float, kernel_num: int,
    kernel_mul: float,
) -> Tensor:
    """L_cid from the distance matrix D of [f^s; f^t] (see `cluster_level_alignment`)."""
    num_classes = logits_s.shape[1]
    n_s = logits_s.shape[0]
    dtype = dists.dtype
    mask_s, _ = _confident_predictions(logits_s, threshold)
    mask_t, pseudo_t = _confident_predictions(logits_t, threshold)
    onehot_s = _one_hot(labels_s, num_classes, dtype)
    onehot_t = _one_hot(pseudo_t, num_classes, dtype)
    member_s = onehot_s * mask_s.to(dtype).unsqueeze(1)  # (N_s, C): i ∈ S_c
    member_t = onehot_t * mask_t.to(dtype).unsqueeze(1)  # (N_t, C): j ∈ T_c
    same_s = member_s @ member_s.T  # (N_s, N_s): i, j both confident, same class
    same_t = member_t @ member_t.T
    count_s = member_s.sum(0)
    count_t = member_t.sum(0)
    valid = (count_s.unsqueeze(1) > 0) & (count_t.unsqueeze(0) > 0)  # pair (c, c') computable
    d_ss, d_tt, d_st = dists[:n_s, :n_s], dists[n_s:, n_s:], dists[:n_s, n_s:]

    with torch.no_grad():
        within_s = onehot_s.T @ (same_s * d_ss).sum(1)  # Σ_{i,j ∈ S_c} D_ij, (C,)
        within_t = onehot_t.T @ (same_t * d_tt).sum(1)  # Σ_{i,j ∈ T_c} D_ij, (C,)
        across = member_s.T @ d_st @ member_t  # Σ_{i ∈ S_c, j ∈ T_c'} D_ij, (C, C)
        size = count_s.unsqueeze(1) + count_t.unsqueeze(0)
        dist_sum = within_s.unsqueeze(1) + within_t.unsqueeze(0) + 2.0 * across
        beta = _base_bandwidth(dist_sum, size * size - size, kernel_num, kernel_mul)
        # Pairs with an empty side are masked out below; give them a harmless bandwidth.
        beta = torch.where(valid, beta, torch.ones_like(beta))
        # Unmasked one-hots so that every row gets a finite bandwidth.
        beta_s_rows = onehot_s @ beta  # (N_s, C): row i → β[y_i, c'] for every c'
        beta_t_rows = onehot_t @ beta.T  # (N_t, C): row j → β[c, ŷ_j] for every c
        beta_st = beta_s_rows @ onehot_t.T  # (N_s, N_t): β[y_i, ŷ_j]

    # Source block: pair (i, j) of S_c at the bandwidth of every pair (c, c'), summed over j
    # in the same cluster, then over i per class: sum_ss[c, c'] = Σ_{i,j ∈ S_c} k_{cc'}(i, j).
    k_ss = _multi_kernel(d_ss.unsqueeze(2) / beta_s_rows.unsqueeze(1), kernel_num, kernel_mul)
    sum_ss = onehot_s.T @ torch.einsum("ij,ijd->id", same_s, k_ss)
    # Target block: sum_tt[c, c'] = Σ_{i,j ∈ T_c'} k_{cc'}(i, j).
    k_tt = _multi_kernel(d_tt.unsqueeze(2) / beta_t_rows.unsqueeze(1), kernel_num, kernel_mul)
    sum_tt = (onehot_t.T @ torch.einsum("ij,ijc->ic", same_t, k_tt)).T
    # Cross block: sum_st[c, c'] = Σ_{i ∈ S_c, j ∈ T_c'} k_{cc'}(i, j).
    k_st = _multi_kernel(d_st / beta_st, kernel_num, kernel_mul)
    sum_st = member_s.T @ k_st @ member_t

    cs = count_s.clamp_min(1.0).unsqueeze(1)
    ct = count_t.clamp_min(1.0).unsqueeze(0)
    mmd = sum_ss / cs.square() + sum_tt / ct.square() - 2.0 * sum_st / (cs * ct)

    valid = valid.to(dtype)
    same = valid.diagonal()
    diff = valid * (1.0 - torch.eye(num_classes, dtype=dtype, device=valid.device))
    n_same = same.sum()
    n_diff = diff.sum()
    pull = (mmd.diagonal() * same).sum() / n_same.clamp_min(1.0)
    push = (mmd * diff).sum() / n_diff.clamp_min(1.0)
    both = ((n_same > 0) & (n_diff > 0)).to(dtype)
    return (pull - push) * both


def sample_level_alignment(
    feat_s: Tensor,
    feat_t: Tensor,
    logits_s: Tensor,
    logits_t: Tensor,
    labels_s: Tensor,
    threshold: float,
    *,
    kernel_num: int = 5,
    kernel_mul: float = 2.0,
    release: str = "july2024",
) -> Tensor:
    """L_sid, the hardness-weighted sample-level MMD of one view (docs/METHOD.md §3.3).

        m^s = [conf^s ≥ τ],  m^t = [conf^t ≥ τ],  ŷ^t = argmax z^t
        w_s = hardness_weights(z^s, y, m^s, ŷ^t),  w_t = hardness_weights(z^t, ŷ^t, m^t, y)
        L_sid = w_sᵀ K_ss w_s + w_tᵀ K_tt w_t − 2 w_sᵀ K_st w_t

    K is the multi-kernel over the concatenated features [f^s; f^t], its bandwidth from
    all 2B samples (confident or not). The bandwidth is a constant; so are the weights
    with `release="july2024"`, while `"june2024"` lets the gradient reach the logits
    through them too (`hardness_weights`).
    """
    dists = _sq_dists(torch.cat([feat_s, feat_t]))
    return _sample_level(dists, logits_s, logits_t, labels_s, threshold, kernel_num, kernel_mul, release)


def cluster_level_alignment(
    feat_s: Tensor,
    feat_t: Tensor,
    logits_s: Tensor,
    logits_t: Tensor,
    labels_s: Tensor,
    threshold: float,
    *,
    kernel_num: int = 5,
    kernel_mul: float = 2.0,
) -> Tensor:
    """L_cid, the class-attribute guided cluster-level alignment of one view (docs/METHOD.md §3.4).

    With S_c the confident source samples of label c, T_c the confident target samples of
    pseudo-label c (m and ŷ as in `sample_level_alignment`), and MMD(A, B) the biased
    multi-kernel MMD² whose bandwidth comes from A ∪ B alone (`multi_kernel_mmd`):

        L_cid = mean_{c : S_c, T_c ≠ ∅} MMD(S_c, T_c)
              − mean_{c ≠ c' : S_c, T_c' ≠ ∅} MMD(S_c, T_c')

    and L_cid = 0 when either of the two sets of pairs is empty (read as the whole loss,
    not only that mean). Gradient flows into the features only.

    All C² pairs come from one distance matrix D over [f^s; f^t] and one-hot membership
    matrices (zero rows for unconfident samples). For the pair (c, c'), with n = |S_c| +
    |T_c'|, the bandwidth is (Σ_{S_c×S_c} D + Σ_{T_c'×T_c'} D + 2 Σ_{S_c×T_c'} D) / (n² − n)
    / μ^⌊K/2⌋, and each kernel block is evaluated at the bandwidth of the pair it feeds:
    source pair (i, j) at β[y_i, c'] for every c', target pair at β[c, ŷ_i] for every c,
    cross pair at β[y_i, ŷ_j]. Memory is O(B²·C), never O(B²·D).
    """
    dists = _sq_dists(torch.cat([feat_s, feat_t]))
    return _cluster_level(dists, logits_s, logits_t, labels_s, threshold, kernel_num, kernel_mul)


def inter_domain_alignment(
    feat_s: Tensor,
    feat_t: Tensor,
    logits_s: Tensor,
    logits_t: Tensor,
    labels_s: Tensor,
    threshold: float,
    *,
    kernel_num: int = 5,
    kernel_mul: float = 2.0,
    release: str = "july2024",
) -> tuple[Tensor, Tensor]:
    """(L_sid, L_cid) of one view, sharing one distance matrix (the costly N×N×D product).

    Equal to `(sample_level_alignment(...), cluster_level_alignment(...))` with the same
    arguments; the trainer combines them as L_sid + λ_cid(t)·L_cid (docs/METHOD.md §3.5).
    """
    dists = _sq_dists(torch.cat([feat_s, feat_t]))
    sample = _sample_level(dists, logits_s, logits_t, labels_s, threshold, kernel_num, kernel_mul, release)
    cluster = _cluster_level(dists, logits_s, logits_t, labels_s, threshold, kernel_num, kernel_mul)
    return sample, cluster


def _safe_divisor(x: Tensor) -> Tensor:
    """x pushed away from zero by at least eps, keeping its sign (0 counts as positive)."""
    eps = torch.finfo(x.dtype).eps
    return torch.where(x >= 0, x.clamp_min(eps), x.clamp_max(-eps))


def cross_view_mcc(probs_g: Tensor, probs_l: Tensor) -> Tensor:
    """L_mcc, the multi-view prediction-similarity consistency (docs/METHOD.md §3.6).

        M = P_gᵀ P_l                                   (C×C, P the N×C target predictions)
        L_mcc = ½ · offdiag(rownorm(M)) / C + ½ · offdiag(colnorm(M)) / C

    rownorm divides each row by its sum, colnorm each column, offdiag sums the entries off
    the diagonal. Divisors are kept at least machine epsilon away from zero (sign kept),
    so the result is never NaN: a class no sample predicts contributes (almost) nothing.
    Intended input: softmax probabilities. The reproduction switch `mcc_input: logits`
    feeds raw logits through this same function; sums may then be negative, which the
    sign-keeping guard tolerates, but the value is no longer a normalised confusion.
    """
    num_classes = probs_g.shape[1]
    m = probs_g.T @ probs_l
    rows = m / _safe_divisor(m.sum(dim=1, keepdim=True))
    cols = m / _safe_divisor(m.sum(dim=0, keepdim=True))
    off_rows = rows.sum() - rows.diagonal().sum()
    off_cols = cols.sum() - cols.diagonal().sum()
    return 0.5 * (off_rows + off_cols) / num_classes


def multiview_agreement(probs_g: Tensor, probs_l: Tensor, ps_threshold: float) -> tuple[Tensor, Tensor]:
    """The multi-view pseudo-label rule (docs/METHOD.md §3.7) on probabilities: (keep mask, ŷ_g).

        keep_j = [ŷ_g,j = ŷ_l,j] · [conf_g,j > τ_ps or conf_l,j > τ_ps]
    """
    conf_g, pred_g = probs_g.max(dim=1)
    conf_l, pred_l = probs_l.max(dim=1)
    return (pred_g == pred_l) & ((conf_g > ps_threshold) | (conf_l > ps_threshold)), pred_g


def multiview_pseudo_label_loss(logits_g: Tensor, logits_l: Tensor, ps_threshold: float) -> tuple[Tensor, Tensor]:
    """L_mvv, the multi-view pseudo-label loss on target logits (docs/METHOD.md §3.7), and the kept mask.

        keep_j = [ŷ_g,j = ŷ_l,j] · [conf_g,j > τ_ps or conf_l,j > τ_ps]
        L_mvv = Σ_j keep_j CE(z_g,j, ŷ_g,j) / max(Σ keep, 1) + Σ_j keep_j CE(z_l,j, ŷ_g,j) / max(Σ keep, 1)

    Zero (not NaN) when nothing is kept. The pseudo-labels carry no gradient; the loss
    flows into both views' logits. Returns (L_mvv, keep) with `keep` a bool tensor (N,),
    for logging pseudo-label coverage and accuracy.
    """
    with torch.no_grad():
        keep, pred_g = multiview_agreement(logits_g.softmax(dim=1), logits_l.softmax(dim=1), ps_threshold)
    weight = keep.to(logits_g.dtype)
    count = weight.sum().clamp_min(1.0)
    ce_g = F.cross_entropy(logits_g, pred_g, reduction="none")
    ce_l = F.cross_entropy(logits_l, pred_g, reduction="none")
    return ((ce_g + ce_l) * weight).sum() / count, keep
