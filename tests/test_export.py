"""search.export: best configs, trials.parquet, summary.md, from synthetic and real Tune runs."""

from __future__ import annotations

import math
import os
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from lacmfer.config import ExperimentConfig, config_from_dict, load_config, save_config
from lacmfer.errors import UserError
from lacmfer.run.outcome import Evaluation
from search.analysis import TrialRecord, read_tune_experiment
from search.export import export_experiment, write_export
from search.storage import ExperimentLocations

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {
    "hyper_align": {"distribution": "loguniform", "low": 0.05, "high": 1.6},
    "threshold": {"distribution": "uniform", "low": 0.2, "high": 0.8},
    "cluster_ramp": {"distribution": "choice", "choices": ["sigmoid", "linear", "step"]},
    "cluster_gamma": {"distribution": "loguniform", "low": 2.0, "high": 20.0, "only_if": {"cluster_ramp": "sigmoid"}},
}
PARAM_COLUMNS = ["hyper_align", "threshold", "cluster_ramp", "cluster_gamma"]
COLUMNS = (["target", "trial_id"] + PARAM_COLUMNS + [
    "status", "evaluations", "objective_best", "objective_last", "target_acc_best", "target_acc_last",
    "target_acc_selected", "source_val_acc_last", "time_total_s", "error", "exported"])


def make_config(tmp_path: Path, objective: str = "source_val_acc", targets=("CK", "JAFFE", "RAF")) -> ExperimentConfig:
    return config_from_dict({
        "data": {"root": str(tmp_path / "data"), "targets": list(targets)},
        "schedule": {"steps": 40},
        "eval": {"interval": 10, "objective": objective},
        "search": {"space": SPACE, "use_default_space": False, "num_samples": 4},
        "output": {"results_dir": str(tmp_path / "results"), "name": "exp1"},
    })


def evaluation(i: int, objective: float, acc: float, final: bool = False, diverged: bool = False) -> dict:
    metrics = {"training_iteration": float(i), "step": 10.0 * i, "objective": objective, "source_val_acc": objective,
               "target_acc": acc, "im": acc + 0.01 * i, "entropy": -acc, "bnm": 0.5, "snd": 1.0 + objective,
               "time_total_s": 2.0 * i}
    return Evaluation(metrics, final=final, diverged=diverged).to_report()


def curve(objectives, accs, status="completed") -> list[dict]:
    n = len(objectives)
    return [evaluation(i + 1, o, a, final=status == "completed" and i == n - 1,
                       diverged=status == "diverged" and i == n - 1)
            for i, (o, a) in enumerate(zip(objectives, accs, strict=True))]


def ck_records() -> list[TrialRecord]:
    sig = {"hyper_align": 0.3, "threshold": 0.5, "cluster_ramp": "sigmoid", "cluster_gamma": 7.5}
    lin = {"hyper_align": 0.9, "threshold": 0.3, "cluster_ramp": "linear"}
    return [
        # best evaluation 0.80 (step 20), last 0.60
        TrialRecord("ck_a", "CK", sig, "completed", curve([0.5, 0.8, 0.7, 0.6], [0.40, 0.55, 0.50, 0.45])),
        # best 0.75, last 0.75: wins with scope "last"
        TrialRecord("ck_b", "CK", lin, "completed", curve([0.4, 0.6, 0.7, 0.75], [0.30, 0.35, 0.60, 0.62])),
        # higher than every completed trial, but stopped early
        TrialRecord("ck_c", "CK", {**lin, "hyper_align": 0.1}, "stopped early", curve([0.9], [0.2], "stopped")),
        TrialRecord("ck_d", "CK", {**lin, "cluster_ramp": "step"}, "failed", curve([0.95], [0.9], "stopped"),
                    error="RuntimeError: out of memory"),
        TrialRecord("ck_e", "CK", sig, "diverged", curve([0.99, math.nan], [0.3, 0.1], "diverged")),
    ]


def jaffe_records() -> list[TrialRecord]:
    return [TrialRecord("jf_a", "JAFFE", {"hyper_align": 0.2, "threshold": 0.4, "cluster_ramp": "step"}, "failed",
                        [], error="ValueError: bad")]


