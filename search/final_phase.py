"""The search's own final training (`tune.py --final-seeds`, the config's `final:`): as soon as a
split's search ends, its best config is exported and its final runs (the method and each
baseline × each seed, `search.protocol`) join the same Ray cluster's queue, where they take
the slots the searches free; the top driver collects them as they end.

Each run is a Ray task of `search.final_training`, resumable from its own folder like any
final run: after an interruption `tune.py --resume` keeps the runs that ended and continues
the others from their last evaluation. Every run's start and end (the task's clock) go to
the search's slot timeline, so the slot record covers the whole protocol.
"""

from __future__ import annotations

from lacmfer.config import ExperimentConfig, config_text
from lacmfer.run.final_run import FinalResult, FinalRun, result_line
from search.analysis import read_split, select_best
from search.export.best_configs import best_config, best_config_location, best_header
from search.export.results import SplitExport
from search.final_training import FinalTasks
from search.protocol import FINAL_DIR, finished_results, protocol_methods, protocol_runs, supersede_stale_runs
from search.slots import record_final_run
from search.storage import ExperimentLocations


class FinalPhase:
    """Final training of every split of one search, on the cluster the search is connected to."""

    def __init__(self, cfg: ExperimentConfig, places: ExperimentLocations) -> None:
        self.cfg, self.places = cfg, places
        self.final_dir = places.folder.local_path() / FINAL_DIR
        # The configured method, then each baseline (checked here, before any search).
        self.methods = protocol_methods(cfg.loss.adaptation, cfg.final.baselines, "final.baselines")
        self.runs: dict[str, list[FinalRun]] = {}  # by split, once its search ended with a best trial
        self.results: dict[str, FinalResult] = {}  # by run name: kept from before, and as they end
        self.tasks = FinalTasks(cfg.final.retries, self._ended)

    def split_ended(self, target: str, finished: bool) -> None:
        """Export the split's best config and queue its final runs, if its search finished with one."""
        if not finished:
            return
        scope = self.cfg.search.scope
        record = select_best(read_split(self.places, target), scope)
        if record is None:  # no usable trial: tune.py says so after the export
            return
        best = best_config(self.cfg, record)
        path = best_config_location(self.places, target)
        split = SplitExport(target, {}, best=record, best_evaluation=record.selected(scope))
        path.write_text(config_text(best, best_header(self.cfg, self.places, split, scope, path)))
        runs = protocol_runs([(target, best)], self.methods, self.cfg.final.seeds, self.final_dir)
        for aside in supersede_stale_runs(runs):
            print(f"{target}: a final run trained an earlier best config (the search found a better one); "
                  f"kept as {aside}, it trains again", flush=True)
        kept, todo = finished_results(runs)
        self.runs[target] = runs
        self.results.update(kept)
        print(f"{target}: search over, best config {path}; final training: {len(todo)} run(s) queued"
              + (f", {len(kept)} kept from before" if kept else ""), flush=True)
        self.tasks.submit(todo)

    def _ended(self, result: FinalResult) -> None:
        self.results[result.name] = result
        if result.started_at is not None and result.ended_at is not None:
            record_final_run(self.places.timeline, result.target, result.name, result.started_at, result.ended_at)
        planned = [run.name for runs in self.runs.values() for run in runs]
        done = sum(name in self.results for name in planned)
        print(f"[final {done}/{len(planned)}] {result_line(result)}", flush=True)

    def collect(self) -> None:
        """Take in the final runs that have ended (while the searches go on)."""
        self.tasks.collect()

    def wait(self) -> None:
        """Until every queued final run has ended."""
        self.tasks.wait()
