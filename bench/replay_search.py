"""Replay whole searches on the landscape recording, at simulated time: is the search worth its compute?

    python bench/replay_search.py                                  # every arm, 20 seeds, 8-64 trials
    python bench/replay_search.py --samplers tpe random --schedulers asha fifo --seeds 5 --budgets 16

Each arm (sampler × scheduler) searches each split of the recording (`bench/record_landscape.py`)
as `tune.py` would, with the project's own pieces: the sampler of `search.algorithms`,
Tune's scheduler object from `search.algorithms.make_scheduler` asked at every evaluation
as Tune asks it, and `search.tuner.OptunaStudySearcher`, told what each trial did (ASHA's
stops PRUNED, finished trials COMPLETE with their best objective), `--concurrency` trials
at once, the config's defaults enqueued first. Time is simulated: a trial's evaluation k
arrives at its start plus the recorded seconds of evaluation k, so concurrent trials
interleave as they would have.

A proposal is answered by its recorded learning curve where the recording holds that
configuration (the defaults, seed 0) and otherwise by a surrogate fitted to the recording
(`CurveSurrogate`: the inverse-distance-weighted curves of its nearest recorded
configurations). The surrogate's fidelity, the Spearman correlation of predicted and
recorded final objective and oracle accuracy over recorded configurations left out one at
a time, is printed with every replay; below `FIDELITY_FLOOR` the table says the replay
cannot rank samplers.

Output: per split and budget, each arm's final pick (oracle target accuracy of the best
COMPLETE trial's selected evaluation, what the export reports) as an interquartile mean
with a bootstrap 95 % interval over seeds, its compute in training steps, and the compute
it needs to reach random + FIFO's final quality at the largest budget, as a ratio; anytime
curves (the pick's oracle accuracy against compute) as a PNG.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from scipy.stats import spearmanr

from lacmfer.config import ExperimentConfig, load_config
from lacmfer.names import SAMPLERS, SCHEDULERS
from lacmfer.run.outcome import Evaluation
from search.algorithms import make_sampler, make_scheduler
from search.spaces import SearchSpace, default_point
from search.tuner import METRIC, MODE, OptunaStudySearcher

REPO = Path(__file__).resolve().parents[1]

#: Below this leave-one-out Spearman the surrogate cannot tell good configurations from bad.
FIDELITY_FLOOR = 0.5
BASELINE = ("random", "fifo")
SURROGATES = ("knn", "forest")


@dataclass(frozen=True)
class Curve:
    """One configuration's run: per evaluation the objective, the oracle accuracy, the seconds since
    its start and the training steps done."""

    objective: np.ndarray
    oracle: np.ndarray
    seconds: np.ndarray
    steps: np.ndarray


class Encoder:
    """A configuration of the search space → a point of the unit cube (log scale where the range is,
    one axis per choice; an inactive conditional parameter sits at the centre of its axis)."""

    def __init__(self, space: SearchSpace):
        self.space = space

    def __call__(self, values: dict[str, Any]) -> np.ndarray:
        out: list[float] = []
        for name in self.space.order:
            spec, value = self.space.space[name], values.get(name)
            if spec.distribution == "choice":
                out += [float(value == c) / math.sqrt(2) for c in spec.choices]
            elif spec.distribution == "constant":
                continue
            elif value is None:
                out.append(0.5)
            elif spec.distribution == "loguniform":
                out.append((math.log(value) - math.log(spec.low)) / (math.log(spec.high) - math.log(spec.low)))
            else:
                out.append((value - spec.low) / (spec.high - spec.low))
        return np.asarray(out)


class CurveSurrogate:
    """Learning curves of unrecorded configurations: the inverse-distance-weighted mean of the `k`
    nearest recorded curves (per evaluation, over the neighbours whose run got that far)."""

    def __init__(self, encoder: Encoder, points: np.ndarray, curves: Sequence[Curve], k: int = 5):
        self.encoder, self.points, self.curves, self.k = encoder, points, list(curves), k

    def predict(self, values: dict[str, Any], exclude: int | None = None) -> Curve:
        distance = np.linalg.norm(self.points - self.encoder(values), axis=1)
        if exclude is not None:
            distance[exclude] = np.inf
        nearest = np.argsort(distance)[: self.k]
        weights = 1.0 / np.maximum(distance[nearest], 1e-9)
        length = max(len(self.curves[i].objective) for i in nearest)

        def mean(field: str) -> np.ndarray:
            stack = np.full((len(nearest), length), np.nan)
            for row, i in enumerate(nearest):
                column = getattr(self.curves[i], field)
                stack[row, : len(column)] = column
            held = ~np.isnan(stack)
            return (np.nansum(stack * weights[:, None], axis=0) / np.maximum((held * weights[:, None]).sum(0), 1e-12))

        reference = max(nearest, key=lambda i: len(self.curves[i].objective))
        return Curve(mean("objective"), mean("oracle"), self.curves[reference].seconds, self.curves[reference].steps)


class ForestSurrogate:
    """Learning curves of unrecorded configurations from a random forest (scikit-learn) fitted to
    every recorded curve at once: the objective and the oracle accuracy at each evaluation as
    outputs; the seconds and steps of the nearest recorded run that ran its whole schedule. A run that diverged counts
    with its last finite values carried on (a forest cannot predict NaN)."""

    def __init__(self, encoder: Encoder, points: np.ndarray, curves: Sequence[Curve], seed: int = 0):
        from sklearn.ensemble import RandomForestRegressor

        self.encoder, self.points, self.curves, self.seed = encoder, points, list(curves), seed
        self.length = max(len(c.objective) for c in self.curves)
        self.targets = np.stack([np.concatenate([_padded(c.objective, self.length), _padded(c.oracle, self.length)])
                                 for c in self.curves])
        self._forest = RandomForestRegressor
        self.model = self._fit(np.ones(len(self.curves), bool))
        self._excluded: dict[int, Any] = {}

    def _fit(self, rows: np.ndarray) -> Any:
        return self._forest(n_estimators=200, min_samples_leaf=2, random_state=self.seed).fit(
            self.points[rows], self.targets[rows])

    def predict(self, values: dict[str, Any], exclude: int | None = None) -> Curve:
        model = self.model
        if exclude is not None:
            if exclude not in self._excluded:
                rows = np.ones(len(self.curves), bool)
                rows[exclude] = False
                self._excluded[exclude] = self._fit(rows)
            model = self._excluded[exclude]
        point = self.encoder(values)
        out = model.predict(point[None])[0]
        distance = np.linalg.norm(self.points - point, axis=1)
        distance[[i for i, c in enumerate(self.curves) if len(c.seconds) < self.length]] = np.inf  # diverged
        if exclude is not None:
            distance[exclude] = np.inf
        nearest = self.curves[int(np.argmin(distance))]
        return Curve(out[: self.length], out[self.length:], nearest.seconds, nearest.steps)


def _padded(values: np.ndarray, length: int) -> np.ndarray:
    """`values` to `length`, NaN and missing evaluations replaced by the last finite value."""
    out = np.full(length, np.nan)
    out[: len(values)] = values
    last = 0.0
    for k in range(length):
        last = out[k] = last if np.isnan(out[k]) else out[k]
    return out


@dataclass
class Landscape:
    """One split of the recording: the seed-0 runs by configuration, and a surrogate over them."""

    target: str
    values: list[dict[str, Any]]
    curves: list[Curve]
    surrogate: CurveSurrogate | ForestSurrogate

    def curve(self, values: dict[str, Any]) -> tuple[Curve, bool]:
        """The recorded curve of `values` if recorded, else the surrogate's; and whether recorded."""
        for known, curve in zip(self.values, self.curves):
            if known.keys() == values.keys() and all(_same(known[n], values[n]) for n in known):
                return curve, True
        return self.surrogate.predict(values), False

    def fidelity(self) -> tuple[float, float]:
        """Leave-one-out Spearman of predicted against recorded final objective and final oracle accuracy."""
        predicted = [self.surrogate.predict(v, exclude=i) for i, v in enumerate(self.values)]
        final = [c.objective[-1] for c in self.curves], [p.objective[-1] for p in predicted]
        oracle = [c.oracle[-1] for c in self.curves], [p.oracle[-1] for p in predicted]
        return float(spearmanr(*final, nan_policy="omit").statistic), float(spearmanr(*oracle, nan_policy="omit").statistic)