def make_study(exp_dir: Path, name: str) -> None:
    """An Optuna study like the search's: complete trials, pruned and failed ones."""
    dists = {"hyper_align": FloatDistribution(0.05, 1.6, log=True), "threshold": FloatDistribution(0.2, 0.8),
             "cluster_ramp": CategoricalDistribution(["sigmoid", "linear", "step"])}
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{exp_dir / 'optuna.db'}", direction="maximize")
    for i in range(20):
        ha, th = 0.05 + 0.075 * i, 0.2 + 0.05 * (i % 5)
        state = (TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)[i % 4]
        study.add_trial(create_trial(
            params={"hyper_align": ha, "threshold": th, "cluster_ramp": ["sigmoid", "linear", "step"][i % 3]},
            distributions=dists, value=None if state == TrialState.FAIL else -abs(ha - 0.5), state=state))


@pytest.fixture
def experiment(tmp_path):
    cfg = make_config(tmp_path)
    exp_dir = cfg.experiment_dir
    save_config(cfg, exp_dir / "config.yaml")
    make_study(exp_dir, "exp1/CK")
    return cfg, exp_dir


def read_header(path: Path) -> str:
    return "\n".join(ln[2:] for ln in path.read_text(encoding="utf-8").splitlines() if ln.startswith("# "))


# ---------------------------------------------------------------- synthetic records


def test_best_config_is_complete_and_records_its_origin(experiment):
    cfg, exp_dir = experiment
    (exp_dir / "best").mkdir()
    (exp_dir / "best" / "JAFFE.yaml").write_text("stale: true\n", encoding="utf-8")
    summary = write_export(ExperimentLocations.of(cfg, exp_dir), cfg, {"CK": ck_records(), "JAFFE": jaffe_records()}, missing=["RAF"])

    best = load_config(exp_dir / "best" / "CK.yaml")
    assert best.data.targets == ["CK"]
    assert (best.loss.hyper_align, best.loss.threshold) == (0.3, 0.5)
    assert (best.schedule.cluster_ramp, best.schedule.cluster_gamma) == ("sigmoid", 7.5)
    assert best.eval.objective == "source_val_acc"
    # everything else is the base config, unchanged
    expected = cfg.with_values({"loss.hyper_align": 0.3, "loss.threshold": 0.5, "schedule.cluster_ramp": "sigmoid",
                                "schedule.cluster_gamma": 7.5, "data.targets": ["CK"]})
    assert best.to_dict() == expected.to_dict()

    header = read_header(exp_dir / "best" / "CK.yaml")
    assert "objective: source_val_acc" in header
    assert "scope: best = best evaluation" in header
    assert "value: 0.8 at evaluation 2 of 4 (step 20)" in header
    assert "trial: ck_a (completed)" in header
    assert "0.5500 -- reported only, not used for selection" in header
    assert "ORACLE" not in header
    assert f"python train.py --config {exp_dir / 'best' / 'CK.yaml'}" in header

    assert not (exp_dir / "best" / "JAFFE.yaml").exists()  # no exportable trial: the stale file is gone
    ck = summary.splits[0]
    assert ck.best.trial_id == "ck_a" and ck.best_value == 0.8
    assert ck.counts == {"completed": 2, "stopped early": 1, "failed": 1, "diverged": 1}
    assert summary.splits[1].best is None and summary.missing_targets == ["RAF"]
    assert not list(exp_dir.rglob(".*.tmp*"))  # every file written whole (lacmfer.files.atomic_path)


def test_scope_last_selects_on_the_last_evaluation(experiment):
    cfg, exp_dir = experiment
    summary = write_export(ExperimentLocations.of(cfg, exp_dir), cfg, {"CK": ck_records()}, scope="last")
    assert summary.splits[0].best.trial_id == "ck_b"
    header = read_header(exp_dir / "best" / "CK.yaml")
    assert "scope: last = last evaluation" in header and "trial: ck_b (completed)" in header
    assert load_config(exp_dir / "best" / "CK.yaml").loss.hyper_align == 0.9
    with pytest.raises(UserError, match="scope"):
        write_export(ExperimentLocations.of(cfg, exp_dir), cfg, {"CK": ck_records()}, scope="median")


