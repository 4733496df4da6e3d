"""Why LA-CMFER loses to source-only on SynthFER: one factor at a time, each against source-only.

    python bench/method_diagnosis.py [--arms ...] [--targets ...] [--seeds 0 1 2] [--jobs 2]
        [--set key=value ...] [--work results/diagnosis] [--out results/diagnosis.md]

The protocol is docs/RESULTS.md, "Why LA-CMFER loses". Every arm is one config and a few
overrides; an LA-CMFER arm names the source-only arm trained in the same regime (same
config, batch, trunk and learning rates) on the same seeds, and the report gives the
paired difference LA-CMFER − source-only per (split, seed), its mean and 95 % t-interval;
arms in the base regime are also compared with LA-CMFER's defaults there. The accuracy
is the target test accuracy of the mean logits at the last step (no checkpoint
selection). Beside it, the instruments of docs/METHOD.md §3.9, averaged over a run's
evaluations and then over its runs: the share of steps whose target hardness weights are
all zero, the target weights' effective sample count (both views averaged) and the trunk
gradient ratio ‖∇(a·hyper_align·L_inter)‖ / ‖∇L_sup‖.

`--set` applies to every arm (e.g. another SynthFER draw: `--set data.synth.seed=1 --set
data.root=data/synthfer-small-g1`). Finished runs are kept as JSON under `--work/runs/`,
so an interrupted command picks up where it stopped; arms run in the order given.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from scipy import stats

from lacmfer.config import load_config
from lacmfer.data.loaders import load_split_data
from lacmfer.data.manifest import ensure_data
from lacmfer.method.pretrained import ensure_pretrained
from lacmfer.names import BUILTIN_DOMAIN_NAMES
from lacmfer.run.trainer import Trainer

SCRATCH = "configs/synthfer_scratch.yaml"  # the previous default: from scratch, batch 32, 64 px
DEFAULT = "configs/default.yaml"  # the release-faithful regime
SOURCE_ONLY = ["loss.adaptation=source_only"]
PRETEXT_RELEASE_LR = ["model.pretrained=synthfer_pretext", "schedule.lr=0.01", "schedule.trunk_lr_mult=0.1"]

#: arm → (config, overrides, the source-only arm of the same regime; None for a source-only arm).
ARMS: dict[str, tuple[str, list[str], str | None]] = {
    "so_scratch": (SCRATCH, SOURCE_ONLY, None),
    "la_scratch": (SCRATCH, [], "so_scratch"),
    "la_threshold0": (SCRATCH, ["loss.threshold=0"], "so_scratch"),
    "la_mmd": (SCRATCH, ["loss.adaptation=mmd_baseline"], "so_scratch"),
    "la_warmup": (SCRATCH, ["loss.align_warmup=mfsan"], "so_scratch"),
    "la_june": (SCRATCH, ["loss.hardness=june2024"], "so_scratch"),
    "so_default": (DEFAULT, SOURCE_ONLY, None),
    "la_default": (DEFAULT, [], "so_default"),
    "so_pretext_lr": (SCRATCH, [*PRETEXT_RELEASE_LR, *SOURCE_ONLY], None),
    "la_pretext_lr": (SCRATCH, PRETEXT_RELEASE_LR, "so_pretext_lr"),
    "so_b128": (SCRATCH, ["data.batch_size=128", *SOURCE_ONLY], None),
    "la_b128": (SCRATCH, ["data.batch_size=128"], "so_b128"),
}
LABELS = {
    "so_scratch": "source-only, scratch b32", "la_scratch": "LA-CMFER defaults, scratch b32",
    "la_threshold0": "threshold 0", "la_mmd": "plain MMD (mmd_baseline)", "la_warmup": "MFSAN warm-up",
    "la_june": "June 2024 weights", "so_default": "source-only, new default",
    "la_default": "LA-CMFER, new default", "so_pretext_lr": "source-only, pretext trunk, lr 0.01/0.001",
    "la_pretext_lr": "pretext trunk, lr 0.01/0.001", "so_b128": "source-only, batch 128",
    "la_b128": "batch 128",
}
BASE_ARM = "la_scratch"
INSTRUMENTS = {
    "empty_t": ("hardness_empty_t_g", "hardness_empty_t_l"),
    "ess_t": ("hardness_ess_t_g", "hardness_ess_t_l"),
    "grad_ratio": ("grad_ratio",),
}


def run(job: tuple[str, str, int, list[str]]) -> dict:
    """Train one run to the end; every evaluation is kept, the last one is the result."""
    arm, target, seed, extra = job
    config, overrides, _ = ARMS[arm]
    cfg = load_config(config, [*overrides, *extra, f"seed={seed}", "resources.threads=1"])
    start = time.perf_counter()
    history = list(Trainer(cfg, target).training_loop())
    return {"arm": arm, "target": target, "seed": seed, "seconds": time.perf_counter() - start,
            **history[-1], "history": history}


def instrument(row: dict, name: str) -> float:
    """Mean over a run's evaluations of an instrument (views averaged); NaN where absent."""
    values = [h[k] for h in row["history"] for k in INSTRUMENTS[name] if not math.isnan(h.get(k, math.nan))]
    return statistics.fmean(values) if values else math.nan


