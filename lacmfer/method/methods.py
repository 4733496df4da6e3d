"""Adaptation methods: each turns one step's network outputs into named loss terms.

DomainBed's shape: a method is a small class chosen by `loss.adaptation`. The Trainer
draws the batches, runs the network (`uses_target` says whether the target batch is
needed at all), and steps the optimiser; the method returns a `StepLosses`: the total to
minimise, its unweighted terms by name (logged as `loss_<name>`, averaged per evaluation
interval and saved by name in checkpoints) and batch metrics that are not optimised.

The interface (`Method`, `StepLosses`, `NetworkShape`, `register_method`) is in
`lacmfer.method.base`, and importable from here; the baselines that own modules, DANN and
MFSAN, are in `lacmfer.method.baselines`; `build_method` builds any of them.

One name runs from switch to term to function (docs/METHOD.md §3):

| term (`loss_<name>`) | switch `loss.<name>` | weight        | function in lacmfer.method.losses      |
|----------------------|----------------------|---------------|---------------------------------|
| sup                  | (always on)          | 1             | cross-entropy (torch)           |
| sample_level         | sample_level         | hyper_align   | sample_level_alignment          |
| cluster_level        | cluster_level        | hyper_align·λ | cluster_level_alignment         |
| mmd (baseline)       | (adaptation)         | hyper_align   | multi_kernel_mmd                |
| mcc                  | mcc                  | hyper_intra   | cross_view_mcc                  |
| pseudo_label         | pseudo_label         | hyper_tgt     | multiview_pseudo_label_loss     |

λ = hyper_inter · r(t), r the clustering schedule (`lacmfer.method.schedules.clustering_schedule`).
Methods add a new one with `@register_method("name")`; nothing else needs to know it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lacmfer.config import ExperimentConfig
from lacmfer.method import baselines, losses
from lacmfer.method.base import METHODS, Method, NetworkShape, StepLosses, register_method
from lacmfer.method.model import LACMFEROutput

__all__ = ["METHODS", "Method", "NetworkShape", "StepLosses", "register_method", "build_method",
           "SourceOnly", "LACMFER", "MMDBaseline", "baselines"]


def build_method(cfg: ExperimentConfig, shape: NetworkShape) -> Method:
    return METHODS[cfg.loss.adaptation](cfg, shape)


@torch.no_grad()
def hardness_diagnostics(source: LACMFEROutput, labels: Tensor, target: LACMFEROutput, threshold: float,
                         release: str) -> dict[str, Tensor]:
    """How many samples the sample-level term really weighs, per side and view (docs/METHOD.md §3.9).

    For the weights w of one side (`losses.sample_level_weights` under the configured release):
    `hardness_ess_<side>_<view>` = 1 / Σ w_i² (the effective sample count; 0 when every
    weight is 0) and `hardness_empty_<side>_<view>` = [Σ w_i = 0] (no confident sample, or
    none whose class the other batch shows). Averaged over an evaluation interval, the
    second is the fraction of steps on which that side drops out of L_sid.
    """
    out = {}
    for view, z_s, z_t in (("g", source.logits_g, target.logits_g), ("l", source.logits_l, target.logits_l)):
        for side, w in zip(("s", "t"), losses.sample_level_weights(z_s, z_t, labels, threshold,
                                                                       release=release)):
            empty = (w.sum() == 0).to(w.dtype)
            out[f"hardness_ess_{side}_{view}"] = (1.0 - empty) / w.square().sum().clamp_min(torch.finfo(w.dtype).tiny)
            out[f"hardness_empty_{side}_{view}"] = empty
    return out


@register_method("source_only")
class SourceOnly(Method):
    """The baseline without adaptation: L = L_sup, on source images only."""

    uses_target = False

    def losses(self, source: LACMFEROutput, labels: Tensor, target: LACMFEROutput | None, step: int) -> StepLosses:
        sup = self.supervised(source, labels)
        return StepLosses(sup, {"sup": sup})


@register_method("lacmfer")
class LACMFER(Method):
    """L = L_sup + hyper_align·L_inter + hyper_intra·L_mcc + hyper_tgt·L_mvv (§3.8).

    Each term has its switch (`loss.sample_level`, `cluster_level`, `mcc`,
    `pseudo_label`); a switched-off term is neither computed nor logged.
    """

    def inter_domain(self, source: LACMFEROutput, labels: Tensor, target: LACMFEROutput, step: int
                     ) -> tuple[Tensor, dict[str, Tensor]]:
        """L_inter = Σ_v (L_sid^v + λ_cid·L_cid^v) over the global and local views (§3.3–§3.5)."""
        lc = self.cfg.loss
        kernel = {"kernel_num": lc.kernel_num, "kernel_mul": lc.kernel_mul}
        lambda_cid = self.cluster_weight(step)
        use_cid = lc.cluster_level and lambda_cid > 0  # λ = 0: skip the costly term
        sid = cid = source.logits_g.new_zeros(())
        views = ((source.feat_g, target.feat_g, source.logits_g, target.logits_g),
                 (source.feat_l, target.feat_l, source.logits_l, target.logits_l))
        for f_s, f_t, z_s, z_t in views:
            if lc.sample_level and use_cid:  # both terms from one distance matrix
                view_sid, view_cid = losses.inter_domain_alignment(f_s, f_t, z_s, z_t, labels, lc.threshold,
                                                                   release=lc.hardness, **kernel)
                sid, cid = sid + view_sid, cid + view_cid
            elif lc.sample_level:
                sid = sid + losses.sample_level_alignment(f_s, f_t, z_s, z_t, labels, lc.threshold,
                                                          release=lc.hardness, **kernel)
            elif use_cid:
                cid = cid + losses.cluster_level_alignment(f_s, f_t, z_s, z_t, labels, lc.threshold, **kernel)
        terms = {}
        if lc.sample_level:
            terms["sample_level"] = sid
        if lc.cluster_level:
            terms["cluster_level"] = cid
        return sid + lambda_cid * cid, terms

    def losses(self, source: LACMFEROutput, labels: Tensor, target: LACMFEROutput | None, step: int) -> StepLosses:
        assert target is not None, "LA-CMFER needs the target batch"
        lc = self.cfg.loss
        sup = self.supervised(source, labels)
        inter, terms = self.inter_domain(source, labels, target, step)
        terms = {"sup": sup, **terms}
        align = self.align_weight(step) * inter
        total = sup + align
        metrics = hardness_diagnostics(source, labels, target, lc.threshold, lc.hardness)
        if lc.mcc:
            z_g, z_l = target.logits_g, target.logits_l
            views = (z_g, z_l) if lc.mcc_input == "logits" else (z_g.softmax(1), z_l.softmax(1))
            terms["mcc"] = losses.cross_view_mcc(*views)
            total = total + lc.hyper_intra * terms["mcc"]
        if lc.pseudo_label:
            terms["pseudo_label"], kept = losses.multiview_pseudo_label_loss(
                target.logits_g, target.logits_l, lc.ps_threshold)
            metrics["pl_train_coverage"] = kept.float().mean()  # of the training batch
            total = total + lc.hyper_tgt * terms["pseudo_label"]
        return StepLosses(total, terms, metrics, parts={"sup": sup, "align": align})


@register_method("mmd_baseline")
class MMDBaseline(LACMFER):
    """The "baseline" ablation: L_inter is the plain multi-kernel MMD of each view (§3.8)."""

    def inter_domain(self, source: LACMFEROutput, labels: Tensor, target: LACMFEROutput, step: int
                     ) -> tuple[Tensor, dict[str, Tensor]]:
        lc = self.cfg.loss
        mmd = sum(losses.multi_kernel_mmd(s, t, kernel_num=lc.kernel_num, kernel_mul=lc.kernel_mul)
                  for s, t in ((source.feat_g, target.feat_g), (source.feat_l, target.feat_l)))
        return mmd, {"mmd": mmd}
