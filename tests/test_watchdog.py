"""A run that stops making progress is ended and retried from its checkpoint (lacmfer/run/watchdog.py)."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from lacmfer.config import EvalConfig
from lacmfer.run.final_run import FinalRun, train_run
from lacmfer.run.watchdog import HUNG_EXIT_CODE, HungRunError, hang_limit
from tests.conftest import REPO, tiny_config


def test_the_limit_follows_the_runs_own_intervals():
    """Catches: the factor or the floor dropped, or a fixed timeout ignored."""
    limit = hang_limit(EvalConfig(hang_factor=5.0, hang_floor_s=60.0))
    assert limit(None) == 240.0  # before the first evaluation: 4 × the floor
    assert limit(3.0) == 60.0 and limit(100.0) == 500.0
    assert hang_limit(EvalConfig(hang_timeout_s=7.0))(100.0) == 7.0


def test_a_hung_run_is_ended_with_its_reason_and_resumes_from_its_checkpoint(synth_tiny, tmp_path, monkeypatch):
    """The plugin method blocks at step 12 (after the checkpoint at step 10): the watchdog ends the run
    with "no report for N s"; run again, as a retry does, it continues from step 10 and finishes.

    Catches: no watchdog (the test hangs until pytest's timeout), the exception raised in the
    watchdog's own thread instead of the run's, or the retry starting over (resumed_at empty).
    """
    import tests.hanging_method  # noqa: F401  (registers `hangs_once`, as `plugins:` would)

    monkeypatch.setenv("LACMFER_HANG_FLAG", str(tmp_path / "hung"))
    cfg = tiny_config(synth_tiny, loss={"adaptation": "hangs_once"}, eval={"interval": 10, "hang_timeout_s": 1.5})
    run = FinalRun("CK", "hangs_once", 0, cfg, tmp_path / "run")
    started = time.monotonic()
    with pytest.raises(HungRunError, match=r"CK/hangs_once/seed0: no report for [0-9]+ s \(limit 1.5 s; slowest interval so far "):
        train_run(run)
    assert time.monotonic() - started < 60
    result = train_run(run)
    assert result.status == "completed" and result.resumed_at == [10] and result.steps == 20


def test_a_run_blocked_outside_python_ends_its_process():
    """A thread blocked in C never sees the exception: after the grace period the process exits
    with HUNG_EXIT_CODE, which Ray takes for a lost worker and retries.

    Catches: a watchdog that only raises, leaving such a run holding its slot forever.
    """
    code = (
        "import threading\n"
        "from lacmfer.run.watchdog import Watchdog\n"
        "with Watchdog(lambda slowest: 0.5, 'blocked', grace_s=0.5, poll_s=0.1):\n"
        "    threading.Event().wait()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == HUNG_EXIT_CODE
    assert re.search(r"blocked: no report for \d+ s \(limit 0.5 s; before its first evaluation\); the run's "
                     r"thread is blocked outside Python", proc.stderr), proc.stderr
