"""The driver: every split in flight at once, one Tuner and one Optuna study per target.

Holds the experiment's lock (one driver per experiment), connects to Ray (local by
default, a cluster with an address; `search.cluster`), checks every node (preflight) and
that a trial can be scheduled at all, runs or resumes each split (a resume may add trials,
as a new round), and checks that every split finished (Ctrl-C makes `Tuner.fit()` return
normally with a partial result).

Splits run at once, each in a driver process of its own (`search.driver_processes` says
why processes, not threads or one shared Tuner); a single split runs in this process.
How many trials run at once comes from the cluster: every split may hold as many trials
as the cluster has slots (capped by `search.max_concurrent`), and Ray's scheduler gives
each free slot to a split with a trial waiting, so a split's tail runs beside the other
splits' trials instead of alone. TPE proposes each trial as late as it can: each Tuner
keeps its share of the slots waiting at most (`pending_per_split`), and the constant
liar tells it about the trials still running (`search.tuner.build_tuner`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import optuna
import ray
from ray import tune
from ray.tune import ExperimentAnalysis

from lacmfer.config import ExperimentConfig, config_from_dict, config_text
from lacmfer.errors import UserError
from search.cluster import concurrent_slots, connect, preflight, ray_environment
from search.driver_processes import run_in_processes
from search.slots import TrialTimeline, mark_run, progress_display, record_usage
from search.storage import OPTUNA_DB, ExperimentLocations, Location
from search.tuner import TUNE_TRIAL_ID, build_tuner, restore_tuner

if TYPE_CHECKING:  # the final phase imports torch; a split's driver process never does
    from search.final_phase import FinalPhase


@dataclass(frozen=True)
class SplitOutcome:
    target: str
    finished: bool
    trials: int
    terminated: int
    errors: int
    error: str | None = None  # why the split's driver stopped, when it did not end by itself


def trials_at_once(cfg: ExperimentConfig, slots: int) -> int:
    """The most trials one split runs at once: as many as the cluster has slots, capped
    by `search.max_concurrent` and by the split's trials.

    Every split may fill the cluster; together they cannot overfill it, since Ray places a
    trial only where its resources are free.
    """
    return max(1, min(cfg.search.max_concurrent or slots, slots, cfg.search.num_samples))


def quiet_optuna() -> None:
    """Optuna logs every study it creates and every trial it is told at INFO; the driver's
    progress line and summary.md say what matters, so only its warnings are shown."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def refuse_mixing(places: ExperimentLocations, resume: bool) -> None:
    """Refuse to start a new search in a folder that already holds one."""
    if places.config_file.exists() and not resume:
        raise UserError(
            f"{places.folder} already holds an experiment: continue it with --resume --name {places.name}, "
            "or start another with --name NEW"
        )


def refuse_lost_studies(places: ExperimentLocations, targets: Sequence[str]) -> None:
    """Refuse to resume a split whose Tune trials ran but whose Optuna study the storage lacks.

    Resuming would start TPE from nothing, beside trials it never heard of: e.g. on another
    machine than the one whose disk holds the default SQLite database of a search with
    results in object storage, or with `search.storage` pointing elsewhere than before.
    Checked before anything is written, so the copy of the database beside the results
    is not replaced by an empty one.
    """
    known = set(optuna.study.get_all_study_names(places.optuna_storage()))
    for target in targets:
        if places.study_name(target) in known:
            continue
        rounds = [path for path in places.rounds(target) if tune.Tuner.can_restore(str(path))]
        ran = len(_tune_trials(rounds))
        if not ran:  # killed before its first trial: nothing to lose
            continue
        if places.storage is None and not places.folder.is_local:
            where = (f"this machine's database {places.default_database} does not hold it; resume on the "
                     f"machine that ran the search (a copy of its database: {places.folder / OPTUNA_DB})")
        else:
            where = f"the storage ({places.storage_description()}) does not hold it"
        raise UserError(f"--resume: split {target} ran {ran} trial(s) but its Optuna study "
                        f"{places.study_name(target)} is lost: {where}")


