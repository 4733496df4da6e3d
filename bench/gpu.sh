#!/usr/bin/env bash
# The GPU benchmark: paper-size step (fp32, bf16), where a step's time goes, GPU memory
# per trial, and trials per hour with 1, 2 and 4 trials per GPU. One markdown table.
#
#   bash bench/gpu.sh           # one GPU, under 8 minutes
#   bash bench/gpu.sh --tiny    # a tiny size: checks the script, on the CPU if there is no GPU
#   bash bench/gpu.sh --cluster # splits at once on a simulated 32-slot cluster (logical GPUs:
#                               # CPU-bound, wants ~16 cores and ~16 GiB; bench/bench_cluster.py)
#
# See bench/bench_gpu.py (bench/bench_cluster.py) for what each number measures.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--cluster" ]]; then
  shift
  exec python bench/bench_cluster.py "$@"
fi
exec python bench/bench_gpu.py "$@"