def test_trials_table_columns_rows_and_types(experiment):
    cfg, exp_dir = experiment
    write_export(ExperimentLocations.of(cfg, exp_dir), cfg, {"CK": ck_records(), "JAFFE": jaffe_records()})
    table = pq.read_table(exp_dir / "trials.parquet")
    assert table.column_names == COLUMNS
    types = {f.name: f.type for f in table.schema}
    assert types["hyper_align"] == types["cluster_gamma"] == types["objective_best"] == pa.float64()
    assert types["cluster_ramp"] == types["status"] == types["target"] == pa.string()
    assert types["evaluations"] == pa.int64() and types["exported"] == pa.bool_()
    assert table.schema.metadata[b"objective"] == b"source_val_acc" and table.schema.metadata[b"scope"] == b"best"
    rows = {r["trial_id"]: r for r in table.to_pylist()}
    assert len(rows) == 6 and [r["target"] for r in table.to_pylist()].count("JAFFE") == 1
    a, b, c, d, e = (rows[f"ck_{k}"] for k in "abcde")
    assert a["cluster_gamma"] == 7.5 and b["cluster_gamma"] is None  # conditional parameter absent
    assert [r["status"] for r in (a, c, d, e)] == ["completed", "stopped early", "failed", "diverged"]
    assert (a["evaluations"], a["objective_best"], a["objective_last"]) == (4, 0.8, 0.6)
    assert (a["target_acc_best"], a["target_acc_last"], a["target_acc_selected"]) == (0.55, 0.45, 0.55)
    assert (a["source_val_acc_last"], a["time_total_s"]) == (0.6, 8.0)
    assert e["objective_best"] == 0.99 and math.isnan(e["objective_last"])  # a reported NaN stays NaN
    assert d["error"] == "RuntimeError: out of memory" and a["error"] is None
    assert [r["trial_id"] for r in rows.values() if r["exported"]] == ["ck_a"]
    jf = rows["jf_a"]
    assert jf["evaluations"] == 0 and jf["objective_best"] is None and jf["objective_last"] is None


def test_summary_reports_counts_oracle_importance_and_ranking(experiment):
    cfg, exp_dir = experiment
    write_export(ExperimentLocations.of(cfg, exp_dir), cfg, {"CK": ck_records(), "JAFFE": jaffe_records()}, missing=["RAF"])
    text = (exp_dir / "summary.md").read_text(encoding="utf-8")
    ck, jaffe = text.split("## CK")[1].split("## JAFFE")
    assert "Trials: 5 — 2 completed, 1 stopped early, 1 failed, 1 diverged." in ck
    assert "Best source_val_acc (best evaluation): **0.8000**" in ck and "`ck_a`" in ck
    assert "0.5500 (target test labels; reported only, not used for selection)" in ck
    assert "| hyper_align | 0.3000 |" in ck and "| cluster_gamma | 7.5000 |" in ck
    # 20 Optuna trials: 10 complete, 5 pruned, 5 failed
    assert "from 10 complete of 20 Optuna trials" in ck
    assert "| hyper_align | " in ck.split("### Hyperparameter importance")[1]
    ranking = ck.split("### Validator ranking")[1]
    # entropy = −target_acc: a reversed order, near −1 but not −1 under Musgrave et al.'s weighted ranks
    assert "| source_val_acc (the objective) |" in ranking and "| entropy | -0.9955 |" in ranking
    assert "| im | 1.0000 |" in ranking and "| bnm | n/a |" in ranking  # bnm is constant here
    assert "Over 12 evaluations of all 5 trials" in ranking
    # Picks among those 12 (best target_acc 0.90, ck_d's): im = target_acc + 0.01·i picks it;
    # entropy = −target_acc picks the worst (0.10, none worse); source_val_acc's highest value
    # is ck_e's 0.99 at target_acc 0.30 (only 0.20 and 0.10 are worse: 2 of 12, not the worst decile).
    assert "| im | 1.0000 | 0.9000 | +0.00 | no |" in ranking
    assert "| entropy | -0.9955 | 0.1000 | -80.00 | yes |" in ranking
    assert "| source_val_acc (the objective) | -0.0168 | 0.3000 | -60.00 | no |" in ranking
    assert "| dev | n/a | n/a | n/a | n/a |" in ranking  # not reported by these trials
    assert "| rank_average (export-time rule) | — | " in ranking
    gaps = text.split("## Oracle gap of each validator")[1].split("## CK")[0]
    assert "| validator | CK | mean gap | worst decile |" in gaps  # JAFFE has no evaluation to pick from
    assert "| im | +0.00 | +0.00 | 0% of 1 |" in gaps and "| entropy | -80.00 | -80.00 | 100% of 1 |" in gaps
    assert "| mixval | n/a | n/a | n/a |" in gaps
    assert "no config exported" in jaffe and "no study 'exp1/JAFFE'" in jaffe
    assert "Not run (no experiment folder): RAF." in text
    assert "ORACLE" not in text


