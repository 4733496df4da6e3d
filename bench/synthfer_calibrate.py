"""Calibrate SynthFER before any adaptation run: source-only vs the in-domain ceiling.

    python bench/synthfer_calibrate.py [--config configs/default.yaml] [--seeds 0] [--jobs 2]
                                       [--out results/synthfer_calibration.md] [--set key=value ...]

Only supervised runs (no LA-CMFER): for every target, source-only on the five other
domains and the in-domain ceiling (source-only on the target's own labels, see
`bench/synthfer_results.py`), at the config's budget. Prints and writes the per-target
table and checks the calibration targets of the embedded benchmark: mean ceiling at
least 60 %, mean source-only at least 40 %, and the ceiling at least 10 points above
source-only on the mean (a gap adaptation could close).

`--kinds` restricts the runs (e.g. `--kinds source_only` with `--set model.pretrained=...`
to see what a pretrained trunk does to source-only accuracy and confidence: the report
also gives the pseudo-label coverage at `loss.ps_threshold` that the target predictions
would have).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthfer_results import mean_std, run  # noqa: E402

from lacmfer.config import load_config  # noqa: E402
from lacmfer.data.loaders import load_split_data  # noqa: E402
from lacmfer.data.manifest import ensure_data  # noqa: E402
from lacmfer.method.pretrained import ensure_pretrained  # noqa: E402
from lacmfer.names import BUILTIN_DOMAIN_NAMES  # noqa: E402

KINDS = ("source_only", "ceiling")
MIN_CEILING, MIN_SOURCE_ONLY, MIN_GAP = 60.0, 40.0, 10.0


def report(rows: list[dict], seeds: list[int], command: str) -> str:
    def accs(kind: str, target: str) -> list[float]:
        return [r["target_acc"] for r in rows if r["kind"] == kind and r["target"] == target]

    def cell(kind: str, target: str) -> str:
        values = accs(kind, target)
        if not values:
            return "n/a"
        coverage = [r["pl_coverage"] for r in rows if r["kind"] == kind and r["target"] == target]
        return f"{mean_std(values)} ({100 * statistics.fmean(coverage):.0f} %)"

    lines = ["| target | source-only (pl coverage) | in-domain ceiling (pl coverage) | gap (points) |",
             "|---|---|---|---|"]
    means: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for t in BUILTIN_DOMAIN_NAMES:
        gap = "n/a"
        for kind in KINDS:
            if accs(kind, t):
                means[kind].append(100 * statistics.fmean(accs(kind, t)))
        if accs("source_only", t) and accs("ceiling", t):
            gap = f"{100 * (statistics.fmean(accs('ceiling', t)) - statistics.fmean(accs('source_only', t))):+.1f}"
        if accs("source_only", t) or accs("ceiling", t):
            lines.append(f"| {t} | {cell('source_only', t)} | {cell('ceiling', t)} | {gap} |")
    mean = {kind: statistics.fmean(v) if len(v) == len(BUILTIN_DOMAIN_NAMES) else None for kind, v in means.items()}
    checks = []
    if mean["source_only"] is not None:
        checks.append((f"mean source-only ≥ {MIN_SOURCE_ONLY:.0f} %", mean["source_only"] >= MIN_SOURCE_ONLY))
    if mean["ceiling"] is not None:
        checks.append((f"mean ceiling ≥ {MIN_CEILING:.0f} %", mean["ceiling"] >= MIN_CEILING))
    if mean["source_only"] is not None and mean["ceiling"] is not None:
        gap = mean["ceiling"] - mean["source_only"]
        lines.append(f"| **mean** | {mean['source_only']:.1f} | {mean['ceiling']:.1f} | {gap:+.1f} |")
        checks.append((f"ceiling − source-only ≥ {MIN_GAP:.0f} points", gap >= MIN_GAP))
    minutes = sum(r["seconds"] for r in rows) / 60
    return "\n".join([
        f"Seeds {seeds}; target test accuracy (%) at the end of training, mean ± std over seeds; in brackets "
        "the share of target-stream samples whose two views agree with confidence above ps_threshold.", "",
        *lines, "",
        "Calibration targets (over all six targets): "
        + ("; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks) or "not all targets run") + ".",
        "", f"Command: `{command}` ({len(rows)} runs, {minutes:.0f} minutes of training, wall clock summed).",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--targets", nargs="+", default=list(BUILTIN_DOMAIN_NAMES), choices=BUILTIN_DOMAIN_NAMES)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("results/synthfer_calibration.md"))
    args = parser.parse_args()

    cfg = load_config(args.config, args.overrides)
    ensure_data(cfg.data)
    torch.set_num_threads(1)  # a pretext trunk trains here, before the workers start
    start = time.perf_counter()
    ensure_pretrained(cfg)
    if cfg.model.pretrained is not None:
        print(f"trunk weights ready in {time.perf_counter() - start:.1f} s", flush=True)
    for target in args.targets:  # build every cache once, before the workers race for it
        load_split_data(cfg, target, progress=True)
    jobs = [(k, t, s, args.config, args.overrides) for t in args.targets for s in args.seeds for k in args.kinds]
    rows = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for row in pool.map(run, jobs):
            rows.append(row)
            print(f"{row['kind']:>12} {row['target']:<8} seed {row['seed']}: target acc {row['target_acc']:.3f} "
                  f"({row['seconds']:.0f} s)", flush=True)
    text = report(rows, args.seeds, "python " + " ".join(shlex.quote(a) for a in sys.argv))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
