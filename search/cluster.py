"""Getting a Ray to search on: connecting, the local Ray's door, and a per-node preflight.

`connect` joins a cluster (`--address` or `RAY_ADDRESS`) or starts a local Ray that only
this process and its children can use (a fresh token; see `trainables.ray_session`), with
the config's runtime environment.

`preflight` runs one small Ray task on every alive node before the first trial, so a node
without the code, the data or a writable cache fails the search up front, named, instead
of failing its trials one by one in Ray's logs.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from lacmfer.config import ExperimentConfig
from lacmfer.errors import UserError
from trainables.ray_session import connect_ray

# Ray reads these when a Tuner runs; they are set only around a search (run_search), so
# importing this module changes nothing for other Ray users.
RAY_ENVIRONMENT = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # see search.tuner.run_config
    # Every evaluation checkpoints (ASHA, failures and resume need it); Ray would warn each time.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # Tune's newer console output prints a table and a path for every Tuner even at verbose 0
    # (Ray 2.60), one per split; the older one is silent there, leaving the driver's progress line.
    "RAY_AIR_NEW_OUTPUT": "0",
}

#: What a trial imports: a node that cannot import these cannot run a trial.
TRIAL_MODULES = ("lacmfer.run.trainer", "trainables.lacmfer_trainable")

PREFLIGHT_TIMEOUT_S = 300.0  # a node that cannot start one worker in this time is as good as lost


@contextlib.contextmanager
def ray_environment(values: dict[str, str] = RAY_ENVIRONMENT) -> Iterator[None]:
    """Set `values` (default RAY_ENVIRONMENT) where the user has not, for the duration of a search."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def connect(address: str | None, runtime_env: dict[str, Any] | None = None) -> None:
    """Join the Ray cluster at `address` (or RAY_ADDRESS), else (or for "local") start a local one.

    `runtime_env` (config `cluster.runtime_env`) is the job's Ray runtime environment,
    e.g. `{"working_dir": ".", "pip": [...]}`, so worker nodes need no checkout.
    """
    if ray.is_initialized():  # e.g. a test that declared logical GPUs itself
        return
    options: dict[str, Any] = {"logging_level": "WARNING"}
    if runtime_env:
        options["runtime_env"] = _checked_runtime_env(runtime_env)
    connect_ray(address, **options)


def _checked_runtime_env(runtime_env: dict[str, Any]) -> dict[str, Any]:
    from ray.runtime_env import RuntimeEnv

    try:
        RuntimeEnv(**runtime_env)
    except (TypeError, ValueError) as err:
        raise UserError(f"cluster.runtime_env: {err}") from None
    return runtime_env


def concurrent_slots(cfg: ExperimentConfig) -> int:
    """How many trials fit at once; a trial that can never be placed is a clear error.

    Ray would otherwise keep such a trial PENDING forever (e.g. a GPU asked of a
    cluster that declares none).
    """
    cpu, gpu = cfg.resources.cpu, cfg.resources.gpu
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    total_gpu = sum(n.get("GPU", 0.0) for n in nodes)
    if gpu > 0 and total_gpu == 0:
        raise UserError(
            f"resources.gpu: each trial asks for {gpu} GPU but the Ray cluster has no GPU "
            "(set resources.gpu: 0 or --gpus-per-trial 0 to train on CPUs)"
        )
    per_node = [
        min(math.floor(n.get("CPU", 0.0) / cpu + 1e-9), math.floor(n.get("GPU", 0.0) / gpu + 1e-9) if gpu else 10**9)
        for n in nodes
    ]
    slots = sum(per_node)
    if slots == 0:
        biggest = max(nodes, key=lambda n: n.get("CPU", 0.0), default={})
        raise UserError(
            f"resources: a trial needs cpu {cpu}, gpu {gpu} but no Ray node has that much "
            f"(largest node: cpu {biggest.get('CPU', 0)}, gpu {biggest.get('GPU', 0)})"
        )
    return slots


# ---------------------------------------------------------------- preflight


def node_problems(data_roots: list[str], cache_dir: str, plugins: Sequence[str] = ()) -> list[str]:
    """What keeps this node from running a trial: imports (the config's plugins too), data
    roots, the cache folder.

    Runs on every node as a Ray task (see `preflight`); also callable locally.
    """
    problems = []
    for module in (*TRIAL_MODULES, *plugins):
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 -- any import failure means no trial can run here
            problems.append(f"cannot import {module} ({type(err).__name__}: {err})")
    for root in data_roots:
        try:
            os.listdir(root)
        except OSError as err:
            problems.append(f"data root {root} is not readable ({err.strerror})")
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir):
            pass
    except OSError as err:
        problems.append(f"cache folder {cache_dir} is not writable ({err.strerror})")
    return problems


def _data_roots(cfg: ExperimentConfig) -> list[str]:
    roots = {str(cfg.data.root)}
    roots |= {str(lists.root) for lists in cfg.data.lists.values() if lists.root is not None}
    return sorted(roots)


def preflight(cfg: ExperimentConfig) -> None:
    """Check every alive node before the first trial; a UserError names each node that fails."""
    check = ray.remote(num_cpus=0, max_retries=0)(node_problems)
    pending = {}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        name = f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]})"
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ref = check.options(scheduling_strategy=strategy).remote(
            _data_roots(cfg), str(cfg.data.resolved_cache_dir), cfg.plugins)
        pending[ref] = name
    ready, late = ray.wait(list(pending), num_returns=len(pending), timeout=PREFLIGHT_TIMEOUT_S)
    failures = [f"{pending[ref]} did not run the check within {PREFLIGHT_TIMEOUT_S:.0f} s" for ref in late]
    for ref in ready:
        try:
            problems = ray.get(ref)
        except ray.exceptions.RayError as err:  # e.g. the worker cannot even unpickle this module's code
            problems = [str(err).strip().splitlines()[-1]]
        failures += [f"{pending[ref]}: {problem}" for problem in problems]
    if failures:
        raise UserError("preflight: " + "; ".join(sorted(failures)))