def test_oracle_objective_is_marked_everywhere(tmp_path):
    cfg = make_config(tmp_path, objective="oracle_target_acc")
    summary = write_export(ExperimentLocations.of(cfg), cfg, {"CK": ck_records()})
    header = read_header(cfg.experiment_dir / "best" / "CK.yaml")
    assert header.splitlines()[0].startswith("!!! ORACLE SELECTION")
    assert "USED for selection" in header
    assert "ORACLE SELECTION" in (cfg.experiment_dir / "summary.md").read_text(encoding="utf-8")
    assert "ORACLE SELECTION" in str(summary)
    assert pq.read_schema(cfg.experiment_dir / "trials.parquet").metadata[b"oracle"] == b"true"
    assert load_config(cfg.experiment_dir / "best" / "CK.yaml").eval.objective == "oracle_target_acc"


def test_nothing_is_written_when_the_export_fails(experiment):
    cfg, exp_dir = experiment
    bad = ck_records()
    bad[0].params["threshold"] = 7.0  # outside the schema's range: the best config cannot be built
    with pytest.raises(UserError, match="threshold"):
        write_export(ExperimentLocations.of(cfg, exp_dir), cfg, {"CK": bad})
    assert not (exp_dir / "best").exists()
    assert not (exp_dir / "trials.parquet").exists() and not (exp_dir / "summary.md").exists()


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_a_damaged_optuna_storage_is_one_line_and_the_rest_is_exported(experiment, damage):
    """A truncated (or overwritten) optuna.db: one line naming it, after the best configs,
    trials.parquet and the summary are written from the trials' own records.

    Catches: the export ending in SQLAlchemy's traceback (the error not caught where the
    studies are read), or giving up before writing what needs no study.
    """
    cfg, exp_dir = experiment
    database = exp_dir / "optuna.db"
    data = database.read_bytes()
    database.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a database " * 300)
    with pytest.raises(UserError) as raised:
        write_export(ExperimentLocations.of(cfg, exp_dir), cfg, {"CK": ck_records(), "JAFFE": jaffe_records()})
    message = str(raised.value)
    assert f"search.storage {database}: not a readable Optuna storage (" in message and "\n" not in message
    assert ("database disk image is malformed" if damage == "truncated" else "file is not a database") in message
    assert "no importances and no search plots" in message
    assert load_config(exp_dir / "best" / "CK.yaml").loss.hyper_align == pytest.approx(0.3)
    assert pq.read_table(exp_dir / "trials.parquet").num_rows == len(ck_records()) + len(jaffe_records())
    assert "is not a readable Optuna storage" in (exp_dir / "summary.md").read_text(encoding="utf-8")


def test_resuming_on_a_damaged_optuna_storage_is_one_line(experiment):
    """Catches: the driver's first read of the storage (before Ray starts) raising SQLAlchemy's error."""
    from search.storage import DamagedStudyStorage

    cfg, exp_dir = experiment
    (exp_dir / "optuna.db").write_bytes((exp_dir / "optuna.db").read_bytes()[:8192])
    with pytest.raises(DamagedStudyStorage, match=r"optuna.db: not a readable Optuna storage \(database disk image"):
        ExperimentLocations.of(cfg, exp_dir).optuna_storage()


def test_export_experiment_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such experiment folder"):
        export_experiment(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"config.yaml: not found"):
        export_experiment(tmp_path / "empty")
    cfg = make_config(tmp_path)
    save_config(cfg, cfg.experiment_dir / "config.yaml")
    with pytest.raises(UserError, match="no split folder found"):
        export_experiment(cfg.experiment_dir)
    (cfg.experiment_dir / "CK").mkdir()
    with pytest.raises(UserError, match="no Tune experiment state"):
        export_experiment(cfg.experiment_dir)


# ---------------------------------------------------------------- a real (tiny) Tune run

