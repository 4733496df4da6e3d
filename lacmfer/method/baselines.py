"""The baselines of the comparison that own modules: DANN and MFSAN (docs/METHOD.md §8).

Both run on the shared two-view network like every method here: the global and local
views' features (`LACMFEROutput.feat_g`, `feat_l`) take the place of the single feature
vector of their papers, each view is adapted on its own and the two terms are summed, as
LA-CMFER does. Both weigh their adaptation terms by the ramp of their papers,
a(t) = 2/(1 + exp(−10·t/T)) − 1 (`alignment_warmup(..., "mfsan")`), whatever
`loss.align_warmup` says (that key belongs to the LA-CMFER family).

- **DANN** (Ganin et al., JMLR 2016): a domain classifier per view tells the pooled
  sources from the target; the features reach it through gradient reversal, so the
  network is trained to confuse it.
- **MFSAN** (Zhu et al., AAAI 2019, the base of the authors' code): per source and view,
  a specific branch and classifier on the shared features; each source is aligned with
  the target in its own branch by MMD, and the classifiers are made to agree on the target.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

from lacmfer.config import ExperimentConfig
from lacmfer.method import losses
from lacmfer.method.base import Method, NetworkShape, StepLosses, register_method
from lacmfer.method.model import LACMFEROutput
from lacmfer.method.schedules import alignment_warmup

_VIEWS = ("g", "l")


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, coeff: float) -> Tensor:
        ctx.coeff = coeff  # type: ignore[attr-defined]
        return x.view_as(x)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.coeff * grad, None  # type: ignore[attr-defined]


def gradient_reversal(x: Tensor, coeff: float) -> Tensor:
    """R_λ(x): the identity forward; the backward pass multiplies the gradient by −λ."""
    return _GradientReversal.apply(x, coeff)


def domain_adversarial_loss(d_source: Tensor, d_target: Tensor) -> Tensor:
    """DANN's domain loss: binary cross-entropy of the domain classifier's logits (n×1),
    the sources labelled 1 and the target 0, averaged over all n_s + n_t samples:

        L_d = −(Σ_i log σ(d_i^s) + Σ_j log(1 − σ(d_j^t))) / (n_s + n_t)
    """
    logits = torch.cat([d_source, d_target]).squeeze(1)
    labels = torch.cat([torch.ones(len(d_source)), torch.zeros(len(d_target))]).to(logits)
    return F.binary_cross_entropy_with_logits(logits, labels)


def classifier_discrepancy(logits: Tensor) -> Tensor:
    """MFSAN's disagreement of S classifiers on the same samples, logits (S×n×C):

        L_disc = mean over pairs i < j of mean_{n,c} |softmax(z_i) − softmax(z_j)|

    0 for a single classifier.
    """
    count = logits.shape[0]
    if count < 2:
        return logits.new_zeros(())
    probs = logits.softmax(dim=-1)
    pairwise = (probs[:, None] - probs[None]).abs().mean(dim=(2, 3))  # S×S
    return pairwise.triu(diagonal=1).sum() / (count * (count - 1) / 2)


def _paper_ramp(cfg: ExperimentConfig, step: int) -> float:
    return alignment_warmup(step, cfg.schedule.steps, "mfsan")


@register_method("dann")
class DANN(Method):
    """L = L_sup + hyper_domain · Σ_v L_d(D_v(R_λ(f_v^s)), D_v(R_λ(f_v^t))), λ = a(t).

    D_v: Linear(d, d) · ReLU · Dropout(0.5) · Linear(d, d) · ReLU · Dropout(0.5) · Linear(d, 1),
    d the feature width, one per view, trained at `schedule.lr` with the network's heads.
    Departs from the paper: binary over the pooled sources (the "source-combined" DANN of
    multi-source comparisons), two views, label-smoothed L_sup as every method here.
    Logged: `loss_domain` (Σ_v L_d) and `domain_acc`, the classifiers' accuracy (0.5: aligned).
    """

    def __init__(self, cfg: ExperimentConfig, shape: NetworkShape):
        super().__init__(cfg, shape)
        d = shape.feature_dim
        self.discriminators = nn.ModuleDict({v: nn.Sequential(
            nn.Linear(d, d), nn.ReLU(), nn.Dropout(0.5), nn.Linear(d, d), nn.ReLU(), nn.Dropout(0.5), nn.Linear(d, 1),
        ) for v in _VIEWS})

    def losses(self, source: LACMFEROutput, labels: Tensor, target: LACMFEROutput | None, step: int,
               domains: Tensor | None = None) -> StepLosses:
        assert target is not None, "DANN needs the target batch"
        sup = self.supervised(source, labels)
        coeff = _paper_ramp(self.cfg, step)
        domain = sup.new_zeros(())
        correct = []
        for v, f_s, f_t in (("g", source.feat_g, target.feat_g), ("l", source.feat_l, target.feat_l)):
            d_s = self.discriminators[v](gradient_reversal(f_s, coeff))
            d_t = self.discriminators[v](gradient_reversal(f_t, coeff))
            domain = domain + domain_adversarial_loss(d_s, d_t)
            correct += [(d_s > 0).detach().float().flatten(), (d_t <= 0).detach().float().flatten()]
        align = self.cfg.loss.hyper_domain * domain
        return StepLosses(sup + align, {"sup": sup, "domain": domain}, {"domain_acc": torch.cat(correct).mean()},
                          parts={"sup": sup, "align": align})


@register_method("mfsan")
class MFSAN(Method):
    """L = L_sup + a(t) · Σ_v (hyper_mmd · L_mmd^v + hyper_disc · L_disc^v).

    Per view v and source j: a specific branch h_j^v = ReLU(Linear(d, d/4)) on the shared
    features and a classifier c_j^v. L_sup: each source sample classified by its own
    domain's classifier (label-smoothed cross-entropy, both views); L_mmd^v: the mean over
    the sources in the batch of MMD²(h_j^v(source j), h_j^v(target)) (`multi_kernel_mmd`);
    L_disc^v: `classifier_discrepancy` of the S classifiers on the target. Prediction: each
    view's log of the mean of the S classifiers' softmax.
    Departs from the paper: every source in every step (the released code takes one source
    per step in turn), branches of one linear layer on the pooled features (the paper's
    are convolutional, before pooling), two views. Reads the batch's domain counts once
    per step (a host sync), to skip a source the batch does not hold.
    """

    uses_source_domains = True

    def __init__(self, cfg: ExperimentConfig, shape: NetworkShape):
        super().__init__(cfg, shape)
        d, hidden, count = shape.feature_dim, max(1, shape.feature_dim // 4), len(shape.source_domains)
        self.specific = nn.ModuleDict({v: nn.ModuleList(
            nn.Sequential(nn.Linear(d, hidden), nn.ReLU()) for _ in range(count)) for v in _VIEWS})
        self.classifiers = nn.ModuleDict({v: nn.ModuleList(
            nn.Linear(hidden, shape.num_classes) for _ in range(count)) for v in _VIEWS})
        branch_of = torch.full((max(shape.source_domains) + 1,), -1, dtype=torch.long)
        branch_of[list(shape.source_domains)] = torch.arange(count)
        self.register_buffer("branch_of", branch_of, persistent=False)  # domain id → its branch

    def branches(self, view: str, features: Tensor) -> tuple[Tensor, Tensor]:
        """Every source's specific features (S×n×d/4) and logits (S×n×C) of one view."""
        specific = torch.stack([branch(features) for branch in self.specific[view]])
        return specific, torch.stack([c(h) for c, h in zip(self.classifiers[view], specific, strict=True)])

    def predict(self, outputs: LACMFEROutput) -> LACMFEROutput:
        count = len(self.shape.source_domains)
        logits = [torch.logsumexp(self.branches(v, f)[1].log_softmax(dim=-1), dim=0) - math.log(count)
                  for v, f in (("g", outputs.feat_g), ("l", outputs.feat_l))]
        return LACMFEROutput(outputs.feat_g, outputs.feat_l, *logits)

    def losses(self, source: LACMFEROutput, labels: Tensor, target: LACMFEROutput | None, step: int,
               domains: Tensor | None = None) -> StepLosses:
        assert target is not None and domains is not None, "MFSAN needs the target batch and the source domains"
        lc = self.cfg.loss
        own = self.branch_of[domains]
        rows = torch.arange(len(labels), device=labels.device)
        present = [j for j, n in enumerate(own.bincount(minlength=len(self.shape.source_domains)).tolist()) if n]
        sup = mmd = disc = source.feat_g.new_zeros(())
        for v, f_s, f_t in (("g", source.feat_g, target.feat_g), ("l", source.feat_l, target.feat_l)):
            h_s, z_s = self.branches(v, f_s)
            h_t, z_t = self.branches(v, f_t)
            sup = sup + F.cross_entropy(z_s[own, rows], labels, label_smoothing=lc.label_smoothing)
            mmd = mmd + sum(losses.multi_kernel_mmd(h_s[j][own == j], h_t[j], kernel_num=lc.kernel_num,
                                                    kernel_mul=lc.kernel_mul) for j in present) / len(present)
            disc = disc + classifier_discrepancy(z_t)
        align = _paper_ramp(self.cfg, step) * (lc.hyper_mmd * mmd + lc.hyper_disc * disc)
        return StepLosses(sup + align, {"sup": sup, "mmd": mmd, "disc": disc}, parts={"sup": sup, "align": align})
