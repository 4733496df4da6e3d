#!/usr/bin/env bash
# Issue 26's live check (protocol in docs/RESULTS.md, "The live check"): on CK and RAF, for
# search seeds 0, 1, 2, random + FIFO with 8 trials against the default TPE + ASHA with 12,
# each search's best configs trained on seeds 0 1 2 (source-only once, beside the first).
# Resumable: a search or final training that already finished is skipped.
#   bash bench/live_check.sh [RESULTS_DIR]      (default /tmp/live_check; about 2 h on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/live_check}
mkdir -p "$out"
search() {  # name, extra tune.py arguments...
  local name=$1; shift
  if [[ -f $out/$name/summary.md ]]; then return; fi
  if [[ -d $out/$name ]]; then python tune.py --resume --name "$name" --results "$out"
  else python tune.py --targets CK RAF --name "$name" --results "$out" "$@"; fi
}
first=1
for s in 0 1 2; do  # one search seed at a time, both arms searched then trained: a partial run is usable
  search "random_fifo_s$s" --num-samples 8 --set search.seed=$s --set search.sampler=random --set search.scheduler=fifo
  search "tpe_asha_s$s" --num-samples 12 --set search.seed=$s
  for arm in random_fifo tpe_asha; do
    exp=$out/${arm}_s$s
    baseline=(); if (( first )); then baseline=(--baseline source_only); first=0; fi
    if [[ -f $exp/final/report.md ]]; then continue; fi
    resume=(); if [[ -d $exp/final ]]; then resume=(--resume); fi
    python train.py --experiment "$exp" --seeds 0 1 2 "${baseline[@]}" "${resume[@]}" --no-progress
  done
done
echo "live check done: $out"
