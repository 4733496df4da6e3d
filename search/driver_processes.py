"""Jobs run at once, each in a driver process of its own: how every split is in flight at once.

Why processes (the design of `search.driver`): each split keeps its own Tuner, Optuna
study, ASHA rungs and folder, exactly as when splits ran in turn, so results, resume,
export and the check that Optuna holds what Tune recorded stay per split. Tune's driver
is not thread-safe (one Tuner per thread breaks), and one Tuner for every split would
need a searcher and a scheduler that dispatch by split and one Tune experiment holding
every split, which breaks the per-split layout, rounds and `Tuner.restore`. A process per
split has none of that: the splits share only the Ray cluster, whose scheduler hands
each free slot to whichever split has a trial waiting. The cost: a process per split
(spawn, import Ray, join the cluster; no torch, which only the trial workers import:
about 0.2 GiB and 1.5 CPU-seconds of imports each, `bench/bench_driver_imports.py`), paid
once per search.

- A job that raises, or whose process dies, ends with its error; the others go on.
- Ctrl-C reaches this process only (each child leads a process group of its own) and is
  passed on once to every child, so each Tuner stops the way it would alone; a second
  Ctrl-C in a child would abort its Tuner without saving.
- A child dies with this process (Linux: the parent-death signal), so a killed driver
  leaves no split driving on without the experiment's lock.
- Children are spawned, not forked: this process already holds Ray's threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar

T = TypeVar("T")

PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class JobEnd(Generic[T]):
    """What a job returned, or why it did not (`error`)."""

    value: T | None = None
    error: str | None = None


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no parent-death signal
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _child(job: Callable[[], T], answer: Connection, parent: int) -> None:
    _die_with_parent(parent)
    os.setpgid(0, 0)  # Ctrl-C reaches the parent only, which passes it on once
    try:
        end = JobEnd(value=job())
    except BaseException as err:  # noqa: BLE001 -- any end of a job is reported, the others go on
        end = JobEnd(error=f"{type(err).__name__}: {err}")
    answer.send(end)
    answer.close()


@contextlib.contextmanager
def _passing_on_interrupts(processes: list[multiprocessing.Process]) -> Iterator[None]:
    def pass_on(signum: int, _frame: Any) -> None:
        print("interrupted: stopping every split (continue with --resume)", flush=True)
        for process in processes:
            if process.pid is not None and process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, pass_on)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_in_processes(jobs: Mapping[str, Callable[[], T]], on_end: Callable[[str, JobEnd[T]], None] = lambda n, e: None,
                     on_tick: Callable[[], None] = lambda: None, tick_s: float = 1.0) -> dict[str, JobEnd[T]]:
    """Run every job (a picklable callable) at once, each in a spawned process; wait for all.

    `on_end(name, end)` is called in this process as each job ends, in the order they end;
    `on_tick()` about every `tick_s` while any runs (the search's final phase starts a split's
    final training, and collects it, from there). Must be called from the main thread (it
    handles SIGINT while it waits).
    """
    context = multiprocessing.get_context("spawn")
    processes: dict[str, multiprocessing.Process] = {}
    answers: dict[Connection, str] = {}
    ends: dict[str, JobEnd[T]] = {}
    started: list[multiprocessing.Process] = []  # what an interrupt is passed on to
    with _passing_on_interrupts(started):
        for name, job in jobs.items():
            receive, send = context.Pipe(duplex=False)
            process = context.Process(target=_child, args=(job, send, os.getpid()), name=f"driver-{name}")
            process.start()
            send.close()  # only the child writes: its end closing means it ended
            processes[name] = process
            started.append(process)
            answers[receive] = name
        while answers:
            for receive in wait(list(answers), timeout=tick_s):  # retried after a signal (PEP 475)
                name = answers.pop(receive)
                ends[name] = _end(processes[name], receive)
                on_end(name, ends[name])
            on_tick()
    return {name: ends[name] for name in jobs}


def _end(process: multiprocessing.Process, receive: Connection) -> JobEnd:
    try:
        end = receive.recv()
    except EOFError:  # died without answering
        end = None
    process.join()
    return end if end is not None else JobEnd(error=f"its driver process ended with exit code {process.exitcode}")
