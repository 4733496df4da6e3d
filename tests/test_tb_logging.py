import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from lacmfer.config import config_from_dict
from lacmfer.run.tb_logging import BEST_OF, RunLogger, run_hparams, scalar_tag

SPACE = {
    "cluster_ramp": {"distribution": "choice", "choices": ["sigmoid", "linear"]},
    "cluster_gamma": {"distribution": "uniform", "low": 2, "high": 20, "only_if": {"cluster_ramp": "sigmoid"}},
}


def test_inactive_conditional_parameters_are_left_out():
    linear = config_from_dict({"schedule": {"cluster_ramp": "linear"}, "search": {"space": SPACE}})
    sigmoid = config_from_dict({"schedule": {"cluster_ramp": "sigmoid"}, "search": {"space": SPACE}})
    assert set(linear.search.space) >= set(SPACE)  # the default space, with these two entries overridden
    assert "cluster_gamma" not in run_hparams(linear, "CK")
    assert run_hparams(sigmoid, "CK")["cluster_gamma"] == 10.0
    assert run_hparams(linear, "CK")["target"] == "CK" and run_hparams(linear, "CK")["hyper_align"] == 0.4


def test_scalars_grouped_and_best_so_far_tracked(tmp_path):
    logger = RunLogger(tmp_path, {"lr": 0.1, "target": "CK"}, {"objective": "max"})
    for step, value in ((1, 0.3), (2, 0.5), (3, 0.4), (4, float("nan"))):
        logger.log({"objective": value, "loss_total": 1.0, "target_acc": 0.2}, step)
    logger.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    assert [e.value for e in acc.Scalars("hparam/objective_best")] == pytest.approx([0.3, 0.5, 0.5])
    assert {"loss/total", "target/acc", "validators/objective"} <= set(acc.Tags()["scalars"])
    start = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["target"].string_value == "CK"
    assert scalar_tag("pl_acc") == "pseudo_label/acc" and scalar_tag("lr") == "train/lr"
    assert scalar_tag("hardness_empty_t_g") == "alignment/hardness_empty_t_g"
    assert scalar_tag("grad_ratio") == "alignment/grad_ratio"


def test_target_accuracy_column_is_marked_oracle(tmp_path):
    logger = RunLogger(tmp_path, {"target": "CK"}, BEST_OF)
    logger.log({"objective": 0.4, "target_acc": 0.7}, 1)
    logger.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    assert [e.value for e in acc.Scalars("hparam/oracle_target_acc_best")] == pytest.approx([0.7])
    assert "hparam/target_acc_best" not in acc.Tags()["scalars"]


def test_diverged_or_failed_runs_are_flagged_in_the_hparams_table(tmp_path):
    logger = RunLogger(tmp_path, {"target": "CK"}, {"objective": "max"})
    logger.log({"objective": 0.6}, 1)
    logger.mark("diverged")
    logger.log({"objective": float("nan")}, 2)
    logger.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    assert [e.value for e in acc.Scalars("hparam/diverged")] == [0.0, 1.0]
    assert [e.value for e in acc.Scalars("hparam/failed")] == [0.0, 0.0]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(acc.PluginTagToContent("hparams")["_hparams_/experiment"])
    columns = {m.name.tag for m in experiment.experiment.metric_infos}
    assert {"hparam/diverged", "hparam/failed", "hparam/objective_best"} <= columns
