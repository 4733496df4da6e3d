"""Ray for the search: the local Ray's token, joining a real token cluster, the preflight."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import ray
from ray import tune

from lacmfer.errors import UserError
from search import cluster
from tests.conftest import REPO
from tests.test_search import save_yaml, search_config


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Ray's address and auth settings (tests set some)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_"))}
    return {**env, "PYTHONPATH": str(REPO), **extra}


# A driver that starts the search's local Ray and keeps it until its stdin closes.
LOCAL_DRIVER = """
import os, sys, ray
from search.cluster import connect
connect(None, {"env_vars": {"LACMFER_PROBE": "via-runtime-env"}})
probe = ray.get(ray.remote(lambda: os.environ.get("LACMFER_PROBE")).remote())
print(ray.get_runtime_context().gcs_address, os.environ.get("RAY_AUTH_TOKEN"), probe, flush=True)
sys.stdin.read()
"""

JOIN = "import ray; ray.init(address={!r}, logging_level='ERROR'); print('joined', flush=True)"


def test_local_ray_admits_only_holders_of_its_token(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    # Ray's record of "the current cluster" names a dead address: a plain ray.init() would
    # try to join it (and hang); the search's own Ray must ignore it. A short folder:
    # Ray's socket paths under it must stay under 108 characters.
    ray_tmp = Path(tempfile.mkdtemp(prefix="lacmfer-rt-", dir="/tmp"))
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    env = clean_env(HOME=str(home), RAY_TMPDIR=str(ray_tmp))
    driver = subprocess.Popen([sys.executable, "-c", LOCAL_DRIVER], cwd=REPO, env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        ready, _, _ = select.select([driver.stdout], [], [], 300)
        assert ready, "the driver's local Ray did not start (did it try to join the recorded cluster?)"
        gcs_address, token, probe = driver.stdout.readline().split()
        assert probe == "via-runtime-env"  # cluster.runtime_env reaches the tasks
        # Someone else on the network, with Ray's usual client settings: refused.
        outsider = subprocess.run([sys.executable, "-c", JOIN.format(gcs_address)], env=clean_env(RAY_AUTH_MODE="disabled"),
                                  capture_output=True, text=True, timeout=300)
        assert outsider.returncode != 0 and "joined" not in outsider.stdout
        # The same client with the token gets in: the refusal above was the token's doing.
        holder = subprocess.run([sys.executable, "-c", JOIN.format(gcs_address)],
                                env=clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token),
                                capture_output=True, text=True, timeout=300)
        assert holder.returncode == 0 and "joined" in holder.stdout, holder.stderr[-2000:]
    finally:
        driver.stdin.close()
        try:
            driver.wait(timeout=120)
        finally:
            driver.kill()
            shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not (home / ".ray" / "auth_token").exists()  # the token lived in memory only


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_group(process: subprocess.Popen) -> None:
    """Kill the `ray start --block` the test started and every process it started (not `ray stop`).

    No grace: the head holds nothing the test needs, and Ray's own shutdown on SIGTERM
    takes about 30 s here.
    """
    group = [process.pid] + [p.pid for p in psutil.Process(process.pid).children(recursive=True)]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    survivors = [p for p in map(_process, group) if p]  # any that left the group
    for p in survivors:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(survivors, timeout=30)


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def test_tune_joins_a_head_with_token_authentication(synth_tiny, tmp_path):
    # A short folder: Ray's socket paths under --temp-dir must stay under 108 characters.
    base = Path(tempfile.mkdtemp(prefix="lacmfer-head-", dir="/tmp"))
    token_file = base / "home" / ".ray" / "auth_token"
    try:
        generated = subprocess.run(["ray", "get-auth-token", "--generate"], env=clean_env(HOME=str(base / "home")),
                                   capture_output=True, text=True, timeout=120)
        assert generated.returncode == 0 and token_file.exists(), generated.stderr
        auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}
        port = free_port()
        # Its own --temp-dir: the head records itself as "the current cluster" there, not
        # in /tmp/ray, so no other plain ray.init() on this machine joins it.
        head = subprocess.Popen(
            ["ray", "start", "--head", "--block", "--port", str(port), "--node-ip-address", "127.0.0.1",
             "--temp-dir", str(base / "ray"), "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard", "false",
             "--object-store-memory", str(100 * 1024**2), "--disable-usage-stats"],
            cwd=REPO, env=clean_env(**auth), start_new_session=True, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            started = []
            for line in head.stdout:  # blocks until Ray says it runs, or ends if it died
                started.append(line)
                if "Ray runtime started" in line:
                    break
            assert head.poll() is None, "".join(started)[-3000:]
            cfg = search_config(synth_tiny, tmp_path, "joined", data={"targets": ["CK"]},
                                schedule={"steps": 4, "lr_decay_steps": 4},
                                search={"num_samples": 2, "max_concurrent": 2})
            # Without the token the head refuses: one line, exit 2, no traceback.
            refused = subprocess.run(
                [sys.executable, str(REPO / "tune.py"), "--config", str(save_yaml(cfg, tmp_path)), "--name", "refused",
                 "--address", f"127.0.0.1:{port}"],
                cwd=tmp_path, env=clean_env(RAY_AUTH_MODE="disabled"), capture_output=True, text=True, timeout=300,
            )
            assert refused.returncode == 2, refused.stderr[-3000:]
            assert "cannot join the Ray cluster" in refused.stderr and "Traceback" not in refused.stderr
            proc = subprocess.run(
                [sys.executable, str(REPO / "tune.py"), "--config", str(save_yaml(cfg, tmp_path)),
                 "--address", f"127.0.0.1:{port}"],
                cwd=tmp_path, env=clean_env(**auth), capture_output=True, text=True, timeout=500,
            )
        finally:
            stop_process_group(head)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert len(pq.read_table(cfg.experiment_dir / "trials.parquet")) == 2
        default_record = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        assert not (default_record.exists() and default_record.read_text().strip().endswith(f":{port}"))
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def local_ray():
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
             object_store_memory=80 * 1024**2)
    yield
    ray.shutdown()


def test_preflight_names_the_node_and_what_fails(synth_tiny, tmp_path, local_ray):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    cfg = search_config(synth_tiny, tmp_path, "pre", data={"root": str(tmp_path / "missing"), "cache_dir": str(blocker)})
    with pytest.raises(UserError) as err:
        cluster.preflight(cfg)
    message = str(err.value)
    node = ray.nodes()[0]
    assert message.startswith(f"preflight: node {node['NodeManagerAddress']} ({node['NodeID'][:8]}): ")
    assert f"data root {tmp_path / 'missing'} is not readable" in message
    assert f"cache folder {blocker} is not writable" in message
    assert "\n" not in message
    cluster.preflight(search_config(synth_tiny, tmp_path, "ok"))  # a good config passes


def test_node_check_reports_a_missing_module(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "TRIAL_MODULES", ("lacmfer.run.trainer", "no_such_module_on_this_node"))
    assert cluster.node_problems([str(tmp_path)], str(tmp_path / "cache")) == [
        "cannot import no_such_module_on_this_node (ModuleNotFoundError: No module named 'no_such_module_on_this_node')"
    ]


def test_runtime_env_is_checked_before_ray_starts():
    with pytest.raises(UserError, match=r"cluster.runtime_env: runtime_env\['env_vars'\] must be of type"):
        cluster.connect("127.0.0.1:1", {"env_vars": {"A": 1}})


@pytest.mark.parametrize("given", ["--address", "RAY_ADDRESS"])
def test_an_address_nothing_answers_at_is_refused_before_data_preparation(synth_tiny, tmp_path, capsys,
                                                                          monkeypatch, given):
    import tune

    port = free_port()  # bound and released: nothing listens there
    cfg = search_config(synth_tiny, tmp_path / "results", "far", data={"cache_dir": str(tmp_path / "cache")})
    argv = ["--config", str(save_yaml(cfg, tmp_path))]
    if given == "--address":
        argv += ["--address", f"127.0.0.1:{port}"]
    else:
        monkeypatch.setenv("RAY_ADDRESS", f"ray://127.0.0.1:{port}")
    # Ray itself would retry this address forever.
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray was asked to join"))
    with pytest.raises(SystemExit) as exit_info:
        tune.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {given} ") and f"nothing answers at 127.0.0.1:{port} (Connection refused)" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def test_final_training_refuses_an_address_nothing_answers_at(synth_tiny, tmp_path, capsys, monkeypatch):
    import train

    port = free_port()
    cfg = search_config(synth_tiny, tmp_path / "results", "far")
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray was asked to join"))
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--config", str(save_yaml(cfg, tmp_path)), "--seeds", "0", "--address", f"127.0.0.1:{port}",
                    "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == (f"error: --address 127.0.0.1:{port}: nothing answers at 127.0.0.1:{port} (Connection refused); "
                   "is the head running (ray start --head)? Check the address, and that its port is open to "
                   "this machine\n")


class KillTheNodeAtTheFirstCheckpoint(tune.Callback):
    """At the search's first checkpoint, asks the test (a file in `folder`: Tune pickles its
    callbacks) to kill the node that trial runs on, and returns once the node is dead (its
    raylet and every process on it).

    Tune calls `on_checkpoint` before it sends the trial its next `train` call, and a
    function trial waits inside `tune.report` until that call comes: the trial cannot train
    past its first checkpoint before its node dies, however fast or slow the machine.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        asked = self.folder / "asked"
        if asked.exists():
            return
        asked.write_text(f"{trial.trial_id} {trial.last_result['pid']}")
        deadline = time.monotonic() + 60
        while not (self.folder / "killed").exists() and time.monotonic() < deadline:
            time.sleep(0.02)