def _same(a: Any, b: Any) -> bool:
    return math.isclose(a, b, rel_tol=1e-9) if isinstance(a, float) and isinstance(b, float) else a == b


def read_landscapes(path: Path, cfg: ExperimentConfig, k: int, surrogate: str = "knn") -> dict[str, Landscape]:
    """Every split of the recording at `path` (seed 0, LA-CMFER configurations only), with the
    `surrogate` (`knn`: `k` nearest neighbours; `forest`: a random forest) over its curves."""
    table = pq.read_table(path).to_pylist()
    space = SearchSpace(cfg.search.space)
    encoder = Encoder(space)
    runs: dict[tuple[str, str], list[dict]] = {}
    for row in table:
        if row["seed"] == 0 and row["adaptation"] == "lacmfer":
            runs.setdefault((row["target"], row["config_id"]), []).append(row)
    landscapes: dict[str, Landscape] = {}
    for target in sorted({t for t, _ in runs}):
        values, curves = [], []
        for (t, _), rows in sorted(runs.items()):
            if t != target:
                continue
            rows.sort(key=lambda r: r["training_iteration"])
            values.append({n: rows[0][f"param.{n}"] for n in space.order if rows[0].get(f"param.{n}") is not None})
            curves.append(Curve(*(np.array([float(r[f]) for r in rows]) for f in ("objective", "target_acc", "time_s", "step"))))
        points = np.stack([encoder(v) for v in values])
        model = (CurveSurrogate(encoder, points, curves, k) if surrogate == "knn"
                 else ForestSurrogate(encoder, points, curves))
        landscapes[target] = Landscape(target, values, curves, model)
    return landscapes


