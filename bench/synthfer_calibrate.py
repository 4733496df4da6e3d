"""Calibrate SynthFER before any adaptation run: source-only vs the in-domain ceiling.

    python bench/synthfer_calibrate.py [--config configs/default.yaml] [--seeds 0] [--jobs 2]
                                       [--out results/synthfer_calibration.md] [--set key=value ...]

Only supervised runs (no LA-CMFER): for every target, source-only on the five other
domains and the in-domain ceiling (source-only on the target's own labels, see
`bench/synthfer_results.py`), at the config's budget. Prints and writes the per-target
table and checks the calibration targets of the embedded benchmark: mean ceiling at
least 60 %, mean source-only at least 40 %, and the ceiling at least 10 points above
source-only on the mean (a gap adaptation could close).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthfer_results import mean_std, run  # noqa: E402

from lacmfer.config import load_config  # noqa: E402
from lacmfer.data.domains import DOMAIN_NAMES  # noqa: E402
from lacmfer.data.loaders import load_split_data  # noqa: E402
from lacmfer.data.manifest import ensure_data  # noqa: E402

KINDS = ("source_only", "ceiling")
MIN_CEILING, MIN_SOURCE_ONLY, MIN_GAP = 60.0, 40.0, 10.0


def report(rows: list[dict], seeds: list[int], command: str) -> str:
    def accs(kind: str, target: str) -> list[float]:
        return [r["target_acc"] for r in rows if r["kind"] == kind and r["target"] == target]

    lines = ["| target | source-only | in-domain ceiling | gap (points) |", "|---|---|---|---|"]
    means = {kind: [] for kind in KINDS}
    for t in DOMAIN_NAMES:
        so, ceil = accs("source_only", t), accs("ceiling", t)
        if not so or not ceil:
            continue
        means["source_only"].append(100 * statistics.fmean(so))
        means["ceiling"].append(100 * statistics.fmean(ceil))
        lines.append(f"| {t} | {mean_std(so)} | {mean_std(ceil)} | {means['ceiling'][-1] - means['source_only'][-1]:+.1f} |")
    so_mean, ceil_mean = statistics.fmean(means["source_only"]), statistics.fmean(means["ceiling"])
    lines.append(f"| **mean** | {so_mean:.1f} | {ceil_mean:.1f} | {ceil_mean - so_mean:+.1f} |")
    checks = [
        (f"mean ceiling ≥ {MIN_CEILING:.0f} %", ceil_mean >= MIN_CEILING),
        (f"mean source-only ≥ {MIN_SOURCE_ONLY:.0f} %", so_mean >= MIN_SOURCE_ONLY),
        (f"ceiling − source-only ≥ {MIN_GAP:.0f} points", ceil_mean - so_mean >= MIN_GAP),
    ]
    minutes = sum(r["seconds"] for r in rows) / 60
    return "\n".join([
        f"Seeds {seeds}; target test accuracy (%) at the end of training, mean ± std over seeds.", "",
        *lines, "",
        "Calibration targets: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks) + ".",
        "", f"Command: `{command}` ({len(rows)} runs, {minutes:.0f} CPU-minutes of training).",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--targets", nargs="+", default=list(DOMAIN_NAMES), choices=DOMAIN_NAMES)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("results/synthfer_calibration.md"))
    args = parser.parse_args()

    cfg = load_config(args.config, args.overrides)
    ensure_data(cfg.data)
    for target in args.targets:  # build every cache once, before the workers race for it
        load_split_data(cfg, target, progress=True)
    jobs = [(k, t, s, args.config, args.overrides) for t in args.targets for s in args.seeds for k in KINDS]
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