def test_a_lost_node_s_trial_resumes_from_its_checkpoint_on_another_node(synth_tiny, tmp_path):
    """A worker node killed (raylet and workers, no grace) while its trial runs: the search
    finishes, and that trial goes on from its checkpoint in a worker on the other node.

    Fails if a trial retried after a failure starts over instead of restoring its
    checkpoint: e.g. `Run.resume` (lacmfer/run/lifecycle.py) not loading the trainer's state, or the
    trainable not calling it; also if Tune gives up on the trial (search.max_failures).
    """
    from ray.cluster_utils import Cluster

    from search.driver import run_search

    os.environ["RAY_AUTH_MODE"] = "disabled"
    # The GCS declares a node dead after 3 missed health checks 100 ms apart (Ray's
    # defaults take about 15 s); only then does Tune learn that the trial's actor died.
    fast_death = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 100,
                  "health_check_timeout_ms": 100, "health_check_failure_threshold": 3}
    # A head that runs no trial and two worker nodes with room for one trial each: the
    # survivor is where the trial can go on.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": fast_death})
    folder = tmp_path / "kill"
    folder.mkdir()
    killed, search_over = [], threading.Event()

    def kill_the_node_when_asked() -> None:
        while not (folder / "asked").exists():
            if search_over.wait(0.02):
                return
        # A trial's worker process descends from the raylet of its node.
        ancestors = {p.pid for p in psutil.Process(int((folder / "asked").read_text().split()[1])).parents()}
        [doomed] = [n for n in workers if n.all_processes["raylet"][0].process.pid in ancestors]
        on_the_node = psutil.Process(doomed.all_processes["raylet"][0].process.pid).children(recursive=True)
        cluster.remove_node(doomed, allow_graceful=False)
        # Its workers too, at once: a worker outlives its raylet by up to a second, long
        # enough to take the trial's next `train` call from the driver.
        for process in on_the_node:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(on_the_node, timeout=30)
        killed.append(doomed)
        (folder / "killed").touch()

    cfg = search_config(synth_tiny, tmp_path, "lost-node", data={"targets": ["CK"]},
                        search={"num_samples": 1, "checkpoint_every": 1, "max_failures": 1,
                                "asha": {"grace_period": 4}})
    killer = threading.Thread(target=kill_the_node_when_asked, daemon=True)
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        killer.start()
        ray.init(address=cluster.address, log_to_driver=False)
        [outcome] = run_search(cfg, callbacks=[KillTheNodeAtTheFirstCheckpoint(folder)])
    finally:
        search_over.set()
        if killer.is_alive():
            killer.join()
        ray.shutdown()
        cluster.shutdown()
    assert killed, "no node was killed"
    assert outcome.finished and outcome.terminated == 1 and outcome.errors == 0
    trial_id, first_pid = (folder / "asked").read_text().split()
    rows = [json.loads(line) for line in (cfg.experiment_dir / "CK" / trial_id / "result.json").read_text().splitlines()]
    # Every evaluation once, its steps in order: the trial did not start over after the kill.
    assert [(r["training_iteration"], r["step"]) for r in rows] == [(1, 2), (2, 4), (3, 6), (4, 8)]
    assert [r["iterations_since_restore"] for r in rows] == [1, 1, 2, 3]  # restored after the first
    resumed_in = {r["pid"] for r in rows[1:]}
    assert rows[0]["pid"] == int(first_pid) and len(resumed_in) == 1 and int(first_pid) not in resumed_in
