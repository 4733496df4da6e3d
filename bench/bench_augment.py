"""The docs/METHOD.md §4 training augmentation of one batch, by four implementations, side by side.

Each turns a uint8 (B, 3, S, S) batch into the ImageNet-normalised float network input
with horizontal flip, colour jitter 0.2, random grayscale 0.2 and random affine (±15°,
translate 5 %, scale 0.9–1.05):

  ours            lacmfer.data.augment.BatchAugment: one draw per image, fused tensor ops
  kornia          kornia.augmentation, one draw per image (same_on_batch=False)
  tv2 per image   torchvision transforms v2, called once per image (the pre-batching loaders)
  tv2 on batch    torchvision transforms v2 called once on the batch: ONE draw for the
                  whole batch, which is not what training needs; shown as a floor

    python bench/bench_augment.py [--batch 64] [--size 64] [--repeats 20] [--device cpu]

Prints a markdown table of median ms per batch (the four alternating every repeat).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bench.bench_step import CLOCKS, interleaved_median_ms  # noqa: E402
from lacmfer.config import AugmentConfig  # noqa: E402
from lacmfer.data.augment import IMAGENET_MEAN, IMAGENET_STD, BatchAugment  # noqa: E402


def torchvision_pipeline(aug: AugmentConfig) -> v2.Compose:
    return v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=aug.color_jitter, contrast=aug.color_jitter, saturation=aug.color_jitter),
        v2.RandomGrayscale(p=aug.grayscale),
        v2.RandomAffine(degrees=aug.rotation, translate=(aug.translate, aug.translate),
                        scale=(aug.scale_min, aug.scale_max)),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def kornia_pipeline(aug: AugmentConfig, device: torch.device):
    import kornia.augmentation as K  # a benchmark-only dependency: pip install kornia

    jitter = aug.color_jitter
    return torch.nn.Sequential(
        K.RandomHorizontalFlip(),
        K.ColorJitter(jitter, jitter, jitter, 0.0, p=1.0),
        K.RandomGrayscale(p=aug.grayscale),
        K.RandomAffine(aug.rotation, (aug.translate, aug.translate), (aug.scale_min, aug.scale_max),
                       resample="nearest", p=1.0),
        K.Normalize(torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)),
    ).to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clock", choices=list(CLOCKS), default="process",
                        help="process CPU time (default on the CPU; steady on a shared machine) or wall-clock")
    args = parser.parse_args()
    clock = CLOCKS["wall" if args.device != "cpu" else args.clock]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    aug = AugmentConfig()
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, device=device)
    ours, tv, kornia = BatchAugment(aug, args.size), torchvision_pipeline(aug), kornia_pipeline(aug, device)
    seeds = iter(range(10**9))

    def run(fn):
        def timed() -> None:
            fn()
            sync()
        return timed

    timed = interleaved_median_ms({
        "ours": run(lambda: ours(images, next(seeds))),
        "kornia": run(lambda: kornia(images.float() / 255)),
        "tv2 per image": run(lambda: torch.stack([tv(image) for image in images])),
        "tv2 on batch (one draw per batch)": run(lambda: tv(images)),
    }, args.repeats, clock=clock)

    base = timed["ours"]
    print(f"batch {args.batch}, {args.size} px, {args.device}, {args.threads} thread(s), median of {args.repeats}, "
          f"{'wall' if args.device != 'cpu' else args.clock} time")
    print("| implementation | ms per batch | × ours |\n|---|---:|---:|")
    for name, ms in timed.items():
        print(f"| {name} | {ms:.1f} | {ms / base:.2f} |")


if __name__ == "__main__":
    main()
