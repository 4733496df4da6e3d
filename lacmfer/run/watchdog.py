"""A run that stops making progress is ended: a data-loader deadlock, a stuck collective, a wedged device.

    with Watchdog(limit, name="CK/lacmfer/seed0") as watchdog:
        for metrics in trainer.training_loop():
            watchdog.beat()                  # an evaluation arrived
            with watchdog.suspended():       # the caller's time (a Tune report) is not the run's
                yield metrics

A thread of its own checks once a second how long the run's thread has trained since its
last evaluation. Past `limit(slowest interval so far)` it raises `HungRunError` ("no
report for N s") in that thread, so the run fails as any failed run does: a Tune trial is
recorded as errored with that line and retried from its checkpoint (`search.max_failures`),
a final-training task is retried by Ray. Python delivers such an exception only when the
thread runs Python code again; a thread blocked inside C forever (a lock, a device call)
never does, so after `grace_s` more the process exits (code `HUNG_EXIT_CODE`), which Ray
sees as a lost worker and retries the same way. Nothing here imports Ray.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType

from lacmfer.config import EvalConfig

HUNG_EXIT_CODE = 75


class HungRunError(RuntimeError):
    """A run made no evaluation for longer than its watchdog's limit."""


def hang_limit(eval_cfg: EvalConfig) -> Callable[[float | None], float]:
    """The seconds a run may train without an evaluation, given its slowest interval so far (None
    before its first): `eval.hang_timeout_s` when set, else `eval.hang_factor` × the slowest
    interval, at least `eval.hang_floor_s` (4 × that floor before the first evaluation)."""

    def limit(slowest: float | None) -> float:
        if eval_cfg.hang_timeout_s is not None:
            return eval_cfg.hang_timeout_s
        if slowest is None:
            return 4 * eval_cfg.hang_floor_s
        return max(eval_cfg.hang_floor_s, eval_cfg.hang_factor * slowest)

    return limit


class Watchdog:
    """Ends the thread that entered it (see the module doc) when it trains too long without an evaluation."""

    def __init__(self, limit: Callable[[float | None], float], name: str, grace_s: float = 60.0,
                 poll_s: float = 1.0):
        self.limit, self.name, self.grace_s, self.poll_s = limit, name, grace_s, poll_s
        self.slowest: float | None = None
        self._since = time.monotonic()
        self._training = True
        self._done = threading.Event()
        self._target = threading.get_ident()
        self._thread = threading.Thread(target=self._watch, name=f"watchdog {name}", daemon=True)

    def __enter__(self) -> Watchdog:
        self._target = threading.get_ident()
        self._since = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._done.set()

    def beat(self) -> None:
        """An evaluation arrived: the interval since the last one counts towards the limit's base."""
        now = time.monotonic()
        if self._training:
            self.slowest = max(self.slowest or 0.0, now - self._since)
        self._since = now

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """Time spent outside the run (its caller reporting, waiting on Tune) does not count."""
        self._training = False
        try:
            yield
        finally:
            self._since = time.monotonic()
            self._training = True

    def _watch(self) -> None:
        while not self._done.wait(self.poll_s):
            elapsed, limit = time.monotonic() - self._since, self.limit(self.slowest)
            if not self._training or elapsed <= limit:
                continue
            message = (f"{self.name}: no report for {elapsed:.0f} s (limit {limit:g} s; "
                       + (f"slowest interval so far {self.slowest:.1f} s)" if self.slowest is not None
                          else "before its first evaluation)"))
            _raise_in_thread(self._target, message)
            if self._done.wait(self.grace_s):
                return
            print(f"{message}; the run's thread is blocked outside Python: ending its process", file=sys.stderr,
                  flush=True)
            os._exit(HUNG_EXIT_CODE)


def _raise_in_thread(thread_id: int, message: str) -> None:
    """Raise `HungRunError(message)` in thread `thread_id` at its next Python instruction."""

    class Hung(HungRunError):
        def __init__(self) -> None:
            super().__init__(message)

    # Shown as lacmfer.run.watchdog.HungRunError in Tune's error.txt and in tracebacks.
    Hung.__name__ = Hung.__qualname__ = HungRunError.__name__
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(Hung))
