"""Straightforward loop implementations of the docs/METHOD.md §3 losses.

A direct reading of docs/METHOD.md §3, written for clarity, not speed: per-sample Python loops that
read values back with `.item()`, and one MMD call per class pair on explicitly selected
rows. `tests/test_losses.py` checks `lacmfer.method.losses` against these, and
`bench/bench_losses.py` times them as the baseline. Keep them simple and obviously right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def kernel_matrix(x: Tensor, kernel_num: int = 5, kernel_mul: float = 2.0) -> Tensor:
    """Multi-kernel Gaussian kernel between the rows of x, bandwidth from the off-diagonal mean."""
    n = x.shape[0]
    sq = (x * x).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0)
    beta = (d.sum() - d.diagonal().sum()).detach() / (n * n - n) / kernel_mul ** (kernel_num // 2)
    return sum(torch.exp(-d / (beta * kernel_mul**i)) for i in range(kernel_num))


def mmd(a: Tensor, b: Tensor, kernel_num: int = 5, kernel_mul: float = 2.0) -> Tensor:
    """Biased multi-kernel MMD² of docs/METHOD.md §3.3/§3.4, bandwidth from a ∪ b."""
    k = kernel_matrix(torch.cat([a, b]), kernel_num, kernel_mul)
    na = a.shape[0]
    return k[:na, :na].mean() + k[na:, na:].mean() - 2 * k[:na, na:].mean()


def confident_predictions(logits: Tensor, threshold: float) -> tuple[list[bool], list[int]]:
    """Per sample: (conf ≥ threshold, argmax)."""
    masks, preds = [], []
    for row in logits:
        p = torch.softmax(row.detach(), dim=0)
        masks.append(p.max().item() >= threshold)
        preds.append(int(p.argmax().item()))
    return masks, preds


def hardness_weights(logits: Tensor, labels: list[int], mask: list[bool], other_labels: list[int]) -> Tensor:
    """docs/METHOD.md §3.3 weights, one sample at a time; other labels are all of the other domain's."""
    seen = set(other_labels)
    h = []
    for i in range(logits.shape[0]):
        if mask[i] and labels[i] in seen:
            z = logits[i].detach()
            target = torch.zeros_like(z)
            target[labels[i]] = z.max()
            h.append(((z - target) ** 2).mean().item())
        else:
            h.append(0.0)
    total = sum(h)
    return torch.tensor([v / total if total > 0 else 0.0 for v in h], dtype=logits.dtype)


def sample_level_alignment(
    feat_s: Tensor, feat_t: Tensor, logits_s: Tensor, logits_t: Tensor, labels_s: Tensor, threshold: float
) -> Tensor:
    """L_sid of docs/METHOD.md §3.3."""
    mask_s, _ = confident_predictions(logits_s, threshold)
    mask_t, pred_t = confident_predictions(logits_t, threshold)
    y = [int(v.item()) for v in labels_s]
    w_s = hardness_weights(logits_s, y, mask_s, pred_t)
    w_t = hardness_weights(logits_t, pred_t, mask_t, y)
    k = kernel_matrix(torch.cat([feat_s, feat_t]))
    ns = feat_s.shape[0]
    return w_s @ k[:ns, :ns] @ w_s + w_t @ k[ns:, ns:] @ w_t - 2 * w_s @ k[:ns, ns:] @ w_t


def cluster_level_alignment(
    feat_s: Tensor, feat_t: Tensor, logits_s: Tensor, logits_t: Tensor, labels_s: Tensor, threshold: float
) -> Tensor:
    """L_cid of docs/METHOD.md §3.4: one MMD call per class pair."""
    num_classes = logits_s.shape[1]
    mask_s, _ = confident_predictions(logits_s, threshold)
    mask_t, pred_t = confident_predictions(logits_t, threshold)
    y = [int(v.item()) for v in labels_s]
    src = {c: [i for i in range(len(y)) if mask_s[i] and y[i] == c] for c in range(num_classes)}
    tgt = {c: [j for j in range(len(pred_t)) if mask_t[j] and pred_t[j] == c] for c in range(num_classes)}
    same, diff = [], []
    for c in range(num_classes):
        for c2 in range(num_classes):
            if src[c] and tgt[c2]:
                value = mmd(feat_s[src[c]], feat_t[tgt[c2]])
                (same if c == c2 else diff).append(value)
    if not same or not diff:
        return feat_s.new_zeros(())
    return sum(same) / len(same) - sum(diff) / len(diff)


def cross_view_mcc(probs_g: Tensor, probs_l: Tensor) -> Tensor:
    """L_mcc of docs/METHOD.md §3.6."""
    num_classes = probs_g.shape[1]
    m = probs_g.T @ probs_l
    rows = m / m.sum(1, keepdim=True)
    cols = m / m.sum(0, keepdim=True)
    off = (rows.sum() - rows.trace()) / num_classes + (cols.sum() - cols.trace()) / num_classes
    return off / 2


def multiview_pseudo_label_loss(logits_g: Tensor, logits_l: Tensor, ps_threshold: float) -> tuple[Tensor, Tensor]:
    """L_mvv of docs/METHOD.md §3.7 and the kept mask, deciding sample by sample."""
    kept, labels = [], []
    for j in range(logits_g.shape[0]):
        pg = torch.softmax(logits_g[j].detach(), dim=0)
        pl = torch.softmax(logits_l[j].detach(), dim=0)
        yg, yl = int(pg.argmax().item()), int(pl.argmax().item())
        if yg == yl and (pg.max().item() > ps_threshold or pl.max().item() > ps_threshold):
            kept.append(j)
            labels.append(yg)
    mask = torch.zeros(logits_g.shape[0], dtype=torch.bool)
    mask[kept] = True
    if not kept:
        return logits_g.new_zeros(()), mask
    target = torch.tensor(labels)
    return F.cross_entropy(logits_g[kept], target) + F.cross_entropy(logits_l[kept], target), mask


def hardness_weights_june2024(logits: Tensor, labels: list[int], mask: list[bool]) -> Tensor:
    """The June 2024 release's weights, one sample at a time: no membership test, gradient kept."""
    h = []
    for i in range(logits.shape[0]):
        z = logits[i]
        target = torch.zeros_like(z)
        target[labels[i]] = 1.0
        h.append(((z - target * z.max()) ** 2).mean() * float(mask[i]))
    h = torch.stack(h)
    return h / h.sum() if h.sum() > 0 else torch.zeros_like(h)
