"""What evaluation costs in a trial: whole sets (before) vs fixed subsets (now), on CPU.

A trial trains `eval.interval` steps, then evaluates; the share that matters is
evaluation / (training + evaluation) per interval. It depends on how many images an
evaluation predicts relative to how many a training interval sees, so the sets are sized
with the paper's ratios on the Aff split (the largest) — stream 30,304, test 3,488,
source hold-out 4,817 (10 % of the pooled sources), batch 128 + 128, an evaluation every
100 steps — scaled by `--batch / 128`, and so are the subset sizes of the defaults
(4,096 target-stream, 2,048 hold-out images). The images are SynthFER tiny's, repeated.

  before  validators on the whole stream, source_val_acc on the whole hold-out,
          target_acc on the whole test set at every evaluation
  now     the fixed subsets, and the whole test set every `eval.test_every` evaluations
          (its cost averaged over them), every validator on (MixVal's probes are an extra
          `eval.mixval_probes` images, scaled like the subsets)
  now, without the evaluation validators
          the same with `lacmfer.method.validators.evaluation_validators` (DEV, MixVal, ClassAMI,
          im_st, entropy_st, ensemble) replaced by NaNs: what they add

    python bench/bench_eval.py [--width 0.25] [--size 64] [--batch 32] [--repeats 3]

Prints a markdown table (median seconds) and the evaluation share of a trial both ways.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lacmfer, not an installed one

from lacmfer.config import config_from_dict  # noqa: E402
from lacmfer.data.loaders import SampleSet, SplitData, domain_ids, load_split_data, open_caches  # noqa: E402
from lacmfer.data.splits import Part  # noqa: E402
from lacmfer.data.synth import generate_synthfer  # noqa: E402
from lacmfer.names import EVALUATION_VALIDATOR_NAMES  # noqa: E402
from lacmfer.run import trainer as trainer_module  # noqa: E402
from lacmfer.run.trainer import Trainer  # noqa: E402

PAPER_BATCH = 128
PAPER_SIZES = {"target stream": 30_304, "target test": 3_488, "source hold-out": 4_817}
PAPER_SUBSETS = {"target_subset": 4_096, "source_val_subset": 2_048, "mixval_probes": 1_024}


def resized(samples: SampleSet, count: int, cfg) -> SampleSet:
    """`samples` with its rows repeated (or cut) to `count` images."""
    part = samples.parts[0]
    rows = np.resize(part.rows, count)
    return SampleSet([Part(part.domain, part.manifest, rows)], open_caches(cfg.data, [part], progress=False),
                     domain_ids(cfg.data))


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32, help="per domain")
    parser.add_argument("--interval", type=int, default=100)
    parser.add_argument("--test-every", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scale = args.batch / PAPER_BATCH
    sizes = {k: round(v * scale) for k, v in PAPER_SIZES.items()}
    subsets = {k: round(v * scale) for k, v in PAPER_SUBSETS.items()}

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synthfer"
        generate_synthfer(root, scale="tiny", seed=0, progress=False)
        cfg = config_from_dict({
            "data": {"root": str(root), "image_size": args.size, "batch_size": args.batch, "num_workers": 0},
            "model": {"width": args.width, "global_blocks": [2, 1], "local_blocks": 1},
            "schedule": {"steps": 20_000},
            "eval": {"interval": args.interval, **subsets, "test_every": args.test_every},
            "resources": {"threads": args.threads},
        })
        tiny = load_split_data(cfg, "Aff", progress=False)
        data = SplitData(tiny.split, tiny.source_train, resized(tiny.source_val, sizes["source hold-out"], cfg),
                         resized(tiny.target_train, sizes["target stream"], cfg),
                         resized(tiny.target_test, sizes["target test"], cfg), None)
        now = Trainer(cfg, "Aff", data=data)
        before = Trainer(cfg.with_values({"eval.target_subset": None, "eval.source_val_subset": None,
                                          "eval.test_every": 1}), "Aff", data=data)
        before.model = now.model  # the same weights: only what is predicted differs

        def evaluate(trainer: Trainer, with_test: bool) -> None:
            trainer.cfg.eval.test_every = 1 if with_test else 10**9
            trainer.step_count = now.step_count
            trainer.evaluate()

        def evaluate_without_new_validators() -> None:
            real = trainer_module.evaluation_validators
            trainer_module.evaluation_validators = lambda *_: dict.fromkeys(EVALUATION_VALIDATOR_NAMES, math.nan)
            try:
                evaluate(now, with_test=False)
            finally:
                trainer_module.evaluation_validators = real

        times: dict[str, list[float]] = {"train": [], "now": [], "now, without": [], "now, test pass": [],
                                         "before": []}
        for _ in range(args.repeats):  # interleaved: machine load hits every part alike
            times["train"].append(seconds(lambda: now.train_until(now.step_count + args.interval)))
            times["now"].append(seconds(lambda: evaluate(now, with_test=False)))
            times["now, without"].append(seconds(evaluate_without_new_validators))
            times["now, test pass"].append(seconds(lambda: evaluate(now, with_test=True)))
            times["before"].append(seconds(lambda: evaluate(before, with_test=True)))

    t = {k: statistics.median(v) for k, v in times.items()}
    test_pass = max(0.0, t["now, test pass"] - t["now"])
    eval_now = t["now"] + test_pass / args.test_every
    print(f"width {args.width}, {args.size} px, batch {args.batch}+{args.batch}, {args.threads} thread(s), "
          f"median of {args.repeats}; sets: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items())
          + "; subsets: " + ", ".join(f"{k} {v:,}" for k, v in subsets.items()))
    print("| part of an interval | images | s |\n|---|---:|---:|")
    print(f"| training, {args.interval} steps | {2 * args.batch * args.interval:,} | {t['train']:.2f} |")
    print(f"| evaluation before (whole sets) | {sum(sizes.values()):,} | {t['before']:.2f} |")
    print(f"| evaluation now, subsets and MixVal's probes | {sum(subsets.values()):,} | {t['now']:.2f} |")
    print(f"| of which DEV, MixVal, ClassAMI, im_st, entropy_st, ensemble | {subsets['mixval_probes']:,} | "
          f"{t['now'] - t['now, without']:.2f} |")
    print(f"| evaluation now, + whole test set (every {args.test_every}) | {sizes['target test']:,} | "
          f"{test_pass:.2f} |")
    share_before = t["before"] / (t["train"] + t["before"])
    share_now = eval_now / (t["train"] + eval_now)
    eval_without = t["now, without"] + test_pass / args.test_every
    share_without = eval_without / (t["train"] + eval_without)
    print(f"\nevaluation share of a trial: before {100 * share_before:.1f} %, now {100 * share_now:.1f} % "
          f"({100 * share_without:.1f} % without DEV, MixVal, ClassAMI, im_st, entropy_st, ensemble)")


if __name__ == "__main__":
    main()
