"""Plugins that travel: a module outside the package, named in the config's `plugins`,
reaches every process that validates the config, Ray workers included.

The plugin (written here into tmp_path) registers one of each extension of README
"Extending": a method, a validator, a domain and a searched parameter.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lacmfer import names
from lacmfer.config import ExperimentConfig, config_from_dict
from lacmfer.errors import UserError
from lacmfer.run.lifecycle import LAST_WEIGHTS, STATE_FILE
from tests.conftest import REPO

PLUGIN = '''
"""A lab's extension of LA-CMFER, kept outside the package."""

import torch

from lacmfer.data.domains import DomainInfo, register_domain
from lacmfer.hparams import register_hparam
from lacmfer.method.methods import SourceOnly, StepLosses, register_method
from lacmfer.method.validators import register_validator


@register_method("lab_method")
class LabMethod(SourceOnly):
    """Source-only training plus a classifier of its own on the global features, trained
    beside the network; it also reports, as a loss term, the rotation it trained with."""

    def __init__(self, cfg, shape):
        super().__init__(cfg, shape)
        self.lab_head = torch.nn.Linear(shape.feature_dim, shape.num_classes)

    def losses(self, source, labels, target, step, domains=None):
        base = super().losses(source, labels, target, step)
        head = torch.nn.functional.cross_entropy(self.lab_head(source.feat_g), labels)
        rotation = torch.tensor(float(self.cfg.data.augment.rotation), device=base.total.device)
        return StepLosses(base.total + head, {**base.terms, "lab_head": head, "lab_rotation": rotation}, base.metrics)


def confidence(probs):
    return probs.max(dim=1).values.mean().item()


