"""Source-only vs LA-CMFER on SynthFER, all six splits, several seeds, plus the in-domain ceiling.

    python bench/synthfer_results.py [--config configs/default.yaml] [--seeds 0 1 2] [--jobs 2]
                                     [--out docs/RESULTS.md] [--set key=value ...]

Every run uses the config as given (the paper's default loss weights; nothing is tuned);
`--set` changes it for all runs. Reported: target test accuracy of the mean logits at the
end of training (no checkpoint selection), mean ± std over seeds. The ceiling trains
source-only on the target's own labels: on its train list for RAF/FER2013/Aff, on a
stratified 80 % of the single list for the lab sets (tested on the other 20 %).
Writes a markdown report (the table, the command, per-split pseudo-label quality).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from lacmfer.config import ExperimentConfig, load_config
from lacmfer.data.domains import DOMAIN_NAMES
from lacmfer.data.loaders import SampleSet, SplitData, domain_ids, load_split_data, open_caches
from lacmfer.data.manifest import ensure_data, load_domains
from lacmfer.data.splits import Part, make_split, stratified_holdout
from lacmfer.trainer import Trainer

METHODS = ("source_only", "lacmfer")


def ceiling_data(cfg: ExperimentConfig, target: str) -> SplitData:
    """Train and test on the target's own labels (a supervised in-domain run)."""
    domains = load_domains(cfg.data)
    lists = domains[target]
    split = make_split(domains, target, 0.0, cfg.data.split_seed)
    if split.target_test_is_train:
        train_rows, test_rows = stratified_holdout(lists.train.labels, 0.2, cfg.data.split_seed, target)
        train, test = Part(target, lists.train, train_rows), Part(target, lists.test, test_rows)
    else:
        train, test = split.target_train, split.target_test
    decoded = open_caches(cfg.data, [train, test], progress=False)
    ids = domain_ids(cfg.data)
    train_set, test_set = SampleSet([train], decoded, ids), SampleSet([test], decoded, ids)
    # The split records the in-domain parts, so a lab set's test part is not taken for its stream.
    split = dataclasses.replace(split, target_train=train, target_test=test)
    return SplitData(split, train_set, None, train_set, test_set, None)


def run(job: tuple[str, str, int, str, list[str]]) -> dict:
    kind, target, seed, config_path, overrides = job
    cfg = load_config(config_path, [*overrides, f"seed={seed}", "resources.threads=1"])
    if kind == "ceiling":
        cfg = cfg.with_values({"loss.adaptation": "source_only"})
        trainer = Trainer(cfg, target, data=ceiling_data(cfg, target))
    else:
        cfg = cfg.with_values({"loss.adaptation": kind})
        trainer = Trainer(cfg, target)
    start = time.perf_counter()
    trainer.train_until(cfg.schedule.steps)
    metrics = trainer.evaluate()
    return {"kind": kind, "target": target, "seed": seed, "seconds": time.perf_counter() - start, **metrics}


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} ± {100 * std:.1f}"


def report(rows: list[dict], seeds: list[int], command: str) -> str:
    def acc(kind: str, target: str, key: str = "target_acc") -> list[float]:
        return [r[key] for r in rows if r["kind"] == kind and r["target"] == target]

    lines = [
        "| target | source-only | LA-CMFER | Δ (points) | in-domain ceiling |",
        "|---|---|---|---|---|",
    ]
    deltas, so_all, la_all = [], [], []
    for t in DOMAIN_NAMES:
        so, la, ceil = acc("source_only", t), acc("lacmfer", t), acc("ceiling", t)
        if not so:
            continue
        delta = 100 * (statistics.fmean(la) - statistics.fmean(so))
        deltas.append(delta)
        so_all.append(statistics.fmean(so))
        la_all.append(statistics.fmean(la))
        lines.append(f"| {t} | {mean_std(so)} | {mean_std(la)} | {delta:+.1f} | {mean_std(ceil) if ceil else 'n/a'} |")
    lines.append(f"| **mean** | {100 * statistics.fmean(so_all):.1f} | {100 * statistics.fmean(la_all):.1f} "
                 f"| {statistics.fmean(deltas):+.1f} | |")
    pl = ["", "Pseudo-label quality at the end of LA-CMFER training (target stream, multi-view rule):", "",
          "| target | pl accuracy | pl coverage | target acc global / local view |", "|---|---|---|---|"]
    for t in DOMAIN_NAMES:
        if acc("lacmfer", t):
            pl.append(f"| {t} | {mean_std(acc('lacmfer', t, 'pl_acc'))} | {mean_std(acc('lacmfer', t, 'pl_coverage'))} "
                      f"| {mean_std(acc('lacmfer', t, 'target_acc_g'))} / {mean_std(acc('lacmfer', t, 'target_acc_l'))} |")
    minutes = sum(r["seconds"] for r in rows) / 60
    return "\n".join([
        f"Seeds {seeds}; target test accuracy (%) at the end of training, mean ± std over seeds.",
        "", *lines, *pl, "",
        f"Command: `{command}` ({len(rows)} runs, {minutes:.0f} CPU-minutes of training).",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--targets", nargs="+", default=list(DOMAIN_NAMES), choices=DOMAIN_NAMES)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-ceiling", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("results/synthfer_results.md"))
    args = parser.parse_args()

    cfg = load_config(args.config, args.overrides)
    ensure_data(cfg.data)
    for target in args.targets:  # build every cache once, before the workers race for it
        load_split_data(cfg, target, progress=True)
    kinds = [*METHODS, *([] if args.no_ceiling else ["ceiling"])]
    jobs = [(k, t, s, args.config, args.overrides) for t in args.targets for s in args.seeds for k in kinds]
    rows = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for row in pool.map(run, jobs):
            rows.append(row)
            print(f"{row['kind']:>12} {row['target']:<8} seed {row['seed']}: target acc {row['target_acc']:.3f} "
                  f"({row['seconds']:.0f} s)", flush=True)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    text = report(rows, args.seeds, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
