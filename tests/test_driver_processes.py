"""Split drivers in processes of their own: one that fails or dies does not stop the others,
and Ctrl-C reaches each of them once, from the top driver."""

from __future__ import annotations

import ast
import functools
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from search.driver_processes import JobEnd, run_in_processes
from tests.conftest import REPO


def test_a_job_that_raises_or_dies_ends_alone():
    ends = run_in_processes({
        "ok": functools.partial(math.sqrt, 16.0),
        "raises": functools.partial(math.sqrt, -1.0),
        "dies": functools.partial(os._exit, 3),  # as a killed driver process: no answer at all
        "also ok": functools.partial(math.hypot, 3.0, 4.0),
    })
    assert ends["ok"] == JobEnd(value=4.0) and ends["also ok"] == JobEnd(value=5.0)
    assert ends["raises"] == JobEnd(error="ValueError: math domain error")
    assert ends["dies"] == JobEnd(error="its driver process ended with exit code 3")


def first_interrupt_sender(ready: Path) -> int | None:
    """A job that waits (at most 30 s) for SIGINT and returns the pid of the process that sent it.

    SIGINT is blocked before `ready` appears, so a signal sent after it stays pending until
    taken here: none is missed, and the sender is that of the first one.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    ready.touch()
    info = signal.sigtimedwait({signal.SIGINT}, 30)
    return None if info is None else info.si_pid


# The top driver: two split drivers that wait for Ctrl-C; prints what each job returned.
TOP_DRIVER = """
import functools, sys
from pathlib import Path
from search.driver_processes import run_in_processes
from tests.test_driver_processes import first_interrupt_sender
folder = Path(sys.argv[1])
ends = run_in_processes({name: functools.partial(first_interrupt_sender, folder / name) for name in ("CK", "JAFFE")})
print({name: end.value for name, end in ends.items()}, flush=True)
"""


def test_ctrl_c_reaches_every_split_driver_from_the_top_driver(tmp_path):
    """Ctrl-C (SIGINT to the terminal's foreground process group: the top driver's) reaches
    every split driver, sent by the top driver, and the top driver waits for them all.

    Fails if the top driver does not pass SIGINT on (the split drivers' Tuners would never
    stop: their jobs end with None), or if a split driver stays in the top driver's process
    group (`os.setpgid` in `search.driver_processes._child`: the terminal's SIGINT reaches it
    first, and the top driver's is a second, which aborts a Tuner without saving).
    """
    top = subprocess.Popen([sys.executable, "-c", TOP_DRIVER, str(tmp_path)], cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / name).exists() for name in ("CK", "JAFFE")):
            assert top.poll() is None and time.monotonic() < deadline, "the split drivers did not start"
            time.sleep(0.05)
        os.killpg(top.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, err = top.communicate(timeout=120)
    finally:
        top.kill()
    assert top.returncode == 0, err[-3000:]  # the top driver itself is not interrupted
    assert "interrupted: stopping every split (continue with --resume)" in out
    assert ast.literal_eval(out.splitlines()[-1]) == {"CK": top.pid, "JAFFE": top.pid}
