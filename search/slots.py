"""How many of the cluster's trial slots a search kept busy: recorded, shown live, summarised.

A slot is room for one trial (`search.cluster.concurrent_slots`). Every driver of a search
(one per split when the splits run in driver processes of their own, `search.driver`)
appends each trial's start and end to one local JSON-lines file, the timeline, through a
Tune callback; the top driver marks where each run (a start or a resume) begins. From it
the top driver prints a progress line while trials run, and at the end the run's slot
usage: mean and peak trials at once, and occupancy (busy slot-seconds ÷ available
slot-seconds between the first trial's start and the last trial's end), which it keeps in
`slots.json` beside the results for summary.md.

A trial counts as busy from Tune's start (its resources placed and its worker up) to its
end (completed, stopped by ASHA, or errored), so a worker's start-up counts as idle.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ray import tune

from search.storage import Location


def _append(path: Path, record: dict[str, Any]) -> None:
    # One short line per write, opened for appending: the lines of several driver
    # processes never interleave (O_APPEND on a local disk).
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


class TrialTimeline(tune.Callback):
    """Tune callback: appends `start` and `end` of each trial of split `target` to `path`.

    It holds only a path and a name, so Tune can pickle it into the experiment and a
    restored Tuner (`--resume`) records its trials too.
    """

    def __init__(self, path: Path, target: str) -> None:
        self.path = Path(path)
        self.target = target

    def _write(self, event: str, trial: Any) -> None:
        _append(self.path, {"event": event, "t": time.time(), "target": self.target, "trial": trial.trial_id})

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write("start", trial)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write("end", trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write("end", trial)


def record_final_run(path: Path, target: str, name: str, started: float, ended: float) -> None:
    """A final-training run of split `target` (`search.final_phase`), from its task's own start and
    end, once it has ended: it held a slot like a trial, so it counts like one."""
    _append(path, {"event": "start", "t": started, "target": target, "trial": f"final {name}", "final": True})
    _append(path, {"event": "end", "t": ended, "target": target, "trial": f"final {name}", "final": True})


def mark_run(path: Path, slots: int, targets: Sequence[str]) -> None:
    """Begin a run in the timeline: what follows belongs to it."""
    _append(path, {"event": "run", "t": time.time(), "slots": slots, "targets": list(targets)})


def read_runs(path: Path) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Every run's mark and the trial events after it, oldest first (none before the first mark).

    A line that does not decode (being written right now, or damaged) is skipped.
    """
    runs: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    if not path.exists():
        return runs
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        if record.get("event") == "run":
            runs.append((record, []))
        elif runs and {"event", "t", "target", "trial"} <= record.keys():
            runs[-1][1].append(record)
    return runs


