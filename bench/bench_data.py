"""Cached loading vs decoding the image files every time, through the same DataLoader.

Both sides yield the same thing: a (B, 3, S, S) uint8 batch of `decode_image` at the cache
size, then the same batch transform in the training process. "cache" gathers the rows
from the memory-mapped Arrow cache (`DecodedImages.take`, as the training loaders do);
"decode" opens, decodes and resizes each PNG/JPEG every time. Two pipelines separate
where time goes: "load" (the uint8 batch only) and "train" (plus the docs/METHOD.md §4 training
augmentation, batched: `lacmfer.data.augment.BatchAugment` with the config's defaults).

    python bench/bench_data.py                      # 400 generated 256x256 PNG/JPEG images
    python bench/bench_data.py --synthfer small     # 400 images of a fresh SynthFER (128 px PNGs)
    python bench/bench_data.py --images DIR         # 400 of the *.png/*.jpg under DIR

Prints a markdown table of images/s per DataLoader worker count and the cache speed-up
(the same ratio per worker, since both sides use the same workers).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lacmfer.config import AugmentConfig  # noqa: E402
from lacmfer.data.augment import BatchAugment  # noqa: E402
from lacmfer.data.cache import DecodedImages, decode_image, load_or_build  # noqa: E402
from lacmfer.data.synth import generate_synthfer  # noqa: E402

BatchTransform = Callable[[torch.Tensor, int], torch.Tensor]


def _uint8_only(images: torch.Tensor, seed: int) -> torch.Tensor:
    return images


class CachedBatches(Dataset):
    """Item b: the rows of batch b gathered from the memory-mapped cache, channels first."""

    def __init__(self, images: DecodedImages, batches: list[np.ndarray]):
        self.images, self.batches = images, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.images.take(self.batches[b]).transpose(0, 3, 1, 2)))


class DecodedBatches(Dataset):
    """Item b: the same images, decoded from their files on every access."""

    def __init__(self, paths: Sequence[Path], size: int, batches: list[np.ndarray]):
        self.paths, self.size, self.batches = list(paths), size, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> torch.Tensor:
        images = np.stack([decode_image(self.paths[i], self.size) for i in self.batches[b]])
        return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def write_face_like_images(folder: Path, count: int, side: int, seed: int) -> list[Path]:
    """Smooth backgrounds with a face-like ellipse and mild noise, half JPEG and half PNG.

    Photo-like content matters: pure noise would make PNG decoding unrealistically slow.
    """
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        low = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        image = Image.fromarray(low).resize((side, side), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(image)
        cx, cy, rx, ry = side // 2, side // 2, int(side * rng.uniform(0.25, 0.35)), int(side * rng.uniform(0.32, 0.42))
        skin = tuple(int(v) for v in rng.integers(90, 230, 3))
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=skin)
        for dx in (-rx // 2, rx // 2):
            draw.ellipse((cx + dx - 8, cy - ry // 4 - 5, cx + dx + 8, cy - ry // 4 + 5), fill=(30, 30, 30))
        draw.arc((cx - rx // 2, cy + ry // 4, cx + rx // 2, cy + ry // 2), 0, 180, fill=(120, 20, 20), width=4)
        image = image.filter(ImageFilter.GaussianBlur(1.0))
        noisy = np.asarray(image, dtype=np.int16) + rng.integers(-4, 5, (side, side, 3))
        image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        path = folder / (f"{i:04d}.jpg" if i % 2 else f"{i:04d}.png")
        image.save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))
        paths.append(path)
    return paths


def random_batches(count: int, samples: int, batch_size: int, seed: int) -> list[np.ndarray]:
    rows = np.random.default_rng(seed).integers(0, count, samples)
    return [rows[i : i + batch_size] for i in range(0, samples, batch_size)]


def images_per_second(dataset: Dataset, transform: BatchTransform, workers: int) -> float:
    """Throughput of one pass over the dataset's batches, each transformed in this process;
    the first batch (worker start) is not timed."""
    batches = iter(DataLoader(dataset, batch_size=None, num_workers=workers))
    first = len(transform(next(batches), 0))
    start = time.perf_counter()
    seen = sum(len(transform(batch, seed)) for seed, batch in enumerate(batches, start=1))
    elapsed = time.perf_counter() - start
    assert first + seen == sum(len(b) for b in dataset.batches)
    return seen / elapsed


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    origin = parser.add_mutually_exclusive_group()
    origin.add_argument("--images", type=Path, help="folder of PNG/JPEG images (default: generate)")
    origin.add_argument("--synthfer", choices=["tiny", "small", "full"], help="generate SynthFER at this scale")
    parser.add_argument("--count", type=int, default=400, help="images to use (spread over the folder)")
    parser.add_argument("--side", type=int, default=256, help="side of generated images")
    parser.add_argument("--size", type=int, default=112, help="cache size = network input size")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts")
    parser.add_argument("--samples", type=int, default=1536, help="images drawn per measurement")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="median of this many passes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one core per loading process, on both sides

    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        if args.images or args.synthfer:
            folder = args.images or Path(tmp) / "synthfer"
            if args.synthfer:
                generate_synthfer(folder, args.synthfer, args.seed, progress=False)
            found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
            if not found:
                raise SystemExit(f"no PNG/JPEG images under {folder}")
            paths = [found[i] for i in np.linspace(0, len(found) - 1, min(args.count, len(found))).astype(int)]
            source = f"{len(paths)} of {len(found)} images of " + (f"SynthFER {args.synthfer}" if args.synthfer
                                                                   else str(folder))
        else:
            paths = write_face_like_images(Path(tmp), args.count, args.side, args.seed)
            source = f"{len(paths)} generated {args.side}x{args.side} images (half PNG, half JPEG)"

        start = time.perf_counter()
        cached = load_or_build(paths, [0] * len(paths), args.size, Path(tmp) / "cache", "bench",
                               progress=False, workers=1)
        build_s = time.perf_counter() - start

        pipelines: dict[str, BatchTransform] = {
            "load (uint8, no augmentation)": _uint8_only,
            "train augmentation (batched)": BatchAugment(AugmentConfig(), args.size),
        }
        rows = []
        for workers in args.workers:
            for pipeline, transform in pipelines.items():
                rates: dict[str, list[float]] = {"decode": [], "cache": []}
                for repeat in range(args.repeats):  # interleaved so machine load hits both sides alike
                    batches = random_batches(len(paths), args.samples, args.batch_size, args.seed + repeat)
                    sides = {"decode": DecodedBatches(paths, args.size, batches), "cache": CachedBatches(cached, batches)}
                    for side, dataset in sides.items():
                        rates[side].append(images_per_second(dataset, transform, workers))
                decode, cache = (statistics.median(rates[s]) for s in ("decode", "cache"))
                rows.append((workers, pipeline, decode, cache))

    print(f"{source}; cache {args.size}px built in {build_s:.1f} s with 1 thread; batch {args.batch_size}, "
          f"{args.samples} draws per pass, median of {args.repeats}; torch threads 1\n")
    print("| workers | pipeline | decode files (img/s) | cache (img/s) | cache speed-up |")
    print("|---|---|---|---|---|")
    for workers, pipeline, decode, cache in rows:
        print(f"| {workers} | {pipeline} | {decode:,.0f} | {cache:,.0f} | {cache / decode:.1f}× |")


if __name__ == "__main__":
    main()
