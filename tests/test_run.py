"""The run lifecycle (`lacmfer.run.lifecycle`) in this process: checkpoint cadence, exact resume, divergence.

Ray's adapters of it are tested through real Ray workers in tests/test_trainable.py
(search trials) and tests/test_final_training.py (final training).
"""

from __future__ import annotations

import math
import shutil

import pytest

from lacmfer.data.loaders import load_split_data
from lacmfer.names import RunStatus
from lacmfer.run.lifecycle import STATE_FILE, Keeping, Run
from tests.conftest import tiny_config

STEPS, INTERVAL = 6, 2  # three evaluations


@pytest.fixture(scope="module")
def setup(synth_tiny):
    cfg = tiny_config(synth_tiny, schedule={"steps": STEPS, "lr": 0.01, "lr_decay_steps": 20},
                      eval={"interval": INTERVAL})
    return cfg, load_split_data(cfg, "CK", progress=False)


def test_a_run_resumed_from_its_checkpoint_ends_as_an_uninterrupted_one(setup, tmp_path):
    cfg, data = setup
    straight = Run(cfg, "CK", tmp_path / "straight", {}, Keeping(checkpoint_every=2), data=data)
    kept = tmp_path / "kept"
    evaluations = []
    for evaluation in straight.evaluations():
        evaluations.append(evaluation)
        if evaluation.checkpoint is not None and not kept.exists():  # the folder lives until the next step
            shutil.copytree(evaluation.checkpoint, kept)
    # A checkpoint every 2nd evaluation and at the last one, handed over in a temporary folder.
    assert [e.checkpoint is not None for e in evaluations] == [False, True, True]
    assert [e.final for e in evaluations] == [False, False, True] and not any(e.diverged for e in evaluations)
    assert not evaluations[1].checkpoint.exists()
    ended = straight.result()
    assert ended.status is RunStatus.COMPLETED
    assert [m["step"] for m in ended.history] == [2.0, 4.0, 6.0]

    resumed = Run(cfg, "CK", tmp_path / "resumed", {}, Keeping(checkpoint_every=2), data=data)
    resumed.resume(kept)
    assert resumed.status is RunStatus.STOPPED_EARLY  # continued from step 4 of 6: not over yet
    assert [e.metrics["step"] for e in resumed.evaluations()] == [6.0]
    again = resumed.result()
    assert again.status is RunStatus.COMPLETED and again.resumed_at == [4] and again.history == ended.history
    best = max(ended.history, key=lambda m: m["objective"])
    assert again.best("objective") == ended.best("objective") == best


def test_a_run_resumed_from_the_state_of_its_last_evaluation_is_completed(setup, tmp_path):
    """A final run killed between its last checkpoint and metrics.json resumes with nothing to train.

    Catches: `resume` not restoring the last evaluation (the run would end "stopped early")."""
    cfg, data = setup
    for _ in Run(cfg, "CK", tmp_path / "first", {}, Keeping(state_dir=tmp_path), data=data).evaluations():
        pass  # its state, kept in tmp_path, is the one at the schedule's last evaluation
    again = Run(cfg, "CK", tmp_path / "again", {}, Keeping(state_dir=tmp_path), data=data)
    again.resume(tmp_path)
    assert list(again.evaluations()) == [] and again.status is RunStatus.COMPLETED


def test_a_run_keeping_its_state_rewrites_it_and_saves_the_selected_and_last_weights(setup, tmp_path):
    cfg, data = setup
    run = Run(cfg, "CK", tmp_path, {}, Keeping(state_dir=tmp_path, save_weights=True), data=data)
    for evaluation in run.evaluations():
        assert evaluation.checkpoint == tmp_path and (tmp_path / STATE_FILE).exists()
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "checkpoint_selected.pt").exists()


def test_a_diverging_run_ends_at_once_without_a_checkpoint(setup, tmp_path):
    cfg, data = setup
    run = Run(cfg.with_values({"schedule.lr": 1e6}), "CK", tmp_path, {},
              Keeping(state_dir=tmp_path, save_weights=True), data=data)
    (evaluation,) = list(run.evaluations())
    assert evaluation.diverged and evaluation.checkpoint is None and math.isnan(evaluation.metrics["objective"])
    ended = run.result()
    assert ended.status is RunStatus.DIVERGED and ended.best("objective") is None and ended.steps < STEPS
    assert not (tmp_path / STATE_FILE).exists() and not (tmp_path / "checkpoint.pt").exists()