register_validator("lab_confidence", confidence)
register_domain(DomainInfo("Lab", "Lab.txt", "Lab.txt", COUNTS, COUNTS))
register_hparam("lab_rotation", "data.augment.rotation", searched=False, distribution="uniform", low=0.0, high=30.0)
'''


@pytest.fixture
def plugin(synth_tiny, tmp_path, monkeypatch, restore_registries) -> tuple[str, Path]:
    """The plugin module `lab_plugin` (importable here) and its data root, holding `Lab.txt`:
    30 of SynthFER's CK images listed with absolute paths."""
    ck = (synth_tiny / "CK.txt").read_text().splitlines()[:30]
    lines = [f"{synth_tiny / line.rsplit(maxsplit=1)[0]} {line.rsplit(maxsplit=1)[1]}" for line in ck]
    data = tmp_path / "lab_data"
    data.mkdir()
    (data / "Lab.txt").write_text("\n".join(lines) + "\n")
    counts = tuple(sum(line.endswith(f" {c}") for line in lines) for c in range(7))
    code = tmp_path / "plugin_code"
    code.mkdir()
    (code / "lab_plugin.py").write_text(PLUGIN.replace("COUNTS", repr(counts)))
    monkeypatch.syspath_prepend(str(code))
    yield "lab_plugin", data
    sys.modules.pop("lab_plugin", None)  # the next test imports it afresh, into restored registries


def lab_experiment(synth_tiny: Path, data: Path, results: Path) -> dict:
    """A tiny search for the plugin's domain with the plugin's method, objective and parameter."""
    return {
        "plugins": ["lab_plugin"],
        "data": {"root": str(data), "domains": ["JAFFE", "RAF", "Lab"], "targets": ["Lab"],
                 "lists": {d: {"root": str(synth_tiny)} for d in ("JAFFE", "RAF")},
                 "image_size": 48, "batch_size": 16, "eval_batch_size": 64, "num_workers": 0},
        "model": {"width": 0.125, "global_blocks": [1, 1], "local_blocks": 1},
        "loss": {"adaptation": "lab_method"},
        "schedule": {"steps": 4, "lr_decay_steps": 4},
        "eval": {"interval": 2, "objective": "lab_confidence"},
        # The plugin's parameter added to the default space, narrowed: its distribution is the plugin's.
        "search": {"num_samples": 2, "max_concurrent": 1, "space": {"lab_rotation": {"high": 20.0}}},
        "resources": {"cpu": 1, "threads": 1},
        "output": {"results_dir": str(results), "name": "lab"},
    }


def test_a_plugin_domain_joins_only_the_experiments_that_name_it(plugin):
    """Mutation caught: `data.domains` defaulting to every registered domain again
    (`names.domain_names` instead of `names.BUILTIN_DOMAIN_NAMES` in lacmfer/config.py)."""
    module, _ = plugin
    cfg = config_from_dict({"plugins": [module]})
    assert "Lab" in names.domain_names()  # the plugin registered it...
    assert cfg.data.domains == cfg.data.targets == list(names.BUILTIN_DOMAIN_NAMES)  # ...and nothing uses it unasked
    assert ExperimentConfig().data.domains == list(names.BUILTIN_DOMAIN_NAMES)
    named = config_from_dict({"plugins": [module], "data": {"domains": ["CK", "Lab"], "targets": ["Lab"]}})
    assert named.data.targets == ["Lab"]


def test_a_plugin_method_is_a_final_training_baseline(plugin, synth_tiny, tmp_path):
    """`--baseline` is checked once the configs, and so their plugins, are loaded; the
    command line is parsed before. Mutation caught: `choices=METHOD_NAMES` back on
    `--baseline` in train.py (argparse refuses the plugin's method, exit 2)."""
    from train import parse_args, plan_runs

    _, data = plugin
    raw = lab_experiment(synth_tiny, data, tmp_path)
    raw["loss"]["adaptation"] = "source_only"
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(raw))
    plan = plan_runs(parse_args(["--config", str(path), "--seeds", "0", "--baseline", "lab_method"]))
    assert plan.methods == ["source_only", "lab_method"] and plan.targets == ["Lab"]
    with pytest.raises(UserError, match="--baseline lab_nowhere: unknown adaptation method"):
        plan_runs(parse_args(["--config", str(path), "--seeds", "0", "--baseline", "lab_nowhere"]))


def test_a_plugin_that_cannot_be_imported_stops_both_commands_before_ray(tmp_path, capsys):
    """Mutation caught: `config_from_dict` validating before it imports the plugins (or not
    at all): the error would then be the schema's unknown method, not the missing module."""
    import ray

    from train import main as train_main
    from tune import main as tune_main

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"plugins": ["lab_missing.plugin"], "loss": {"adaptation": "lab_method"}}))
    for main in (lambda: tune_main(["--config", str(path)]), lambda: train_main(["--config", str(path)])):
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"{path}: plugins: cannot import 'lab_missing.plugin'" in err and "No module named" in err
    assert not ray.is_initialized()


def test_the_preflight_names_a_node_that_cannot_import_a_plugin(tmp_path):
    """The per-node check behind the search's preflight tries the config's plugins too.
    Mutation caught: `node_problems` importing only TRIAL_MODULES."""
    from search.cluster import node_problems

    problems = node_problems([str(tmp_path)], str(tmp_path / "cache"), plugins=["lab_nowhere"])
    assert problems == ["cannot import lab_nowhere (ModuleNotFoundError: No module named 'lab_nowhere')"]


def test_an_entry_point_plugin_is_imported_before_validation(tmp_path, monkeypatch, restore_registries):
    """An installed package's `lacmfer.plugins` entry point registers its method wherever
    a config is validated, with no `plugins` key. Mutation caught: `import_plugins` not
    calling `_load_entry_points`."""
    from lacmfer import plugins

    (tmp_path / "lab_ep.py").write_text("from lacmfer.method.methods import SourceOnly, register_method\n"
                                        "register_method('lab_ep_method')(type('LabEp', (SourceOnly,), {}))\n")
    info = tmp_path / "lab_ep-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-ep\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\nlab = lab_ep\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins._load_entry_points.cache_clear()  # an earlier test loaded the (empty) group already
    try:
        assert config_from_dict({"loss": {"adaptation": "lab_ep_method"}}).loss.adaptation == "lab_ep_method"
    finally:
        plugins._load_entry_points.cache_clear()
        sys.modules.pop("lab_ep", None)


def test_a_plugin_is_used_by_final_training_and_the_search_in_ray_workers(plugin, synth_tiny, tmp_path, monkeypatch):
    """Every Ray worker (a final-training task, a search trial) is a fresh process that
    rebuilds the config from its dump and validates it; it must import the plugin first.
    Final training runs first, so its task lands in a worker that nothing imported the
    plugin into. The plugin's method owns a module: the worker trains it and checkpoints it
    (`"method"` left out of `Trainer.state_dict` or of the final weights fails here). Mutations caught: the `plugins` field left out of the dump
    (`Field(default_factory=list, exclude=True)` in lacmfer/config.py): the worker's
    config lacks the plugin and the run fails (exit 1); `config_from_dict` not importing
    the plugins: the driver refuses `lab_method` (exit 2)."""
    import ray

    from train import main as train_main
    from tune import main as tune_main

    module, data = plugin
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(lab_experiment(synth_tiny, data, tmp_path)))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    # The workers find the plugin (and this checkout) where a user's PYTHONPATH would show them.
    pythonpath = os.pathsep.join([str(tmp_path / "plugin_code"), str(REPO)])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=128 * 1024**2, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    try:
        assert train_main(["--config", str(path), "--seeds", "0", "--no-progress"]) == 0
        run = json.loads((tmp_path / "lab" / "final" / "Lab" / "lab_method" / "seed0" / "metrics.json").read_text())
        assert run["status"] == "completed" and run["last"]["objective"] == run["last"]["lab_confidence"]
        assert run["last"]["loss_lab_rotation"] == pytest.approx(15.0)  # the config's own rotation
        # The plugin's own module trained in the worker and was saved with the network.
        weights = torch.load(tmp_path / "lab" / "final" / "Lab" / "lab_method" / "seed0" / LAST_WEIGHTS)
        assert weights["method"]["lab_head.weight"].shape == (7, weights["model"]["classifier_g.weight"].shape[1])
        assert run["last"]["loss_lab_head"] > 0

        assert tune_main(["--config", str(path), "--name", "lab_search"]) == 0
        exp = tmp_path / "lab_search"
        reports = [json.loads(line) for trial in (exp / "Lab").rglob("result.json")
                   for line in trial.read_text().splitlines()]
        assert len({r["trial_id"] for r in reports}) == 2
        for report in reports:  # the trial trained with the plugin's method, objective and sampled value
            assert report["objective"] == report["lab_confidence"]
            assert 0.0 <= report["config"]["lab_rotation"] <= 20.0
            assert report["loss_lab_rotation"] == pytest.approx(report["config"]["lab_rotation"], rel=1e-6)
        kept = [torch.load(f, weights_only=False) for f in (exp / "Lab").rglob(STATE_FILE)]
        assert kept and all("lab_head.weight" in state["trainer"]["method"] for state in kept)
        best = yaml.safe_load((exp / "best" / "Lab.yaml").read_text())
        assert best["plugins"] == [module]  # the exported best config runs as is, plugin included
    finally:
        ray.shutdown()
