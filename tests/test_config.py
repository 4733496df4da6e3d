import subprocess
import sys

import pytest

from lacmfer.config import ExperimentConfig, load_config, save_config
from lacmfer.errors import UserError
from tests.conftest import REPO


def test_shipped_configs_load():
    default = load_config(REPO / "configs/default.yaml")
    assert default.data.synth is not None and default.data.synth.scale == "small"
    assert default.resources.gpu == 0
    six = load_config(REPO / "configs/cmfer_six.yaml")
    assert six.data.synth is None
    assert (six.data.image_size, six.model.width, six.resources.gpu) == (224, 1.0, 0.25)
    assert six.schedule.steps == 20000 and six.data.batch_size == 128
    assert set(six.search.space) >= {"hyper_align", "hyper_inter", "hyper_intra", "hyper_tgt",
                                     "threshold", "ps_threshold", "cluster_start", "cluster_ramp"}


def test_defaults_follow_the_paper():
    cfg = ExperimentConfig()
    assert (cfg.loss.hyper_align, cfg.loss.hyper_inter, cfg.loss.hyper_intra, cfg.loss.hyper_tgt) == (0.4, 0.02, 0.5, 0.1)
    assert (cfg.loss.threshold, cfg.loss.ps_threshold, cfg.loss.label_smoothing) == (0.4, 0.9, 0.1)
    assert (cfg.schedule.lr, cfg.schedule.lr_gamma, cfg.schedule.lr_power) == (0.01, 10.0, 0.75)
    assert cfg.eval.objective != "oracle_target_acc"


def test_overrides_are_parsed_as_yaml_and_validated(write):
    path = write("c.yaml", "loss: {hyper_align: 0.4}\n")
    cfg = load_config(path, ["loss.hyper_align=0.25", "data.targets=[CK, RAF]", "model.pretrained=null"])
    assert cfg.loss.hyper_align == 0.25
    assert cfg.data.targets == ["CK", "RAF"]
    with pytest.raises(UserError, match=r"loss\.hyper_align.*greater than or equal to 0"):
        load_config(path, ["loss.hyper_align=-1"])


@pytest.mark.parametrize(
    ("text", "overrides", "pattern"),
    [
        ("loss: {hyper_algn: 0.3}\n", [], r"c\.yaml: loss\.hyper_algn: unknown key"),
        ("loss: {threshold: 1.5}\n", [], r"c\.yaml: loss\.threshold: .*less than or equal to 1"),
        ("data: {targets: [Nowhere]}\n", [], r"data\.targets\.0: "),
        ("data: {domains: [CK, RAF], targets: [JAFFE]}\n", [], r"targets \['JAFFE'\] are not in domains"),
        ("loss: [1, 2\n", [], r"c\.yaml:\d+: invalid YAML"),
        ("- a\n- b\n", [], r"expected a mapping"),
        ("", ["loss.nope=1"], r"loss\.nope: unknown key"),
        ("", ["loss.hyper_align"], r"expected key=value"),
        ("", ["loss.hyper_align.x=1"], r"loss\.hyper_align: Input should be a valid number"),
        ("search: {space: {hyper_align: {distribution: loguniform, low: 0, high: 1}}}\n", [], r"loguniform needs low > 0"),
        ("search: {space: {threshold: {distribution: uniform, low: 0.8, high: 0.2}}}\n", [], r"low \(0\.8\) must be < high"),
        ("search: {space: {bogus: {distribution: uniform, low: 0, high: 1}}}\n", [], r"unknown search parameter 'bogus'"),
        (("search: {use_default_space: false, space: {cluster_gamma: {distribution: uniform, low: 1, high: 2, "
          "only_if: {cluster_ramp: sigmoid}}}}\n"),
         [], r"only_if names 'cluster_ramp', which is not a choice"),
        ("resources: {gpu: 1.5}\n", [], r"resources\.gpu: a trial trains on one device"),
        ("resources: {gpu: 2}\n", [], r"resources\.gpu: a trial trains on one device.*\(got 2\)"),
        # cross-field checks: the message names every key involved
        ("data: {source_val_fraction: 0}\n", [],
         r"c\.yaml: eval\.objective: source_val_acc .* data\.source_val_fraction is 0"),
        # ceil(100 / 30) = 4 evaluations; max_t 3 would stop every trial before its last one
        ("schedule: {steps: 100}\neval: {interval: 30}\nsearch: {asha: {max_t: 3}}\n", [],
         r"c\.yaml: search\.asha\.max_t: 3 is below the 4 evaluations of a run"),
    ],
)
def test_bad_configs_name_file_and_key(write, text, overrides, pattern):
    path = write("c.yaml", text)
    with pytest.raises(UserError, match=pattern):
        load_config(path, overrides)


def test_cross_field_checks_accept_what_is_consistent(write):
    # another objective needs no source hold-out
    assert load_config(write("a.yaml", "data: {source_val_fraction: 0}\neval: {objective: im}\n"))
    # max_t equal to, or above, the evaluations of a run (rungs past the end are never reached)
    for max_t in (4, 50):
        text = f"schedule: {{steps: 100}}\neval: {{interval: 30}}\nsearch: {{asha: {{max_t: {max_t}}}}}\n"
        assert load_config(write("b.yaml", text)).search.asha.max_t == max_t


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_paths_are_resolved_and_saved_config_round_trips(tmp_path, write, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write("c.yaml", "data: {root: rel/data}\nloss: {hyper_tgt: 0.3}\n"))
    assert cfg.data.root == tmp_path / "rel/data"
    assert cfg.output.results_dir.is_absolute()
    save_config(cfg, tmp_path / "out/resolved.yaml", header="resolved config\nsecond line")
    text = (tmp_path / "out/resolved.yaml").read_text()
    assert text.startswith("# resolved config\n# second line\n")
    again = load_config(tmp_path / "out/resolved.yaml")
    assert again == cfg


def test_with_values_revalidates():
    cfg = ExperimentConfig()
    changed = cfg.with_values({"loss.hyper_align": 0.7, "schedule.cluster_ramp": "linear"})
    assert (changed.loss.hyper_align, changed.schedule.cluster_ramp) == (0.7, "linear")
    assert cfg.loss.hyper_align == 0.4
    with pytest.raises(UserError, match="cluster_ramp"):
        cfg.with_values({"schedule.cluster_ramp": "cubic"})


def test_cli_bad_config_exits_2_with_one_line(write):
    path = write("c.yaml", "loss: {hyper_algn: 0.3}\n")
    proc = subprocess.run([sys.executable, "tune.py", "--config", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "loss.hyper_algn: unknown key" in proc.stderr and "Traceback" not in proc.stderr
