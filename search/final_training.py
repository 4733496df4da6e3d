"""Final training on Ray: every run as one Ray task, for `python train.py` (`run_on_ray`) and for
the search's own final phase (`FinalTasks`, which `search.final_phase` feeds as splits end).

Each task asks for the run config's `resources` (`cpu`, and `gpu`, whose fractions pack
runs on one GPU as in the search), so Ray runs as many at once as the machine or the
cluster holds; the task itself is `trainables.final_training.final_task`. Run folders
must be on storage every node can write (a shared filesystem), like the search's results.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ray

from lacmfer.errors import UserError
from lacmfer.run.final_run import FinalResult, FinalRun, failed_result, train_run
from search.cluster import connect
from trainables.final_training import final_task


@contextlib.contextmanager
def ray_connection(address: str | None, runtime_env: dict[str, Any] | None = None) -> Iterator[None]:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a token-locked local Ray,
    with the config's `cluster.runtime_env` (so worker nodes without a checkout can import
    the runs' code), through the search's own connect path (`search.cluster.connect`);
    shut down what was started."""
    if ray.is_initialized():  # the caller (a test, a notebook) owns the session
        yield
        return
    connect(address, runtime_env)
    try:
        yield
    finally:
        ray.shutdown()


def _check_placeable(runs: Sequence[FinalRun]) -> None:
    """Fail clearly where Ray would keep a task pending forever (a GPU asked of a cluster without one)."""
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    for run in runs:
        cpu, gpu = run.config.resources.cpu, run.config.resources.gpu
        if gpu > gpus or cpu > cpus:
            raise UserError(f"{run.name}: resources cpu {cpu}, gpu {gpu} per run, but the Ray cluster has "
                            f"cpu {cpus:g}, gpu {gpus:g} in all (e.g. --set resources.gpu=0 to train on CPUs)")
    first = runs[0].config.resources
    at_once = min(cpus // first.cpu, gpus // first.gpu if first.gpu else float("inf"), len(runs))
    print(f"training {len(runs)} run(s) on Ray, up to {int(at_once)} at a time "
          f"(cpu {first.cpu:g}, gpu {first.gpu:g} per run)", flush=True)


def run_on_ray(runs: Sequence[FinalRun], *, address: str | None = None, retries: int = 1,
               on_result: Callable[[FinalResult], None] = lambda result: None,
               train: Callable[..., FinalResult] = train_run) -> list[FinalResult]:
    """Train every run as a Ray task; `on_result` sees each result as its run ends.

    Results come back in the order of `runs`. A run still failing after `retries`
    retries gets a `failed` result (nothing written: `--resume` tries it again).
    `train` is what a task calls, as `train(run, placement=...)` (tests pass one that
    crashes its worker once). Ray is joined with the first run's `cluster.runtime_env`
    (the runs of one command share it: one experiment's configs).
    """
    if not runs:
        return []
    with ray_connection(address, runs[0].config.cluster.runtime_env):
        _check_placeable(runs)
        tasks = FinalTasks(retries, on_result, train)
        tasks.submit(runs)
        results = tasks.wait()
    return [results[run.name] for run in runs]


class FinalTasks:
    """Final-training runs as Ray tasks on the cluster this process is connected to: submitted
    as they become due (`submit`), collected as they end (`collect`, `wait`).

    A run still failing after `retries` retries gets a `failed` result (nothing written:
    `--resume` tries it again); `on_result` sees each result as it is collected; `train`
    is what a task calls (see `run_on_ray`).
    """

    def __init__(self, retries: int, on_result: Callable[[FinalResult], None] = lambda result: None,
                 train: Callable[..., FinalResult] = train_run) -> None:
        self.retries, self.on_result, self.train = retries, on_result, train
        self.remote = ray.remote(final_task)
        self.pending: dict[ray.ObjectRef, FinalRun] = {}
        self.results: dict[str, FinalResult] = {}

    def submit(self, runs: Sequence[FinalRun]) -> None:
        for run in runs:
            task = self.remote.options(
                num_cpus=run.config.resources.cpu,
                num_gpus=run.config.resources.gpu,
                max_retries=self.retries,  # a worker that died (a crash, a lost node)
                retry_exceptions=True,  # an exception in the run (e.g. out of memory)
                name=f"final {run.name}",
            )
            self.pending[task.remote(run, self.train)] = run

    def collect(self, until_one: bool = False) -> None:
        """Take in the results of the runs that have ended; `until_one`: wait for one first."""
        if not self.pending:
            return
        if until_one:
            ray.wait(list(self.pending), num_returns=1)
        done, _ = ray.wait(list(self.pending), num_returns=len(self.pending), timeout=0)
        for ref in done:
            run = self.pending.pop(ref)
            try:
                result = ray.get(ref)  # bad input found in the task is a failed result, not retried
            except ray.exceptions.RayError as err:  # a worker or node lost beyond the retries
                result = failed_result(run, str(err).strip().splitlines()[-1])
            self.results[run.name] = result
            self.on_result(result)

    def wait(self) -> dict[str, FinalResult]:
        """Every submitted run's result, by run name, once the last has ended."""
        while self.pending:
            self.collect(until_one=True)
        return self.results
