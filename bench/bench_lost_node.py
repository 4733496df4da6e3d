"""A worker node lost mid-search: its trial goes on from its last checkpoint on another node.

Not a test: it needs Ray to notice a dead node (seconds to tens of seconds, by its health
checks) while a trial still runs there, so its duration depends on the machine. A local
Ray cluster (`ray.cluster_utils.Cluster`): a head that runs no trial (0 CPUs) and two
worker nodes with room for one trial each; one trial runs at a time. When the first trial
has written its first checkpoint, the node it runs on is killed (its raylet and every
worker on it, no grace); the search must finish with every trial, and the interrupted trial
must have resumed from a checkpoint (a report whose `training_iteration` is ahead of its
`iterations_since_restore`) in another worker process.

    python bench/bench_lost_node.py            # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's lacmfer, not an installed one

from ray import tune


class FlagFirstCheckpoint(tune.Callback):
    """Write the trial id and its worker's pid to `flag` at the first checkpoint of the search
    (a file: Tune pickles callbacks)."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        if not self.flag.exists():
            self.flag.write_text(f"{trial.trial_id} {trial.last_result['pid']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400, help="steps of a full trial (long enough to outlive the kill)")
    args = p.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    from lacmfer.config import config_from_dict
    from lacmfer.data.synth import generate_synthfer
    from search.driver import run_search

    os.environ["RAY_AUTH_MODE"] = "disabled"  # a loopback cluster this process starts and stops
    with tempfile.TemporaryDirectory(prefix="bench-lost-node-") as tmp:
        tmp = Path(tmp)
        generate_synthfer(tmp / "data", scale="tiny", seed=0, progress=False)
        interval = args.steps // 4
        cfg = config_from_dict({
            "data": {"root": str(tmp / "data"), "targets": ["CK"], "image_size": 48, "batch_size": 16,
                     "eval_batch_size": 64, "num_workers": 0},
            "model": {"width": 0.125, "global_blocks": [1, 1], "local_blocks": 1},
            "schedule": {"steps": interval * 4, "lr_decay_steps": interval * 4},
            "eval": {"interval": interval},
            "search": {"num_samples": 2, "max_concurrent": 1, "checkpoint_every": 1, "max_failures": 3,
                       "asha": {"grace_period": 4}},
            "resources": {"cpu": 1, "threads": 1},
            "output": {"results_dir": str(tmp / "results"), "name": "lost-node"},
        })
        # Two worker nodes with room for one trial each, one trial at a time: the other
        # node is where the trial can go on (nodes are added from the main thread only).
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        flag = tmp / "first-checkpoint"
        killed: dict[str, float] = {}

        def kill_the_node_at_the_flag() -> None:
            import psutil

            while not flag.exists():
                time.sleep(0.05)
            # A trial's worker process descends from the raylet of its node.
            ancestors = {p.pid for p in psutil.Process(int(flag.read_text().split()[1])).parents()}
            [doomed] = [n for n in workers if n.all_processes["raylet"][0].process.pid in ancestors]
            cluster.remove_node(doomed, allow_graceful=False)
            killed["at"] = time.time()

        began = time.monotonic()
        try:
            ray.init(address=cluster.address, log_to_driver=False)
            killer = threading.Thread(target=kill_the_node_at_the_flag, daemon=True)
            killer.start()
            [outcome] = run_search(cfg, callbacks=[FlagFirstCheckpoint(flag)])
        finally:
            ray.shutdown()
            cluster.shutdown()
        victim = flag.read_text().split()[0] if flag.exists() else None
        [result] = list((cfg.experiment_dir / "CK").glob(f"{victim}/result.json")) if victim else [None]
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()] if result else []
        resumed = [r for r in rows if r["training_iteration"] > r["iterations_since_restore"]]
        pids = {r["pid"] for r in rows}
        print(f"\nsearch: finished {outcome.finished}, {outcome.terminated} terminated, {outcome.errors} errored; "
              f"{time.monotonic() - began:.0f} s")
        print(f"killed the node of trial {victim} at its first checkpoint: {'yes' if killed else 'no'}")
        print(f"that trial: {len(rows)} reports, iterations {[r['training_iteration'] for r in rows]}, "
              f"{len(pids)} worker process(es); resumed from a checkpoint: {'yes' if resumed else 'NO'}")
        ok = outcome.finished and killed and resumed and len(pids) > 1
        print("lost node: trial continued elsewhere from its checkpoint" if ok else "lost node: NOT as expected")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