def interval(diffs: list[float]) -> str:
    if len(diffs) < 2:
        return "n/a"
    mean, sem = statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
    half = stats.t.ppf(0.975, len(diffs) - 1) * sem
    return f"{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}] (n={len(diffs)})"


def paired(index: dict, arm: str, base: str) -> list[float]:
    """Differences arm − base in points over the (target, seed) pairs both have."""
    return [100 * (acc - index[(base, t, s)]) for (a, t, s), acc in index.items() if a == arm and (base, t, s) in index]


def report(rows: list[dict], arms: list[str], targets: list[str]) -> list[str]:
    index = {(r["arm"], r["target"], r["seed"]): r["target_acc"] for r in rows}
    by_arm = {a: [r for r in rows if r["arm"] == a] for a in arms}
    lines = [("| arm | runs | target acc (%) | − source-only, same regime: mean [95 % CI] | − LA-CMFER defaults (scratch) "
              "| empty target weights (share of steps) | target ESS | grad ratio align/sup | source val acc |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        runs = by_arm[arm]
        if not runs:
            continue
        partner = ARMS[arm][2]
        versus_so = interval(paired(index, arm, partner)) if partner else ""
        versus_base = (interval(paired(index, arm, BASE_ARM))
                       if partner == "so_scratch" and arm != BASE_ARM else "")
        cells = [f"{statistics.fmean(instrument(r, n) for r in runs):.2f}" if partner else ""
                 for n in INSTRUMENTS]
        lines.append(f"| {LABELS[arm]} | {len(runs)} | {100 * statistics.fmean(r['target_acc'] for r in runs):.1f} "
                     f"| {versus_so} | {versus_base} | {' | '.join(cells)} "
                     f"| {statistics.fmean(r['source_val_acc'] for r in runs):.3f} |")
    lines += ["", "Per split: LA-CMFER − source-only of the same regime, mean over seeds (points).", "",
              "| arm | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
    for arm in arms:
        partner = ARMS[arm][2]
        if not partner or not by_arm[arm]:
            continue
        cells = []
        for t in targets:
            d = [100 * (index[(arm, t, s)] - index[(partner, t, s)])
                 for (a, tt, s) in index if a == arm and tt == t and (partner, t, s) in index]
            cells.append(f"{statistics.fmean(d):+.1f}" if d else "—")
        lines.append(f"| {LABELS[arm]} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--targets", nargs="+", default=list(BUILTIN_DOMAIN_NAMES), choices=BUILTIN_DOMAIN_NAMES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--seeds-for", nargs="+", default=[], metavar="ARM=S1,S2",
                        help="fewer seeds for a costly arm, e.g. la_b128=0,1")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--work", type=Path, default=Path("results/diagnosis"))
    parser.add_argument("--out", type=Path, default=Path("results/diagnosis.md"))
    args = parser.parse_args()
    command = "python bench/method_diagnosis.py " + shlex.join(sys.argv[1:])
    seeds_for = {k: [int(s) for s in v.split(",")] for k, v in (item.split("=") for item in args.seeds_for)}

    # Data, caches and pretext trunks once, before the workers race for them.
    for config in sorted({ARMS[a][0] for a in args.arms}):
        for arm in (a for a in args.arms if ARMS[a][0] == config):
            cfg = load_config(config, [*ARMS[arm][1], *args.overrides])
            ensure_data(cfg.data)
            ensure_pretrained(cfg)
            for target in args.targets:
                load_split_data(cfg, target, progress=False)

    runs = args.work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    jobs = [(arm, target, seed, args.overrides)
            for arm in args.arms for seed in seeds_for.get(arm, args.seeds) for target in args.targets
            if not (runs / f"{arm}-{target}-{seed}.json").exists()]
    print(f"{len(jobs)} runs to do", flush=True)
    with ProcessPoolExecutor(args.jobs) as pool:
        for row in pool.map(run, jobs):
            (runs / f"{row['arm']}-{row['target']}-{row['seed']}.json").write_text(json.dumps(row))
            print(f"{row['arm']:>14} {row['target']:<8} seed {row['seed']}: target acc {row['target_acc']:.3f} "
                  f"({row['seconds']:.0f} s)", flush=True)

    rows = [json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))]
    rows = [r for r in rows if r["target"] in args.targets]
    text = "\n".join([f"Command: `{command}`", "", *report(rows, args.arms, args.targets), "",
                      (f"{len(rows)} runs, {sum(r['seconds'] for r in rows) / 60:.0f} minutes of training "
                       "(wall clock summed).")])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
