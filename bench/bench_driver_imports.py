"""What a split's driver process costs to start: its imports now against what it imported before.

    python bench/bench_driver_imports.py [--repeats 5]

A split driver (`search.driver_processes`) imports `search.driver` and the Tuner's modules.
Before, `trainables/` imported `lacmfer.run` at module level, which brings torch and
torchvision into every split driver; now only the trial workers import them. Both are
measured in fresh processes, each repeated ("now" first: the peak memory of children
only grows): the peak resident memory and the CPU seconds of the imports ("before"
imports today's modules plus what the old ones pulled in).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys

NOW = "import search.driver, search.tuner"
BEFORE = NOW + ", lacmfer.run.lifecycle, lacmfer.run.tb_logging, torchvision"


def measure(code: str) -> tuple[float, float]:
    """(peak resident MiB, CPU seconds) of a fresh interpreter running `code`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return after.ru_maxrss / 1024, cpu  # ru_maxrss: the largest child so far, in KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    results: dict[str, list[tuple[float, float]]] = {"now": [], "before": []}
    for _ in range(args.repeats):  # "now" first: ru_maxrss only grows, so its peak is read before "before" runs
        results["now"].append(measure(NOW))
    for _ in range(args.repeats):
        results["before"].append(measure(BEFORE))
    rows = {k: (max(r for r, _ in v), statistics.median(c for _, c in v)) for k, v in results.items()}
    print("| split driver imports | peak memory (MiB) | CPU (s, median) |\n|---|---:|---:|")
    for name, (rss, cpu) in rows.items():
        print(f"| {name} | {rss:.0f} | {cpu:.2f} |")
    print(f"\nmemory {rows['before'][0] / rows['now'][0]:.1f}x less, CPU {rows['before'][1] / rows['now'][1]:.1f}x less")
    return 0


if __name__ == "__main__":
    sys.exit(main())