def read_run(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The latest run's mark and the trial events after it."""
    runs = read_runs(path)
    return runs[-1] if runs else ({"slots": 1, "targets": [], "t": time.time()}, [])


def usage_records(file: Location, timeline: Path, runs_before_latest: bool = False) -> list[dict[str, Any]]:
    """The runs' slot usage in `slots.json`; if that file is damaged, rebuilt from the timeline
    (every run, or every run but the latest one, which the caller is recording), with a warning."""
    if not file.exists():
        return []
    try:
        runs = json.loads(file.read_text())
        if isinstance(runs, list) and all(isinstance(r, dict) and "started" in r for r in runs):
            return runs
    except (ValueError, UnicodeDecodeError):
        pass
    recorded = read_runs(timeline)[: -1 if runs_before_latest else None]
    print(f"WARNING: {file} is damaged (not the list of runs it should be); rebuilt from {timeline} "
          f"({len(recorded)} run(s))", file=sys.stderr, flush=True)
    return [slot_usage(run, events, until=max((e["t"] for e in events), default=run["t"])).as_dict()
            for run, events in recorded]


@dataclass(frozen=True)
class SlotUsage:
    """Slot usage of one run, from its trial intervals."""

    started: float  # the run's mark (seconds since the epoch)
    slots: int
    trials: int  # trial starts (a retried or resumed trial counts again)
    span_s: float  # first trial start to last trial end
    busy_slot_s: float
    peak: int

    @property
    def mean(self) -> float:
        return self.busy_slot_s / self.span_s if self.span_s > 0 else 0.0

    @property
    def occupancy(self) -> float:
        return self.mean / self.slots if self.slots else 0.0

    def text(self) -> str:
        return (f"{self.trials} trial(s) on {self.slots} slot(s) over {self.span_s:.0f} s: "
                f"{self.mean:.1f} at once on average, peak {self.peak}, occupancy {self.occupancy:.2f}")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": round(self.mean, 3), "occupancy": round(self.occupancy, 3)}


def intervals(events: Sequence[dict[str, Any]], until: float) -> list[tuple[float, float]]:
    """Each trial's (start, end); a trial still running (or interrupted) ends at `until`."""
    open_: dict[tuple[str, str], float] = {}
    done = []
    for e in sorted(events, key=lambda e: e["t"]):
        key = (e["target"], e["trial"])
        if e["event"] == "start":
            open_.setdefault(key, e["t"])
        elif key in open_:
            done.append((open_.pop(key), e["t"]))
    return done + [(start, max(start, until)) for start in open_.values()]


def slot_usage(run: dict[str, Any], events: Sequence[dict[str, Any]], until: float) -> SlotUsage:
    spans = intervals(events, until)
    if not spans:
        return SlotUsage(run["t"], run["slots"], 0, 0.0, 0.0, 0)
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    # Ends before starts at one instant: a slot handed straight on is not two trials at once.
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return SlotUsage(run["t"], run["slots"], len(spans), last - first, sum(e - s for s, e in spans), peak)


def progress_line(run: dict[str, Any], events: Sequence[dict[str, Any]]) -> str:
    """`busy/slots` and, per split, its trials running and ended, and its final runs ended."""
    running: dict[str, set[str]] = {t: set() for t in run["targets"]}
    ended: dict[str, int] = dict.fromkeys(run["targets"], 0)
    final: dict[str, int] = {}
    for e in sorted(events, key=lambda e: e["t"]):
        if e.get("final"):  # recorded once it ended (`record_final_run`)
            final[e["target"]] = final.get(e["target"], 0) + (e["event"] == "end")
            continue
        live = running.setdefault(e["target"], set())
        if e["event"] == "start":
            live.add(e["trial"])
        elif e["trial"] in live:
            live.discard(e["trial"])
            ended[e["target"]] = ended.get(e["target"], 0) + 1
    busy = sum(len(v) for v in running.values())
    splits = "  ".join(f"{t} {len(running[t])}▶ {ended.get(t, 0)}✓" + (f" final {final[t]}✓" if t in final else "")
                       for t in running)
    return f"slots {busy}/{run['slots']} busy | {splits}"


@contextmanager
def progress_display(path: Path, every_s: float = 5.0) -> Iterator[None]:
    """Print the progress line of the run in `path` whenever it changes (at most every
    `every_s`), from a thread that only reads the timeline: Tune's own drivers are not
    thread-safe and are never touched from it."""
    stop = threading.Event()

    def show() -> None:
        shown, began = "", time.monotonic()
        while not stop.wait(every_s):
            line = progress_line(*read_run(path))
            if line != shown:
                elapsed = int(time.monotonic() - began)
                print(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {line}", flush=True)
                shown = line

    thread = threading.Thread(target=show, name="search-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def record_usage(timeline: Path, file: Location) -> SlotUsage:
    """The latest run's slot usage, appended to the experiment's `slots.json` (`file`)."""
    run, events = read_run(timeline)
    usage = slot_usage(run, events, until=time.time())
    runs = usage_records(file, timeline, runs_before_latest=True)
    file.write_text(json.dumps([*runs, usage.as_dict()], indent=1))
    return usage


def slots_section(file: Location, timeline: Path) -> list[str]:
    """summary.md's table of the slot usage of every run of the search (none before it records any),
    from the experiment's `slots.json` (`file`; rebuilt from `timeline` if damaged)."""
    runs = usage_records(file, timeline)
    if not runs:
        return []
    lines = ["## Slots", "",
             ("Trials at once over each run (start or resume): busy slot-seconds ÷ available slot-seconds "
              "between the first trial's start and the last trial's end."), "",
             "| run started (UTC) | slots | trials | span (s) | mean at once | peak | occupancy |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["started"]))
        lines.append(f"| {started} | {r['slots']} | {r['trials']} | {r['span_s']:.0f} | {r['mean']:.2f} | "
                     f"{r['peak']} | {r['occupancy']:.2f} |")
    return [*lines, ""]
