"""The per-split driver: one Tuner and one Optuna study per target, in turn.

Holds the experiment's lock (one driver per experiment), connects to Ray (local by
default, a cluster with an address; `search.cluster`), checks every node (preflight) and
that a trial can be scheduled at all, runs or resumes each split (a resume may add trials,
as a new round), and checks that every split finished (Ctrl-C makes `Tuner.fit()` return
normally with a partial result).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
from ray import tune
from ray.tune import ExperimentAnalysis

from lacmfer.config import ExperimentConfig, config_text
from lacmfer.errors import UserError
from search.analysis import round_dirs
from search.cluster import concurrent_slots, connect, preflight, ray_environment
from search.storage import Location, experiment_location, local_state_dir, optuna_storage, upload_study_copy
from search.tuner import TUNE_TRIAL_ID, build_tuner, restore_tuner, study_name


@dataclass(frozen=True)
class SplitOutcome:
    target: str
    finished: bool
    trials: int
    terminated: int
    errors: int


def default_max_concurrent(num_samples: int, slots: int) -> int:
    """Trials at once when `search.max_concurrent` is unset: at most ⌊√num_samples⌋, at
    least 1, and no more than fit on the cluster.

    TPE proposes each trial from the results it has; a trial started while c others run
    is proposed without their results. √n at once keeps both the batch width and the
    number of rounds of feedback (n / c) at √n: 4 trials run 2 at a time, 16 run 4, 100
    run 10, however big the cluster is.
    """
    return max(1, min(slots, math.isqrt(num_samples)))


@contextlib.contextmanager
def experiment_lock(exp_dir: Path) -> Iterator[None]:
    """Refuse a second driver on one experiment folder (an exclusive lock on `.lock` in it).

    The kernel drops the lock when its process ends, however it ends, so a killed
    driver never leaves the experiment locked. Filesystems without locks (some NFS)
    are not guarded.
    """
    exp_dir.mkdir(parents=True, exist_ok=True)
    with open(exp_dir / ".lock", "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise UserError(f"{exp_dir}: another tune.py (pid {holder}) is running this experiment; "
                            "wait for it to end (or stop it) before starting or resuming it") from None
        except OSError:  # no locking on this filesystem
            yield
            return
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def refuse_mixing(cfg: ExperimentConfig, resume: bool) -> None:
    """Refuse to start a new search in a folder that already holds one."""
    exp_dir = experiment_location(cfg)
    if (exp_dir / "config.yaml").exists() and not resume:
        raise UserError(
            f"{exp_dir} already holds an experiment: continue it with --resume --name {cfg.output.name}, "
            "or start another with --name NEW"
        )


def refuse_lost_studies(cfg: ExperimentConfig) -> None:
    """Refuse to resume a split whose Tune trials ran but whose Optuna study the storage lacks.

    Resuming would start TPE from nothing, beside trials it never heard of: e.g. on another
    machine than the one whose disk holds the default SQLite database of a search with
    results in object storage, or with `search.storage` pointing elsewhere than before.
    Checked before anything is written, so the copy of the database beside the results
    is not replaced by an empty one.
    """
    storage = optuna_storage(cfg)
    known = set(optuna.study.get_all_study_names(storage))
    exp = experiment_location(cfg)
    for target in cfg.data.targets:
        if study_name(cfg, target) in known:
            continue
        rounds = [path for path in round_dirs(exp, target) if tune.Tuner.can_restore(str(path))]
        ran = len(_tune_trials(rounds))
        if not ran:  # killed before its first trial: nothing to lose
            continue
        if cfg.search.storage is None and not exp.is_local:
            where = (f"this machine's database {local_state_dir(cfg) / 'optuna.db'} does not hold it; "
                     f"resume on the machine that ran the search (a copy of its database: {exp / 'optuna.db'})")
        else:
            where = f"the storage ({cfg.search.storage or local_state_dir(cfg) / 'optuna.db'}) does not hold it"
        raise UserError(f"--resume: split {target} ran {ran} trial(s) but its Optuna study "
                        f"{study_name(cfg, target)} is lost: {where}")


def save_resolved_config(cfg: ExperimentConfig) -> None:
    """Write the resolved config the search runs with.

    On resume it is written again: it may have gained targets or trials
    (`tune.py --resume --targets ... --num-samples ...`), and the export reads it.
    """
    saved = experiment_location(cfg) / "config.yaml"
    saved.write_text(config_text(cfg, header="resolved config of this search (python tune.py)"))


def close_orphaned_trials(study: optuna.Study, continuing: set[str]) -> int:
    """Tell FAIL every RUNNING Optuna trial whose Tune trial is not in `continuing` (the
    Tune trials a resumed experiment will run on); returns how many.

    Optuna's storage is written at once, Tune's experiment state only now and then: a
    trial proposed after Tune's last snapshot, before the driver was killed, exists in
    the study but not in the Tune experiment that resumes, and would stay RUNNING
    forever (TPE's constant liar counts RUNNING trials as pending points). Tune trials
    that resume keep their Optuna trial, which the restored searcher tells when they end.
    """
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    orphans = [t for t in running if t.user_attrs.get(TUNE_TRIAL_ID) not in continuing]
    for trial in orphans:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
    return len(orphans)


def _tune_trials(rounds: Sequence[Location]) -> list[tune.experiment.Trial]:
    """The trials Tune recorded in a split's rounds (their saved experiment state)."""
    return [trial for path in rounds for trial in ExperimentAnalysis(str(path)).trials]


def _close_orphans_of_split(cfg: ExperimentConfig, target: str, rounds: Sequence[Location]) -> None:
    try:
        study = optuna.load_study(study_name=study_name(cfg, target), storage=optuna_storage(cfg))
    except KeyError:  # killed before the study was created
        return
    continuing = {trial.trial_id for trial in _tune_trials(rounds) if trial.status != "TERMINATED"}
    closed = close_orphaned_trials(study, continuing)
    if closed:
        print(f"{target}: closed {closed} Optuna trial(s) that a killed driver left running (told FAIL)")


def run_split(cfg: ExperimentConfig, target: str, max_concurrent: int, resume: bool,
              callbacks: Sequence[tune.Callback] = ()) -> SplitOutcome:
    """Run the split's search, or resume it: every round that exists is restored, then,
    when they all finished with fewer trials than `search.num_samples`, one new round runs
    the rest (the same Optuna study goes on; see `search.tuner.build_tuner`)."""
    rounds = round_dirs(experiment_location(cfg), target) if resume else []
    for path in rounds:
        if not tune.Tuner.can_restore(str(path)):
            raise UserError(f"{path}: no Tune experiment state to resume from")
    if rounds:
        _close_orphans_of_split(cfg, target, rounds)
    grids = [restore_tuner(cfg, target, path).fit() for path in rounds]
    trials = sum(len(grid) for grid in grids)
    ended = all(grid.num_terminated + grid.num_errors == len(grid) for grid in grids)
    if ended and trials < cfg.search.num_samples:
        tuner = build_tuner(cfg, target, max_concurrent, round_index=len(grids) + 1,
                            num_samples=cfg.search.num_samples - trials, callbacks=callbacks)
        grids.append(tuner.fit())
    size = sum(len(grid) for grid in grids)
    terminated, errors = sum(g.num_terminated for g in grids), sum(g.num_errors for g in grids)
    finished = size >= cfg.search.num_samples and terminated + errors == size
    return SplitOutcome(target, finished, size, terminated, errors)


def run_search(cfg: ExperimentConfig, address: str | None = None, resume: bool = False,
               callbacks: Sequence[tune.Callback] = ()) -> list[SplitOutcome]:
    """Search every split of `cfg.data.targets`; stops at the first split that did not finish.

    `callbacks` are added to every new Tuner (tests observe the scheduling through them).
    """
    # The lock is a local file: beside local results, in the driver's own folder otherwise.
    with ray_environment(), experiment_lock(local_state_dir(cfg)):
        refuse_mixing(cfg, resume)
        if resume:
            refuse_lost_studies(cfg)
        connect(address, cfg.cluster.runtime_env)
        # Every check before the config is written: a node that cannot train or a trial
        # that fits nowhere leaves no experiment behind that the same command would refuse.
        preflight(cfg)
        slots = concurrent_slots(cfg)
        save_resolved_config(cfg)
        try:
            return _run_splits(cfg, resume, slots, callbacks)
        finally:
            upload_study_copy(cfg)


def _run_splits(cfg: ExperimentConfig, resume: bool, slots: int,
                callbacks: Sequence[tune.Callback]) -> list[SplitOutcome]:
    max_concurrent = min(cfg.search.max_concurrent or default_max_concurrent(cfg.search.num_samples, slots),
                         cfg.search.num_samples)
    print(
        f"searching {len(cfg.data.targets)} split(s) × {cfg.search.num_samples} trials, "
        f"{max_concurrent} at a time (cpu {cfg.resources.cpu}, gpu {cfg.resources.gpu} per trial), "
        f"{cfg.evaluations_per_run} evaluations per full trial, objective {cfg.eval.objective}"
    )
    outcomes = []
    for target in cfg.data.targets:
        outcome = run_split(cfg, target, max_concurrent, resume, callbacks)
        outcomes.append(outcome)
        if not outcome.finished:
            break  # interrupted: resume continues here
    return outcomes
