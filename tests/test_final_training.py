"""Final training (`python train.py`) on SynthFER tiny: runs, table, resume, divergence, Ray.

The experiment folder is built here the way the search's export writes it (a `config.yaml`
and complete `best/<target>.yaml` configs) instead of running a search. The module runs
it once, sequentially: CK and JAFFE × seeds 0, 1 × LA-CMFER and the source-only baseline.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lacmfer.config import load_config, save_config
from lacmfer.errors import UserError
from lacmfer.run.final_run import FinalRun, train_run
from lacmfer.run.trainer import Trainer
from tests.conftest import REPO, tiny_config
from train import main

TARGETS, SEEDS, METHODS = ("CK", "JAFFE"), (0, 1), ("lacmfer", "source_only")
STEPS, INTERVAL = 20, 10
EVALUATION_KEYS = ("step", "objective", "target_acc", "source_val_acc", "im", "entropy", "bnm", "snd", "loss_total")


def make_experiment(root: Path, synth: Path, targets=TARGETS, **sections) -> Path:
    """A search's folder as its export leaves it: config.yaml and best/<target>.yaml."""
    cfg = tiny_config(synth, data={"targets": list(targets)}, output={"results_dir": str(root), "name": "exp"},
                      schedule={"steps": STEPS, "lr_decay_steps": STEPS}, eval={"interval": INTERVAL}, **sections)
    save_config(cfg, cfg.experiment_dir / "config.yaml")
    for target in targets:
        best = cfg.with_values({"data.targets": [target], "loss.hyper_align": 0.3})
        save_config(best, cfg.experiment_dir / "best" / f"{target}.yaml", header="exported best config")
    return cfg.experiment_dir


