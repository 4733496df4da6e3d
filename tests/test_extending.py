"""Each kind of extension of the README's "Extending" section, registered at run time.

A validator, a dataset, a loss term and a searched parameter with a nested key are added
the way the README says, and each is then used by the parts that must know it (config
validation, trainer, TensorBoard, search, export) without editing them.
"""

from __future__ import annotations

import pytest
import torch

from lacmfer import hparams
from lacmfer.data import domains
from lacmfer.data.loaders import load_split_data
from lacmfer.method.methods import LACMFER, StepLosses, register_method
from lacmfer.method.validators import register_validator
from lacmfer.run.tb_logging import scalar_tag
from lacmfer.run.trainer import Trainer
from search.analysis import TrialRecord, validator_ranking
from search.spaces import SearchSpace, default_point
from tests.conftest import tiny_config


def max_probability(probs: torch.Tensor) -> float:
    """Mean confidence of the predictions: a toy label-free validator."""
    return probs.max(dim=1).values.mean().item()


def test_a_registered_validator_is_reported_searchable_logged_and_ranked(synth_tiny, restore_registries):
    register_validator("max_prob", max_probability)
    cfg = tiny_config(synth_tiny, eval={"objective": "max_prob"})  # the config accepts it as an objective
    trainer = Trainer(cfg, "CK")
    trainer.train_until(2)
    metrics = trainer.evaluate()
    assert 1 / 7 <= metrics["max_prob"] <= 1 and metrics["objective"] == metrics["max_prob"]
    assert scalar_tag("max_prob") == "validators/max_prob"
    history = [{**metrics, "max_prob": v, "target_acc": a} for v, a in ((0.2, 0.1), (0.5, 0.3), (0.9, 0.6))]
    ranking = dict(validator_ranking([TrialRecord("t", "CK", {}, "completed", history)]))
    assert ranking["max_prob"] == pytest.approx(1.0)


def test_a_registered_dataset_is_a_domain_of_the_config_the_data_and_the_command_line(
        synth_tiny, tmp_path, restore_registries):
    # "Mini": a new list file in the field's format, here over CK's images (absolute paths).
    ck = (synth_tiny / "CK.txt").read_text().splitlines()[:30]
    lines = [f"{synth_tiny / line.rsplit(maxsplit=1)[0]} {line.rsplit(maxsplit=1)[1]}" for line in ck]
    (tmp_path / "Mini.txt").write_text("\n".join(lines) + "\n")
    counts = tuple(sum(line.endswith(f" {c}") for line in lines) for c in range(7))
    domains.register_domain(domains.DomainInfo("Mini", "Mini.txt", "Mini.txt", counts, counts))

    lists = {d: {"root": str(synth_tiny)} for d in ("JAFFE", "RAF")}
    cfg = tiny_config(tmp_path, data={"domains": ["JAFFE", "RAF", "Mini"], "targets": ["Mini"], "lists": lists})
    data = load_split_data(cfg, "Mini", progress=False)
    assert len(data.target_test) == 30 and data.split.sources == ("JAFFE", "RAF")
    assert Trainer(cfg, "Mini", data=data).step()["total"].isfinite()

    from tune import parse_args

    assert parse_args(["--targets", "Mini"]).targets == ["Mini"]


def test_a_loss_term_added_by_a_method_is_trained_logged_and_checkpointed(synth_tiny, restore_registries):
    @register_method("lacmfer_entropy")
    class WithTargetEntropy(LACMFER):
        """LA-CMFER plus entropy minimisation on the target's global view."""

        def losses(self, source, labels, target, step):
            base = super().losses(source, labels, target, step)
            p = target.logits_g.softmax(1)
            entropy = -(p * p.clamp_min(1e-12).log()).sum(1).mean()
            return StepLosses(base.total + 0.1 * entropy, {**base.terms, "target_entropy": entropy}, base.metrics)

    cfg = tiny_config(synth_tiny, loss={"adaptation": "lacmfer_entropy"})
    trainer = Trainer(cfg, "CK")
    first = trainer.step()
    assert first["target_entropy"] > 0
    assert "loss_target_entropy" in trainer.state_dict()["loss_sums"]
    # Resume mid-interval: the running sums come back by name.
    resumed = Trainer(cfg, "CK", data=trainer.data)
    resumed.load_state_dict(trainer.state_dict())
    assert trainer.step()["target_entropy"] == resumed.step()["target_entropy"]
    assert trainer.evaluate()["loss_target_entropy"] == resumed.evaluate()["loss_target_entropy"]
    assert scalar_tag("loss_target_entropy") == "loss/target_entropy"


def test_a_searched_parameter_with_a_nested_key(synth_tiny, restore_registries):
    hparams.register_hparam("rotation", "data.augment.rotation", searched=False,
                            distribution="uniform", low=0.0, high=30.0)
    cfg = tiny_config(synth_tiny, search={"space": {"rotation": {"high": 20.0}}})  # added and narrowed
    spec = cfg.search.space["rotation"]
    assert (spec.distribution, spec.low, spec.high) == ("uniform", 0.0, 20.0)
    assert cfg.searchable_values()["rotation"] == 15.0  # the config default, read through the nested key
    assert default_point(cfg)["rotation"] == 15.0

    from trainables.lacmfer_trainable import trial_config

    trial = trial_config(cfg.to_dict(), {"rotation": 7.5, "hyper_align": 0.3})
    assert (trial.data.augment.rotation, trial.loss.hyper_align) == (7.5, 0.3)
    assert "rotation" in SearchSpace(cfg.search.space).order
    assert any(line.startswith("rotation") and line.endswith("-> data.augment.rotation")
               for line in SearchSpace(cfg.search.space).describe())