class _Trial:
    """What Tune's scheduler reads of a trial."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


@dataclass
class Replay:
    """One replayed search: (compute in steps, the pick's oracle accuracy) after each trial that ended."""

    anytime: list[tuple[float, float]]
    compute: float
    final: float
    recorded_share: float

    def first(self, trials: int) -> Replay:
        """The same search stopped after its first `trials` trials: exact when a split runs one trial at
        a time (a proposal and a rung's cut depend only on the trials before), so the smaller
        budgets are read off the largest one's replay."""
        anytime = self.anytime[:trials]
        return Replay(anytime, anytime[-1][0], anytime[-1][1], self.recorded_share)


def replay(land: Landscape, cfg: ExperimentConfig, sampler: str, scheduler: str, seed: int, budget: int,
           concurrency: int) -> Replay:
    """Search `land` with `budget` trials as `tune.py` would, at simulated time."""
    search = cfg.search.model_copy(update={"sampler": sampler, "scheduler": scheduler})
    np.random.seed(seed)  # Tune's Hyperband places each trial in a bracket with NumPy's global generator
    searcher = OptunaStudySearcher(SearchSpace(search.space), METRIC, MODE, make_sampler(search, seed),
                                   points_to_evaluate=[default_point(cfg)] if search.start_from_defaults else None,
                                   scope=search.scope)
    stopper = make_scheduler(search, cfg.evaluations_per_run)
    stopper.set_search_properties(METRIC, MODE)
    events: list[tuple[float, int, str, int]] = []
    order = itertools.count()
    running: dict[str, tuple[Curve, float]] = {}
    proposed = recorded = 0
    now, compute, best_value, pick = 0.0, 0.0, -math.inf, math.nan
    anytime: list[tuple[float, float]] = []
    while True:
        while len(running) < concurrency and proposed < budget:
            trial_id = f"t{proposed:03d}"
            curve, was_recorded = land.curve(searcher.suggest(trial_id))
            recorded += was_recorded
            start = now  # the slot a trial ended is taken at once
            running[trial_id] = (curve, start)
            stopper.on_trial_add(None, _Trial(trial_id))
            heapq.heappush(events, (start + curve.seconds[0], next(order), trial_id, 0))
            proposed += 1
        if not events:
            break
        now, _, trial_id, k = heapq.heappop(events)
        curve, start = running[trial_id]
        last = k + 1 == len(curve.objective)
        compute += curve.steps[k] - (curve.steps[k - 1] if k else 0.0)
        diverged = bool(math.isnan(curve.objective[k]))
        result = {"training_iteration": k + 1,
                  **Evaluation({METRIC: float(curve.objective[k])}, final=last, diverged=diverged).to_report()}
        decision = stopper.on_trial_result(None, _Trial(trial_id), result)
        if decision == "CONTINUE" and not last and not diverged:
            searcher.on_trial_result(trial_id, result)
            heapq.heappush(events, (start + curve.seconds[k + 1], next(order), trial_id, k + 1))
            continue
        stopper.on_trial_complete(None, _Trial(trial_id), result)
        searcher.on_trial_complete(trial_id, result)
        del running[trial_id]
        if last and not diverged:
            finite = np.where(np.isnan(curve.objective), -np.inf, curve.objective)
            selected = int(np.argmax(finite))  # the earliest best evaluation, as the export selects
            if finite[selected] > best_value:
                best_value, pick = float(finite[selected]), float(curve.oracle[selected])
        anytime.append((compute, pick))
    return Replay(anytime, compute, pick, recorded / max(proposed, 1))


def iqm(values: np.ndarray) -> float:
    """The interquartile mean: the mean of the middle half (Agarwal et al. 2021)."""
    values = np.sort(values[~np.isnan(values)])
    if not len(values):
        return math.nan
    cut = len(values) // 4
    return float(values[cut: len(values) - cut].mean())


def iqm_interval(values: np.ndarray, rng: np.random.Generator, draws: int = 1000) -> tuple[float, float]:
    """A percentile bootstrap 95 % interval of the IQM over seeds."""
    stats = [iqm(rng.choice(values, len(values))) for _ in range(draws)]
    return float(np.nanpercentile(stats, 2.5)), float(np.nanpercentile(stats, 97.5))


def anytime_at(run: Replay, grid: np.ndarray) -> np.ndarray:
    """The pick's oracle accuracy at each compute of `grid` (NaN before any trial finished)."""
    computes = np.array([c for c, _ in run.anytime])
    picks = np.array([p for _, p in run.anytime])
    index = np.searchsorted(computes, grid, side="right") - 1
    return np.where(index >= 0, picks[np.maximum(index, 0)], np.nan)


def compute_to_reach(runs: list[Replay], quality: float, grid: np.ndarray) -> float:
    """The least compute at which the arm's IQM anytime curve reaches `quality` (inf if it never does)."""
    curve = np.array([iqm(column) for column in np.stack([anytime_at(r, grid) for r in runs]).T])
    reached = np.nonzero(curve >= quality - 1e-12)[0]
    return float(grid[reached[0]]) if len(reached) else math.inf


_LANDSCAPES: dict[tuple[str, str, int, str], tuple[ExperimentConfig, dict[str, Landscape]]] = {}


def _replay_arm(task: tuple) -> list[Replay]:
    """Every seed of one (split, sampler, scheduler, budget), in a worker process."""
    recording, config, k, surrogate, target, sampler, scheduler, budget, seeds, concurrency = task
    if (recording, config, k, surrogate) not in _LANDSCAPES:
        import optuna
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        cfg = load_config(Path(config))
        _LANDSCAPES[recording, config, k, surrogate] = cfg, read_landscapes(Path(recording), cfg, k, surrogate)
    cfg, landscapes = _LANDSCAPES[recording, config, k, surrogate]
    return [replay(landscapes[target], cfg, sampler, scheduler, seed, budget, concurrency) for seed in range(seeds)]


def _budgets_of(runs: list[Replay], budgets: list[int], concurrency: int) -> dict[int, list[Replay]]:
    """Each budget's replays, read off the largest budget's (`Replay.first`) when one trial runs at a time."""
    if concurrency != 1:
        raise ValueError("only one trial at a time makes a smaller budget a prefix of a larger one")
    return {budget: [r.first(budget) for r in runs] for budget in budgets}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recording", type=Path, default=REPO / "bench/landscape.parquet")
    parser.add_argument("--config", type=Path, default=REPO / "configs/default.yaml")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--schedulers", nargs="+", default=list(SCHEDULERS), choices=SCHEDULERS)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budgets", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--concurrency", type=int, default=1, help="trials of a split at once")
    parser.add_argument("--jobs", type=int, default=2, help="processes")
    parser.add_argument("--surrogate", choices=SURROGATES, default=None,
                        help="default: the one with the higher leave-one-out fidelity")
    parser.add_argument("--neighbours", type=int, default=5, help="the surrogate's k")
    parser.add_argument("--out", type=Path, default=REPO / "results/replay")
    args = parser.parse_args(argv)

    import optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cfg = load_config(args.config)
    candidates = {name: read_landscapes(args.recording, cfg, args.neighbours, name) for name in SURROGATES}
    meta = pq.read_schema(args.recording).metadata or {}
    lines = [f"`python {' '.join(['bench/replay_search.py', *(argv or sys.argv[1:])])}`", "",
             (f"Recording: {args.recording.name} (commit {meta.get(b'commit', b'?').decode()[:7]}), "
              f"{args.seeds} search seeds per arm, {args.concurrency} trial(s) of a split at once."), ""]
    lines += [("| split | surrogate | configurations | leave-one-out Spearman: final objective | final oracle "
               "accuracy | verdict |"), "|---|---|---|---|---|---|"]
    fidelity: dict[str, list[float]] = {}
    for name, lands in candidates.items():
        for target, land in lands.items():
            rho_objective, rho_oracle = land.fidelity()
            fidelity.setdefault(name, []).append(min(rho_objective, rho_oracle))
            verdict = "can rank" if min(rho_objective, rho_oracle) >= FIDELITY_FLOOR else \
                f"TOO LOW to rank samplers (< {FIDELITY_FLOOR})"
            lines.append(f"| {target} | {name} | {len(land.values)} | {rho_objective:.2f} | {rho_oracle:.2f} | "
                         f"{verdict} |")
    # Fixed before any replay: the surrogate whose worse fidelity (over splits and both measures) is higher.
    surrogate = args.surrogate or max(fidelity, key=lambda n: min(fidelity[n]))
    landscapes = candidates[surrogate]
    lines += ["", f"Replayed with the `{surrogate}` surrogate."]
    print("\n".join(lines), flush=True)

    arms = [(s, c) for s in args.samplers for c in args.schedulers]
    if BASELINE not in arms:
        arms.insert(0, BASELINE)
    # One trial of a split at a time: every budget is a prefix of the largest one's replay.
    prefix = args.concurrency == 1
    replayed = [max(args.budgets)] if prefix else args.budgets
    tasks = [(str(args.recording), str(args.config), args.neighbours, surrogate, target, sampler, scheduler, budget,
              args.seeds, args.concurrency)
             for target in landscapes for (sampler, scheduler), budget in itertools.product(arms, replayed)]
    results: dict[tuple[str, str, str, int], list[Replay]] = {}
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        for task, runs in zip(tasks, pool.map(_replay_arm, tasks)):
            target, sampler, scheduler, budget = task[4:8]
            for size, sized in (_budgets_of(runs, args.budgets, 1) if prefix else {budget: runs}).items():
                results[target, sampler, scheduler, size] = sized
            print(f"  {target} {sampler}+{scheduler} {budget} trials: {time.perf_counter() - started:.0f} s",
                  file=sys.stderr, flush=True)

    rng = np.random.default_rng(0)
    top = max(args.budgets)
    table = ["", ("| split | arm | trials | pick's oracle accuracy (IQM, 95 % CI) | compute (steps, IQM) | "
                  "compute to reach random+FIFO's final, ratio | recorded share |"), "|---|---|---|---|---|---|---|"]
    for target in landscapes:
        baseline = results[(target, *BASELINE, top)]
        quality = iqm(np.array([r.final for r in baseline]))
        baseline_compute = iqm(np.array([r.compute for r in baseline]))
        grid = np.linspace(0, max(r.compute for rs in results.values() for r in rs), 400)
        for (sampler, scheduler), budget in itertools.product(arms, args.budgets):
            runs = results[target, sampler, scheduler, budget]
            finals = np.array([r.final for r in runs])
            low, high = iqm_interval(finals, rng)
            reach = compute_to_reach(runs, quality, grid) / baseline_compute if budget == top else math.nan
            reach_text = "" if budget != top else ("not reached" if math.isinf(reach) else f"{reach:.2f}x")
            table.append(f"| {target} | {sampler}+{scheduler} | {budget} | {100 * iqm(finals):.2f} "
                         f"[{100 * low:.2f}, {100 * high:.2f}] | {iqm(np.array([r.compute for r in runs])):.0f} | "
                         f"{reach_text} | {np.mean([r.recorded_share for r in runs]):.2f} |")
    print("\n".join(table))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "replay.md").write_text("\n".join(lines + table) + "\n")
    plot(results, landscapes, arms, top, args.out / "replay_anytime.png")
    print(f"\n{args.out / 'replay.md'}, {args.out / 'replay_anytime.png'}")
    return 0


