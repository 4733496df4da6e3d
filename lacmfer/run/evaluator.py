"""Evaluation of one split's model: every validator of docs/METHOD.md §6 from its predictions.

The `Evaluator` owns what evaluation reads and how the validators are wired: the fixed
subsets of the target stream and of the source hold-out (seeded like the hold-out, so
every evaluation, trial and seed of a split looks at the same images), when the whole
target test set is read, and which predictions feed which validator. The `Trainer`
hands it a `Network`, the function from a batch of network inputs to the outputs that
evaluation reads (the method's `predict` over the network, in eval mode).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from lacmfer.config import ExperimentConfig
from lacmfer.data.augment import network_input
from lacmfer.data.loaders import SampleSet, SplitData, eval_batches, fixed_subset
from lacmfer.method.model import LACMFEROutput, mean_view_logits
from lacmfer.method.validators import (
    TARGET_VALIDATORS,
    EvaluationOutputs,
    accuracy,
    evaluation_validators,
    pseudo_label_accuracy_and_coverage,
)

#: A batch of network inputs on the device → features and both views' logits.
Network = Callable[[Tensor], LACMFEROutput]

_TARGET_SUBSET, _SOURCE_VAL_SUBSET = 2, 3  # seed words of the fixed evaluation subsets


class Evaluator:
    """The validators of one split's evaluation sets, on the device `device`."""

    def __init__(self, cfg: ExperimentConfig, data: SplitData, device: torch.device):
        self.cfg = cfg
        self.data = data
        self.device = device
        d, e = cfg.data, cfg.eval
        self.target_subset = fixed_subset(len(data.target_train), e.target_subset, [d.split_seed, _TARGET_SUBSET])
        self.source_val_subset = (None if data.source_val is None else fixed_subset(
            len(data.source_val), e.source_val_subset, [d.split_seed, _SOURCE_VAL_SUBSET]))

    @torch.no_grad()
    def predict(self, network: Network, samples: SampleSet, indices: np.ndarray | None = None,
                partners: np.ndarray | None = None, lam: float = 1.0) -> dict[str, Tensor]:
        """Global/local logits, features [feat_g, feat_l] and labels of `samples` (or of
        `indices` of it), on the CPU; with `partners`, of the mixes lam·x[indices] + (1 − lam)·x[partners]."""
        zg, zl, fs, ys = [], [], [], []
        d = self.cfg.data
        pin = self.device.type == "cuda"
        batches = eval_batches(samples, d.eval_batch_size, indices, d.num_workers, pin)
        others = None if partners is None else eval_batches(samples, d.eval_batch_size, partners, d.num_workers, pin)
        for batch in batches:
            x = network_input(batch.images.to(self.device, non_blocking=True), d.image_size)
            if others is not None:  # normalisation is affine: mixing inputs = mixing images
                x = x.mul_(lam).add_(network_input(next(others).images.to(self.device), d.image_size), alpha=1 - lam)
            out = network(x)
            zg.append(out.logits_g.float())
            zl.append(out.logits_l.float())
            fs.append(torch.cat([out.feat_g, out.feat_l], dim=1).float())
            ys.append(batch.labels)
        return {"g": torch.cat(zg).cpu(), "l": torch.cat(zl).cpu(), "f": torch.cat(fs).cpu(), "y": torch.cat(ys)}

    def predict_mixed(self, network: Network, rows_a: Tensor, rows_b: Tensor, lam: float) -> Tensor:
        """Inference logits of lam·x_a + (1 − lam)·x_b for rows of the fixed target subset (MixVal)."""
        subset = np.arange(len(self.data.target_train)) if self.target_subset is None else self.target_subset
        out = self.predict(network, self.data.target_train, subset[rows_a.numpy()], subset[rows_b.numpy()], lam)
        return mean_view_logits(out["g"], out["l"])

    def evaluate(self, network: Network, read_test: bool) -> dict[str, float]:
        """Every validator and accuracy as a flat dict of floats; higher is better for validators.

        What each number is computed on (docs/METHOD.md §6):
        - `entropy`, `im`, `bnm`, `snd` (label-free validators) and `pl_acc`/`pl_coverage`:
          the fixed subset of `eval.target_subset` images of the unlabeled target stream,
          from one forward pass, on softmax of the mean logits (the inference prediction);
          `pl_acc` reads the stream's labels for reporting only.
        - `dev`, `mixval`, `class_ami`, `im_st`, `entropy_st`, `ensemble`
          (`lacmfer.method.validators.evaluation_validators`): the same pass's features and the
          source hold-out's; `mixval` adds a pass over `eval.mixval_probes` mixed images.
        - `source_val_acc`: the fixed subset of `eval.source_val_subset` images of the
          source hold-out.
        - `target_acc`, `target_acc_g`, `target_acc_l` (oracle: test labels; logged, never
          the default objective): the whole target test set when `read_test`; NaN otherwise.
        - `target_val_acc`: the whole explicit target validation list, where there is one.
        """
        metrics: dict[str, float] = {}
        stream = self.predict(network, self.data.target_train, self.target_subset)
        probs = mean_view_logits(stream["g"], stream["l"]).softmax(dim=1)
        for name, validator in TARGET_VALIDATORS.items():
            kwargs = {"temperature": self.cfg.eval.snd_temperature} if name == "snd" else {}
            metrics[name] = validator(probs, **kwargs)
        metrics["pl_acc"], metrics["pl_coverage"] = pseudo_label_accuracy_and_coverage(
            stream["g"].softmax(1), stream["l"].softmax(1), stream["y"], self.cfg.loss.ps_threshold
        )

        # Lab sets: the stream is the test set, so a whole-stream pass is the test pass too.
        test_is_stream = self.data.split.target_test_is_train and self.target_subset is None
        if test_is_stream or read_test:
            test = stream if test_is_stream else self.predict(network, self.data.target_test)
            metrics["target_acc"] = accuracy(mean_view_logits(test["g"], test["l"]), test["y"])
            metrics["target_acc_g"] = accuracy(test["g"], test["y"])
            metrics["target_acc_l"] = accuracy(test["l"], test["y"])
        else:
            metrics.update(target_acc=math.nan, target_acc_g=math.nan, target_acc_l=math.nan)

        val = None
        if self.data.source_val is not None:
            val = self.predict(network, self.data.source_val, self.source_val_subset)
            metrics["source_val_acc"] = accuracy(mean_view_logits(val["g"], val["l"]), val["y"])
        else:
            metrics["source_val_acc"] = math.nan
        source = (None, None, None) if val is None else (mean_view_logits(val["g"], val["l"]), val["f"], val["y"])
        outputs = EvaluationOutputs(probs, stream["f"], *source,
                                    lambda a, b, lam: self.predict_mixed(network, a, b, lam))
        metrics.update(evaluation_validators(outputs, metrics, self.cfg.eval.mixval_probes))
        if self.data.target_val is not None:
            tv = self.predict(network, self.data.target_val)
            metrics["target_val_acc"] = accuracy(mean_view_logits(tv["g"], tv["l"]), tv["y"])
        return metrics
