"""The final-training Ray task: one `lacmfer.run.final_run.FinalRun` on the resources Ray gave it.

`search.final_training.run_on_ray` sends `final_task` to Ray once per run. The task
sets the run's torch threads and its device from what Ray assigned, then trains with
`lacmfer.run.final_run.train_run`, which continues from the run's last evaluation when it
finds one: Ray's retries (a crashed worker or an exception) resume a run instead of
restarting it. Bad input (a `UserError`) is not retried: it is the task's result.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from lacmfer.errors import UserError
from lacmfer.plugins import import_plugins
from lacmfer.run.final_run import FinalResult, FinalRun, failed_result, train_run
from lacmfer.run.lifecycle import out_of_memory_as_error, with_threads
from trainables.ray_session import ray_placement


def final_task(run: FinalRun, train: Callable[..., FinalResult] = train_run) -> FinalResult:
    """Inside the task: the threads and the device of the resources Ray gave it, then `train(run, placement=...)`.

    `train` is `train_run` (tests pass one that crashes its worker once); its result, what
    `metrics.json` holds, is the task's result.
    """
    started = time.time()
    # The run's config arrives built, not validated here: the worker imports its plugins itself.
    import_plugins(run.config.plugins, source=f"final run {run.name}")
    config = with_threads(run.config)
    run = dataclasses.replace(run, config=config)
    placement = ray_placement(config.resources.device)
    try:
        with out_of_memory_as_error(placement):
            result = train(run, placement=placement)
    except UserError as err:  # bad input fails again on a retry: returned, since Ray retries what is raised
        result = failed_result(run, str(err), user_error=True)
    return dataclasses.replace(result, started_at=started, ended_at=time.time())