def save_resolved_config(cfg: ExperimentConfig, places: ExperimentLocations) -> None:
    """Write the resolved config the search runs with.

    On resume it is written again: it may have gained targets or trials
    (`tune.py --resume --targets ... --num-samples ...`), and the export reads it.
    """
    places.config_file.write_text(config_text(cfg, header="resolved config of this search (python tune.py)"))


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


def _close_orphans_of_split(places: ExperimentLocations, target: str, rounds: Sequence[Location]) -> None:
    try:
        study = optuna.load_study(study_name=places.study_name(target), storage=places.optuna_storage())
    except KeyError:  # killed before the study was created
        return
    continuing = {trial.trial_id for trial in _tune_trials(rounds) if trial.status != "TERMINATED"}
    closed = close_orphaned_trials(study, continuing)
    if closed:
        print(f"{target}: closed {closed} Optuna trial(s) that a killed driver left running (told FAIL)")


def run_split(cfg: ExperimentConfig, places: ExperimentLocations, target: str, max_concurrent: int,
              resume: bool, callbacks: Sequence[tune.Callback] = ()) -> SplitOutcome:
    """Run the split's search, or resume it: every round that exists is restored, then,
    when they all finished with fewer trials than `search.num_samples`, one new round runs
    the rest (the same Optuna study goes on; see `search.tuner.build_tuner`)."""
    rounds = places.rounds(target) if resume else []
    for path in rounds:
        if not tune.Tuner.can_restore(str(path)):
            raise UserError(f"{path}: no Tune experiment state to resume from")
    if rounds:
        _close_orphans_of_split(places, target, rounds)
    grids = [restore_tuner(cfg, target, path).fit() for path in rounds]
    trials = sum(len(grid) for grid in grids)
    ended = all(grid.num_terminated + grid.num_errors == len(grid) for grid in grids)
    if ended and trials < cfg.search.num_samples:
        timeline = TrialTimeline(places.timeline, target)
        tuner = build_tuner(cfg, places, target, max_concurrent, round_index=len(grids) + 1,
                            num_samples=cfg.search.num_samples - trials, callbacks=[timeline, *callbacks])
        grids.append(tuner.fit())
    size = sum(len(grid) for grid in grids)
    terminated, errors = sum(g.num_terminated for g in grids), sum(g.num_errors for g in grids)
    finished = size >= cfg.search.num_samples and terminated + errors == size
    return SplitOutcome(target, finished, size, terminated, errors)


def run_search(cfg: ExperimentConfig, address: str | None = None, resume: bool = False,
               callbacks: Sequence[tune.Callback] = (), final: FinalPhase | None = None) -> list[SplitOutcome]:
    """Search every split of `cfg.data.targets`, all at once; a split that fails or is
    interrupted does not stop the others (each outcome says whether its split finished).

    `callbacks` are added to every new Tuner (tests observe the scheduling through them);
    with several splits they run in the splits' driver processes, so they must be picklable.
    `final`: each split's final training starts there as soon as its search ends, and the
    search returns once the last final run has ended.
    """
    places = ExperimentLocations.of(cfg)
    quiet_optuna()
    with ray_environment(), places.lock():
        refuse_mixing(places, resume)
        if resume:
            refuse_lost_studies(places, cfg.data.targets)
        connect(address, cfg.cluster.runtime_env)
        # Every check before the config is written: a node that cannot train or a trial
        # that fits nowhere leaves no experiment behind that the same command would refuse.
        preflight(cfg)
        slots = concurrent_slots(cfg)
        save_resolved_config(cfg, places)
        mark_run(places.timeline, slots, cfg.data.targets)
        try:
            with progress_display(places.timeline):
                outcomes = _run_splits(cfg, places, resume, slots, callbacks, final)
                if final is not None:
                    final.wait()
                return outcomes
        finally:
            print(f"slot usage: {record_usage(places.timeline, places.slots_record).text()}")
            places.upload_study_copy()