def run_main(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def metrics(exp: Path, target: str, method: str, seed: int) -> dict:
    return json.loads((exp / "final" / target / method / f"seed{seed}" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def experiment(synth_tiny, tmp_path_factory) -> tuple[Path, str]:
    exp = make_experiment(tmp_path_factory.mktemp("results"), synth_tiny)
    code, out = run_main(["--experiment", str(exp), "--seeds", *map(str, SEEDS), "--baseline", "source_only",
                          "--sequential", "--no-progress"])
    assert code == 0
    return exp, out


def test_importing_the_method_does_not_import_ray():
    code = "import sys, train, lacmfer.run.final_run, lacmfer.reports.final_report; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_run_writes_its_outputs_and_complete_metrics(experiment):
    exp, out = experiment
    for target in TARGETS:
        for method in METHODS:
            for seed in SEEDS:
                run_dir = exp / "final" / target / method / f"seed{seed}"
                for name in ("config.yaml", "checkpoint.pt", "checkpoint_selected.pt", "metrics.json", "tb"):
                    assert (run_dir / name).exists(), run_dir / name
                assert not (run_dir / "run_state.pt").exists()  # removed when the run ended
                m = metrics(exp, target, method, seed)
                assert (m["target"], m["method"], m["seed"], m["status"]) == (target, method, seed, "completed")
                assert m["objective"] == "source_val_acc" and m["oracle"] is False and m["resumed_at"] == []
                assert [e["step"] for e in m["history"]] == [INTERVAL, STEPS]
                assert all(math.isfinite(e[k]) for e in m["history"] for k in EVALUATION_KEYS)
                assert m["last"] == m["history"][-1]
                best = max(e["objective"] for e in m["history"])
                assert m["selected"] == next(e for e in m["history"] if e["objective"] == best)
                cfg = torch.load(run_dir / "checkpoint_selected.pt", weights_only=False)["config"]
                assert (cfg["seed"], cfg["loss"]["adaptation"], cfg["loss"]["hyper_align"]) == (seed, method, 0.3)
    # The baseline really trained without the adaptation terms, the method with them.
    assert "loss_mcc" not in metrics(exp, "CK", "source_only", 0)["last"]
    assert metrics(exp, "CK", "lacmfer", 0)["last"]["loss_mcc"] > 0
    # One progress line per run, each naming it.
    lines = [ln for ln in out.splitlines() if ln.startswith("[")]
    assert len(lines) == 8 and lines[-1].startswith("[8/8] JAFFE/source_only/seed1: completed")


def test_selected_and_last_weights_evaluate_to_their_reported_accuracies(experiment, synth_tiny):
    exp, _ = experiment
    runs = [(t, m, s) for t in TARGETS for m in METHODS for s in SEEDS]
    earlier = [r for r in runs if metrics(exp, *r)["selected"]["step"] < STEPS]
    assert earlier, "no run selected an evaluation before the last: the check below could not tell them apart"
    target, method, seed = earlier[0]
    m = metrics(exp, target, method, seed)
    run_dir = exp / "final" / target / method / f"seed{seed}"
    trainer = Trainer(tiny_config(synth_tiny), target)
    for weights, evaluation in (("checkpoint_selected.pt", m["selected"]), ("checkpoint.pt", m["last"])):
        trainer.model.load_state_dict(torch.load(run_dir / weights, weights_only=False)["model"])
        got = trainer.evaluate()
        assert (got["target_acc"], got["source_val_acc"]) == (evaluation["target_acc"], evaluation["source_val_acc"])


def test_report_is_the_protocol_table(experiment):
    exp, _ = experiment
    table = pq.read_table(exp / "final" / "report.parquet")
    assert table.schema.metadata[b"objective"] == b"source_val_acc"
    assert table.schema.metadata[b"oracle_columns"] == (b"acc_oracle_best_mean,acc_oracle_best_std,"
                                                        b"acc_oracle_gap_mean,acc_oracle_gap_std")
    rows = {(r["target"], r["method"]): r for r in table.to_pylist()}
    assert set(rows) == {(t, m) for t in (*TARGETS, "mean") for m in METHODS}
    report = (exp / "final" / "report.md").read_text()
    for method in METHODS:
        per_seed = {t: {s: metrics(exp, t, method, s)["selected"]["target_acc"] for s in SEEDS} for t in TARGETS}
        for target in TARGETS:
            row = rows[target, method]
            values = list(per_seed[target].values())
            assert (row["runs"], row["completed"], row["diverged"]) == (2, 2, 0)
            assert row["acc_selected_mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
            assert row["acc_selected_std"] == pytest.approx(statistics.stdev(values), abs=1e-12)
            last = [metrics(exp, target, method, s)["last"]["target_acc"] for s in SEEDS]
            assert row["acc_last_mean"] == pytest.approx(statistics.fmean(last), abs=1e-12)
            oracle = [max(e["target_acc"] for e in metrics(exp, target, method, s)["history"]) for s in SEEDS]
            assert row["acc_oracle_best_mean"] == pytest.approx(statistics.fmean(oracle), abs=1e-12)
            gaps = [a - b for a, b in zip(values, oracle, strict=True)]
            assert row["acc_oracle_gap_mean"] == pytest.approx(statistics.fmean(gaps), abs=1e-12)
        mean = rows["mean", method]
        assert mean["acc_selected_mean"] == pytest.approx(
            statistics.fmean(rows[t, method]["acc_selected_mean"] for t in TARGETS), abs=1e-12)
        by_seed = [statistics.fmean(per_seed[t][s] for t in TARGETS) for s in SEEDS]
        assert mean["acc_selected_std"] == pytest.approx(statistics.stdev(by_seed), abs=1e-12)
    # The markdown shows the same numbers, targets as rows and methods as columns.
    ck = rows["CK", "lacmfer"], rows["CK", "source_only"]
    cells = " | ".join(f"{100 * r['acc_selected_mean']:.2f} ± {100 * r['acc_selected_std']:.2f}" for r in ck)
    assert f"| CK | {cells} |" in report
    assert "| target | lacmfer | source_only |" in report
    assert "## Target accuracy: best of all evaluations (ORACLE)" in report
    # Every validator's oracle gap: had the run kept the first evaluation with the highest im.
    gaps = report.split("## Oracle gap of each validator")[1]
    lacmfer = gaps.split("### lacmfer")[1].split("###")[0]
    per_target = []
    for target in TARGETS:
        runs = [metrics(exp, target, "lacmfer", s)["history"] for s in SEEDS]
        picked = [max(h, key=lambda e: e["im"])["target_acc"] - max(e["target_acc"] for e in h) for h in runs]
        per_target.append(statistics.fmean(picked))
    cells = " | ".join(f"{100 * g:.2f}" for g in [*per_target, statistics.fmean(per_target)])
    assert f"| im | {cells} | " in lacmfer
    assert "| source_val_acc (the objective) | " in lacmfer and "| mixval | " in lacmfer
    assert "![target accuracy per target, method against baselines](plots/accuracy.png)" in report


def test_bar_chart_is_a_readable_png(experiment):
    exp, _ = experiment
    with Image.open(exp / "final" / "plots" / "accuracy.png") as image:
        assert image.format == "PNG" and image.size == (1000, 400)
        image.load()  # decodes every pixel: a truncated file fails here


_KILLED_AT_FOURTH_EVALUATION = textwrap.dedent("""
    import os, signal, sys
    from lacmfer.run.trainer import Trainer
    from train import main
    evaluate, calls = Trainer.evaluate, []
    def evaluate_then_die(self):
        calls.append(1)
        if len(calls) == 4:  # seed 1's second evaluation: its first is saved, seed 0 has ended
            os.kill(os.getpid(), signal.SIGKILL)
        return evaluate(self)
    Trainer.evaluate = evaluate_then_die
    main(sys.argv[1:])
""")


def test_resume_after_a_kill_keeps_finished_runs_and_continues_exactly(experiment, synth_tiny, tmp_path):
    exp = make_experiment(tmp_path, synth_tiny, targets=("CK",))
    argv = ["--experiment", str(exp), "--seeds", "0", "1", "--sequential", "--no-progress"]
    killed = subprocess.run([sys.executable, "-c", _KILLED_AT_FOURTH_EVALUATION, *argv], cwd=REPO,
                            capture_output=True, text=True, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    seed0, seed1 = (exp / "final" / "CK" / "lacmfer" / f"seed{s}" for s in SEEDS)
    assert (seed0 / "metrics.json").exists() and not (seed1 / "metrics.json").exists()
    assert (seed1 / "run_state.pt").exists()
    finished = (seed0 / "metrics.json").stat().st_mtime_ns

    with pytest.raises(SystemExit) as refused:  # a new final training must not overwrite started runs
        run_main(argv)
    assert refused.value.code == 2
    code, out = run_main([*argv, "--resume"])
    assert code == 0 and "kept 1 finished run(s) of 2" in out
    assert (seed0 / "metrics.json").stat().st_mtime_ns == finished
    resumed = json.loads((seed1 / "metrics.json").read_text())
    assert resumed["resumed_at"] == [INTERVAL]
    # Exactly the numbers of the uninterrupted run of the module's experiment.
    assert resumed["history"] == metrics(experiment[0], "CK", "lacmfer", 1)["history"]
    tb = EventAccumulator(str(seed1 / "tb"))
    tb.Reload()
    # Nothing drawn twice. Sorted: the two event files (killed run, resumed run) can share their
    # name's whole-second timestamp, and then the reader takes them in pid order.
    assert sorted(e.step for e in tb.Scalars("loss/total")) == [INTERVAL, STEPS]


def test_diverging_run_is_reported_as_such(synth_tiny, tmp_path, capsys):
    exp = make_experiment(tmp_path, synth_tiny, targets=("CK",))
    code = main(["--config", str(exp / "best" / "CK.yaml"), "--seeds", "0", "--set", "schedule.lr=1e6",
                 "--sequential", "--no-progress"])
    assert code == 0
    assert "warning: diverged runs (NaN/inf loss): CK/lacmfer/seed0" in capsys.readouterr().err
    run_dir = exp / "final" / "CK" / "lacmfer" / "seed0"
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "diverged" and m["steps"] < STEPS and math.isnan(m["last"]["objective"])
    assert m["weights"]["last"] is None and not (run_dir / "checkpoint.pt").exists()
    tb = EventAccumulator(str(run_dir / "tb"))
    tb.Reload()
    assert tb.Scalars("hparam/diverged")[-1].value == 1.0  # flagged in TensorBoard's HParams table too
    row = pq.read_table(exp / "final" / "report.parquet").to_pylist()[0]
    assert (row["target"], row["completed"], row["diverged"]) == ("CK", 0, 1)
    assert math.isnan(row["acc_last_mean"])
    report = (exp / "final" / "report.md").read_text()
    assert "| CK | n/a (n=0) |" in report and "CK/lacmfer/seed0 diverged" in report


def crash_worker_at_second_evaluation_once(run: FinalRun, **kwargs) -> dict:
    """A Ray task body whose first attempt SIGKILLs its worker process, as a lost node would."""
    marker = run.run_dir.parent / f"{run.run_dir.name}.crashed"
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        evaluate, calls = Trainer.evaluate, []

        def evaluate_then_die(self):
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return evaluate(self)

        Trainer.evaluate = evaluate_then_die
    return train_run(run, **kwargs)


@pytest.fixture(scope="module")
def ray_session():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        # address="local": a new Ray even where another one on this machine would be joined
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=128 * 1024**2)
        try:
            yield
        finally:
            ray.shutdown()


def test_ray_runs_equal_sequential_runs_and_a_crashed_run_resumes(experiment, ray_session, synth_tiny, tmp_path):
    from search.final_training import run_on_ray

    exp = make_experiment(tmp_path, synth_tiny, targets=("CK",))
    code, out = run_main(["--experiment", str(exp), "--seeds", "0", "1", "--no-progress"])
    assert code == 0 and "training 2 run(s) on Ray, up to 2 at a time" in out
    for seed in SEEDS:
        assert metrics(exp, "CK", "lacmfer", seed)["history"] == metrics(experiment[0], "CK", "lacmfer", seed)["history"]

    shutil.rmtree(exp / "final")
    cfg = load_config(exp / "best" / "CK.yaml").with_values({"seed": 1})
    run = FinalRun("CK", "lacmfer", 1, cfg, exp / "final" / "CK" / "lacmfer" / "seed1")
    (result,) = run_on_ray([run], retries=1, train=crash_worker_at_second_evaluation_once)
    assert result.status == "completed" and result.resumed_at == [INTERVAL]
    assert result.history == metrics(experiment[0], "CK", "lacmfer", 1)["history"]


def refuse_as_bad_input(run: FinalRun, **kwargs) -> dict:
    """A Ray task body that finds bad input only where it trains (each attempt leaves a file in the run's folder)."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / f"attempt-{os.getpid()}-{time.monotonic_ns()}").touch()
    raise UserError(f"{run.config.data.root / 'CK.txt'}:3: label '9' is not a class id 0..6")


def test_bad_input_found_in_a_ray_worker_is_one_line_and_exit_2(ray_session, synth_tiny, tmp_path, monkeypatch,
                                                                 capsys):
    """A UserError raised in every run's worker ends final training as bad input found before Ray
    does (`error: <file>: ...`, exit 2), not as N anonymous FAILED runs (exit 1), and is not
    retried (it would fail alike). Mutations: the task raising it again (two attempts under
    retries=1); the driver reporting it as an anonymous failure (`user_error` False)."""
    from search import final_training

    exp = make_experiment(tmp_path, synth_tiny, targets=("CK",))
    cfg = load_config(exp / "best" / "CK.yaml")
    run = FinalRun("CK", "lacmfer", 0, cfg, exp / "final" / "CK" / "lacmfer" / "seed0")
    (result,) = final_training.run_on_ray([run], retries=1, train=refuse_as_bad_input)
    message = f"{cfg.data.root / 'CK.txt'}:3: label '9' is not a class id 0..6"
    assert (result.status, result.user_error, result.error) == ("failed", True, message)
    assert len(list(run.run_dir.glob("attempt-*"))) == 1

    real = final_training.run_on_ray
    monkeypatch.setattr(final_training, "run_on_ray",
                        lambda runs, **kwargs: real(runs, **{**kwargs, "train": refuse_as_bad_input}))
    with pytest.raises(SystemExit) as exit_info:
        run_main(["--experiment", str(exp), "--seeds", "0", "1", "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: {message}\n"  # both runs failed alike: one line


def test_final_training_joins_ray_with_the_configs_runtime_env(synth_tiny, tmp_path, monkeypatch):
    """Final training joins Ray through the search's connect path, with `cluster.runtime_env`:
    worker nodes without a checkout import the runs' code from it.

    Catches: `run_on_ray` joining Ray without the runtime_env (as it did before issue 27).
    """
    from search import final_training

    class Joined(Exception):
        pass

    seen = {}

    def record_join(address, **options):
        seen.update(options, address=address)
        raise Joined

    monkeypatch.setattr("search.cluster.connect_ray", record_join)
    # As on a fresh command line: another test's Ray session in this process would be joined as is.
    monkeypatch.setattr(final_training.ray, "is_initialized", lambda: False)
    env = {"env_vars": {"LACMFER_PROBE": "1"}}
    cfg = tiny_config(synth_tiny, cluster={"runtime_env": env})
    run = FinalRun("CK", "lacmfer", 0, cfg, tmp_path / "run")
    with pytest.raises(Joined):
        final_training.run_on_ray([run], address="127.0.0.1:6379")
    assert seen["runtime_env"] == env and seen["address"] == "127.0.0.1:6379"
