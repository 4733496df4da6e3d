#!/usr/bin/env bash
# The GPU benchmark: paper-size step (fp32, bf16), where a step's time goes, GPU memory
# per trial, and trials per hour with 1, 2 and 4 trials per GPU. One markdown table.
#
#   bash bench/gpu.sh           # one GPU, under 8 minutes
#   bash bench/gpu.sh --tiny    # a tiny size: checks the script, on the CPU if there is no GPU
#
# See bench/bench_gpu.py for what each number measures.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python bench/bench_gpu.py "$@"