TRAINABLE = textwrap.dedent('''
    import math
    from ray import tune

    # hyper_align selects the behaviour; objective per evaluation
    CURVES = {0.5: [0.5, 0.7, 0.65, 0.6], 0.1: [0.1, 0.2, 0.3, 0.4], 0.3: [0.3, 0.35], 0.7: [0.7, math.nan]}

    def space(trial):  # define-by-run, picklable (module level) as Tune's searcher state needs
        trial.suggest_categorical("hyper_align", [0.5, 0.1, 0.3, 0.7])
        if trial.suggest_categorical("cluster_ramp", ["sigmoid", "linear", "step"]) == "sigmoid":
            trial.suggest_float("cluster_gamma", 2.0, 20.0, log=True)
        return {"threshold": 0.4, "unrelated": 1}

    def trainable(config):
        from lacmfer.run.outcome import Evaluation  # in the worker: the function travels by value

        ha = config["hyper_align"]
        for i, objective in enumerate(CURVES[ha]):
            if ha == 0.3 and i == 1:
                raise RuntimeError("simulated crash")
            diverged = math.isnan(objective)
            tune.report(Evaluation({"step": 10.0 * (i + 1), "objective": objective, "source_val_acc": objective,
                                    "target_acc": 0.5 * ha + 0.05 * i, "im": 0.1 * i, "entropy": -0.1 * i,
                                    "bnm": 0.2, "snd": 1.0}, final=i == 3, diverged=diverged).to_report())
            if diverged:
                return
''')