def _run_splits(cfg: ExperimentConfig, places: ExperimentLocations, resume: bool, slots: int,
                callbacks: Sequence[tune.Callback], final: FinalPhase | None) -> list[SplitOutcome]:
    max_concurrent = trials_at_once(cfg, slots)
    targets = cfg.data.targets
    print(
        f"searching {len(targets)} split(s) at once × {cfg.search.num_samples} trials on {slots} slot(s), "
        f"each split at most {max_concurrent} at a time (cpu {cfg.resources.cpu}, gpu {cfg.resources.gpu} per "
        f"trial), {cfg.evaluations_per_run} evaluations per full trial, objective {cfg.eval.objective}"
    )
    with ray_environment({"TUNE_MAX_PENDING_TRIALS_PG": str(pending_per_split(len(targets), slots))}):
        if len(targets) == 1:
            outcome = run_split(cfg, places, targets[0], max_concurrent, resume, callbacks)
            if final is not None:
                final.split_ended(outcome.target, outcome.finished)
            return [outcome]
        return _run_in_processes(cfg, places, resume, max_concurrent, callbacks, final)


def pending_per_split(splits: int, slots: int) -> int:
    """Trials a split's Tuner keeps waiting for a slot (proposed, not yet running): its
    share of the slots, ⌊slots ÷ splits⌋ (at least 1).

    A waiting trial was proposed without the results that come in while it waits. Tune's
    default with a concurrency limit is as many as the limit allows, i.e. a whole split
    proposed at once; one is too few: a trial waits until its worker process is up
    (seconds, minutes on a loaded machine), so the splits would fill the cluster one
    worker at a time. Rounded down, not up: the first wave then fits the cluster, so every
    split starts with its share, and the few slots left over go to whichever splits ask
    next. Rounded up, the splits placed first took a slot more each and the last got the
    remainder (2 of 32 slots with 6 splits), and kept it: a finished trial's worker is
    reused for its own split's next trial (docs/BENCHMARKS.md, 32 slots).
    """
    return max(1, slots // splits)


def _run_in_processes(cfg: ExperimentConfig, places: ExperimentLocations, resume: bool, max_concurrent: int,
                      callbacks: Sequence[tune.Callback], final: FinalPhase | None) -> list[SplitOutcome]:
    targets = cfg.data.targets
    # Opening the storage here creates its tables once: split drivers creating SQLite's
    # schema at the same time fail all but one (tests/test_optuna_storage.py).
    places.optuna_storage()
    job = functools.partial(_split_driver, cfg.to_dict(), places=places, address=ray.get_runtime_context().gcs_address,
                            max_concurrent=max_concurrent, resume=resume, callbacks=list(callbacks))
    jobs = {target: functools.partial(job, target=target) for target in targets}
    if final is None:
        ends = run_in_processes(jobs)
    else:  # a split's final runs queue as soon as its search ends, while the others search on
        ends = run_in_processes(jobs, on_end=lambda target, end: final.split_ended(
            target, end.value is not None and end.value.finished), on_tick=final.collect)
    # A split whose driver stopped carries why in its outcome; tune.py prints it once.
    return [end.value or SplitOutcome(target, False, 0, 0, 0, error=end.error) for target, end in ends.items()]


def _split_driver(config: dict, *, target: str, places: ExperimentLocations, address: str, max_concurrent: int,
                  resume: bool, callbacks: list[tune.Callback]) -> SplitOutcome:
    """One split's search in a driver process of its own, on the top driver's Ray cluster,
    with the top driver's locations (whatever set them: its database, its timeline)."""
    cfg = config_from_dict(config, source=f"the search's config (split {target})")  # imports its plugins
    quiet_optuna()  # a spawned process: the top driver's logging settings are not inherited
    connect(address, cfg.cluster.runtime_env)
    return run_split(cfg, places, target, max_concurrent, resume, callbacks)