def plot(results: dict, landscapes: dict[str, Landscape], arms: list[tuple[str, str]], budget: int, path: Path) -> None:
    """Anytime curves per split: the IQM over seeds of the pick's oracle accuracy, with a bootstrap band."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(1)
    fig, axes = plt.subplots(1, len(landscapes), figsize=(6 * len(landscapes), 4.2), squeeze=False)
    for ax, target in zip(axes[0], landscapes):
        grid = np.linspace(0, max(r.compute for a in arms for r in results[(target, *a, budget)]), 120)
        for sampler, scheduler in arms:
            stack = np.stack([anytime_at(r, grid) for r in results[target, sampler, scheduler, budget]])
            centre = np.array([iqm(c) for c in stack.T])
            bands = np.array([iqm_interval(c, rng, 200) if not np.isnan(c).all() else (math.nan, math.nan)
                              for c in stack.T])
            style = "--" if scheduler == "fifo" else ("-" if scheduler == "asha" else ":")
            line, = ax.plot(grid, 100 * centre, style, label=f"{sampler}+{scheduler}")
            ax.fill_between(grid, 100 * bands[:, 0], 100 * bands[:, 1], color=line.get_color(), alpha=0.12)
        ax.set_title(f"{target}: {budget} trials per search")
        ax.set_xlabel("compute (training steps)")
        ax.set_ylabel("oracle accuracy of the pick (%)")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