@pytest.fixture(scope="module")
def tune_run(tmp_path_factory):
    """One split (CK) of 4 trials run by Ray Tune: completed, ASHA-stopped, errored, diverged."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    tmp = tmp_path_factory.mktemp("tune_run")
    (tmp / "export_test_trainable.py").write_text(TRAINABLE, encoding="utf-8")
    cfg = make_config(tmp, targets=("CK", "JAFFE"))
    exp_dir = cfg.experiment_dir
    save_config(cfg, exp_dir / "config.yaml")
    # Enqueued points of a define-by-run space, as the search driver runs them: the
    # conditional cluster_gamma exists only for sigmoid; constants come back as a dict.
    points = [{"hyper_align": 0.5, "cluster_ramp": "sigmoid", "cluster_gamma": 5.0},
              {"hyper_align": 0.1, "cluster_ramp": "linear"},
              {"hyper_align": 0.3, "cluster_ramp": "linear"},
              {"hyper_align": 0.7, "cluster_ramp": "step"}]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("PYTHONPATH", os.pathsep.join([str(tmp), os.environ.get("PYTHONPATH", "")]))  # for the workers
        mp.syspath_prepend(str(tmp))
        from export_test_trainable import space, trainable

        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
        try:
            start = time.perf_counter()
            tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    metric="objective", mode="max", num_samples=len(points), max_concurrent_trials=1,
                    search_alg=OptunaSearch(space=space, metric="objective", mode="max", points_to_evaluate=points),
                    scheduler=ASHAScheduler(time_attr="training_iteration", max_t=4, grace_period=1,
                                            reduction_factor=2),
                    trial_dirname_creator=lambda trial: trial.trial_id, reuse_actors=True,
                ),
                run_config=tune.RunConfig(name="CK", storage_path=str(exp_dir), verbose=0),
            ).fit()
            print(f"tiny Tune run: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        finally:
            if started_here:
                ray.shutdown()
        sys.modules.pop("export_test_trainable", None)
    return cfg, exp_dir


def test_read_tune_experiment_from_a_real_run(tune_run):
    _, exp_dir = tune_run
    records = {r.params["hyper_align"]: r for r in read_tune_experiment(exp_dir / "CK", "CK")}
    assert sorted(records) == [0.1, 0.3, 0.5, 0.7]
    assert {ha: r.status for ha, r in records.items()} == {
        0.5: "completed", 0.1: "stopped early", 0.3: "failed", 0.7: "diverged"}
    assert records[0.5].evaluations == 4 and records[0.1].evaluations == 1
    assert records[0.3].error == "RuntimeError: simulated crash"
    assert records[0.5].params == {"hyper_align": 0.5, "threshold": 0.4, "cluster_ramp": "sigmoid",
                                   "cluster_gamma": 5.0}
    assert records[0.1].params == {"hyper_align": 0.1, "threshold": 0.4, "cluster_ramp": "linear"}
    assert [h["objective"] for h in records[0.5].history] == [0.5, 0.7, 0.65, 0.6]
    assert records[0.5].history[-1]["training_iteration"] == 4 and "time_total_s" in records[0.5].history[-1]
    assert math.isnan(records[0.7].last["objective"])


def test_export_experiment_end_to_end_on_a_real_run(tune_run):
    cfg, exp_dir = tune_run
    summary = export_experiment(exp_dir)
    assert summary.missing_targets == ["JAFFE"] and [s.target for s in summary.splits] == ["CK"]
    best = load_config(exp_dir / "best" / "CK.yaml")
    assert best.loss.hyper_align == 0.5 and best.schedule.cluster_gamma == 5.0 and best.data.targets == ["CK"]
    assert "value: 0.7 at evaluation 2 of 4 (step 20)" in read_header(exp_dir / "best" / "CK.yaml")
    table = pq.read_table(exp_dir / "trials.parquet")
    assert table.column_names == COLUMNS and table.num_rows == 4
    assert sorted(table.column("status").to_pylist()) == ["completed", "diverged", "failed", "stopped early"]
    text = (exp_dir / "summary.md").read_text(encoding="utf-8")
    assert "Trials: 4 — 1 completed, 1 stopped early, 1 failed, 1 diverged." in text
    assert "optuna.db not found" in text and "Not run (no experiment folder): JAFFE." in text
    assert "exp1" in str(summary) and "best/CK.yaml" in str(summary)


def test_export_removes_checkpoints_of_trials_not_exported_in_finished_splits(tune_run):
    _, exp_dir = tune_run
    trial_dirs = {read_result_trial_id(r): r.parent for r in (exp_dir / "CK").glob("*/result.json")}
    for trial_dir in trial_dirs.values():
        (trial_dir / "checkpoint_000003").mkdir(exist_ok=True)
        (trial_dir / "checkpoint_000003" / "trainer.pt").write_bytes(b"x" * 1000)

    summary = export_experiment(exp_dir)  # not a finished split: it may still be resumed
    assert summary.removed_checkpoints == 0
    assert all((d / "checkpoint_000003").is_dir() for d in trial_dirs.values())
    cfg = load_config(exp_dir / "config.yaml")
    save_config(cfg.with_values({"search.keep_checkpoints": True}), exp_dir / "config.yaml")
    try:
        assert export_experiment(exp_dir, finished=["CK"]).removed_checkpoints == 0  # asked to keep them
    finally:
        save_config(cfg, exp_dir / "config.yaml")
    assert all((d / "checkpoint_000003").is_dir() for d in trial_dirs.values())

    summary = export_experiment(exp_dir, finished=["CK"])
    best = summary.splits[0].best.trial_id
    kept = {t for t, d in trial_dirs.items() if (d / "checkpoint_000003").is_dir()}
    assert kept == {best} and len(trial_dirs) == 4
    assert (summary.removed_checkpoints, summary.removed_bytes) == (3, 3000)
    assert "removed 3 checkpoint(s)" in str(summary)


def read_result_trial_id(result_json: Path) -> str:
    import json

    return json.loads(result_json.read_text(encoding="utf-8").splitlines()[0])["trial_id"]


def test_the_export_takes_its_default_scope_from_the_search(tmp_path, monkeypatch):
    """Without `scope`, a trial's value is what the search told Optuna: `search.scope`.

    Mutation caught (search/export/__init__.py, `export_experiment`): `scope = scope or cfg.search.scope`
    as `scope = scope or "best"` (the export then ranks trials otherwise than TPE did)."""
    cfg = make_config(tmp_path, targets=("CK",)).with_values({"search.scope": "last"})
    exp_dir = cfg.experiment_dir
    save_config(cfg, exp_dir / "config.yaml")
    make_study(exp_dir, "exp1/CK")
    (exp_dir / "CK").mkdir()
    monkeypatch.setattr("search.export.read_split", lambda exp_dir, target: ck_records())
    summary = export_experiment(str(exp_dir))
    assert summary.scope == "last"
    header = (exp_dir / "best" / "CK.yaml").read_text()
    assert "scope: last = last evaluation" in header and "trial: ck_b (completed)" in header  # best: ck_a
