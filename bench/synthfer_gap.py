"""SynthFER domain gap: how well a classifier trained on one domain does on the others.

    python bench/synthfer_gap.py --root /tmp/synthfer-small --scale small --seed 0 --grids docs/img [--cnn]

Generates SynthFER into --root if it is not there (`ensure_synthfer`) and reads the list
files back. Train/test parts: the `<D>_train`/`<D>_test` lists of the wild sets; a fixed
stratified 70/30 split of the single list of each lab set.

Linear probe (always): a ridge (least-squares) classifier on 24x24 grayscale pixels, each
image standardised to zero mean and unit variance (so brightness alone is not what
transfers or fails), training images also mirrored. Prints the 6x6 matrix (rows =
training domain, columns = test domain, diagonal = held-out in-domain accuracy) and the
leave-one-domain-out accuracy (trained on the five other domains pooled, tested on the
sixth) next to the in-domain one. Then the ambiguity ceiling: a classifier on the
expression actions themselves.

--cnn [TARGET ...]: the same in-domain vs leave-one-domain-out comparison for a small CNN
(torch, CPU, 40 px, the trainer's augmentation of docs/METHOD.md §4); minutes per target.
--cnn-extra N: also an in-domain CNN trained on N more images of the target rendered in
memory (`render_sample`, indices past the list; a third of the epochs), to see how far
more data takes it.
--grids DIR: writes `synthfer_grid.png` (rows = domains, columns = classes) and one
`synthfer_<domain>.png` sheet per domain.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lacmfer.data.domains import CLASSES, DOMAINS, NUM_CLASSES  # noqa: E402
from lacmfer.data.synth import (  # noqa: E402
    STYLES,
    ensure_synthfer,
    image_size,
    render_sample,
    sample_actions,
    sample_identity,
    shown_class,
)
from lacmfer.names import BUILTIN_DOMAIN_NAMES  # noqa: E402

FEATURE_SIZE = 24
CNN_SIZE = 40

Part = tuple[list[Image.Image], np.ndarray]  # images, labels


def read_list(root: Path, name: str) -> tuple[list[str], np.ndarray]:
    """A SynthFER list file: image paths and labels (SynthFER paths never contain spaces)."""
    rows = [line.split() for line in (root / name).read_text().splitlines() if line.strip()]
    return [r[0] for r in rows], np.array([int(r[1]) for r in rows])


def load_parts(root: Path) -> dict[str, dict[str, Part]]:
    """Per domain: {"train": part, "test": part}; lab sets split 70/30 per class (fixed seed)."""
    parts = {}
    for name in BUILTIN_DOMAIN_NAMES:
        info = DOMAINS[name]
        loaded = {}
        for key, list_name in (("train", info.train_list), ("test", info.test_list)):
            paths, y = read_list(root, list_name)
            loaded[key] = ([Image.open(root / p).convert("RGB") for p in paths], y)
        if not info.has_separate_test:
            images, y = loaded["train"]
            rng = np.random.default_rng(0)
            test = np.zeros(len(y), bool)
            for c in range(NUM_CLASSES):
                idx = rng.permutation(np.flatnonzero(y == c))
                test[idx[: round(0.3 * len(idx))]] = True
            loaded = {"train": ([im for im, t in zip(images, test) if not t], y[~test]),
                      "test": ([im for im, t in zip(images, test) if t], y[test])}
        parts[name] = loaded
    return parts


# ----------------------------------------------------------------------------- linear probe


def features(images: list[Image.Image], flip: bool = False) -> np.ndarray:
    """24x24 grayscale pixels (mirrored if `flip`), each image standardised (zero mean, unit variance)."""
    def pixels(img: Image.Image) -> np.ndarray:
        img = img.convert("L")
        if flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return np.asarray(img.resize((FEATURE_SIZE, FEATURE_SIZE), Image.Resampling.BOX), dtype=np.float64).ravel()

    x = np.stack([pixels(im) for im in images])
    x -= x.mean(axis=1, keepdims=True)
    return x / (x.std(axis=1, keepdims=True) + 1e-6)


def fit_ridge(x: np.ndarray, y: np.ndarray, lam: float = 0.1):
    """Ridge classifier: with Z the standardised features and Y the one-hot labels,
    W = (ZᵀZ + λ·n·I)⁻¹ Zᵀ(Y − Ȳ); predicts argmax ZW. Returns a predict function."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    target = np.eye(NUM_CLASSES)[y]
    w = np.linalg.solve(z.T @ z + lam * len(z) * np.eye(z.shape[1]), z.T @ (target - target.mean(0)))
    return lambda t: (((t - mu) / sd) @ w).argmax(1)


def probe(parts: dict[str, dict[str, Part]]) -> tuple[np.ndarray, np.ndarray]:
    """(acc[i, j] = trained on domain i's train part, tested on j's test part;
    leave-one-out[j] = trained on the other five train parts pooled, tested on j)."""
    train = {}
    for name, p in parts.items():
        images, y = p["train"]
        train[name] = (np.concatenate([features(images), features(images, flip=True)]), np.concatenate([y, y]))
    test = {name: (features(p["test"][0]), p["test"][1]) for name, p in parts.items()}
    acc = np.zeros((len(BUILTIN_DOMAIN_NAMES), len(BUILTIN_DOMAIN_NAMES)))
    for i, src in enumerate(BUILTIN_DOMAIN_NAMES):
        predict = fit_ridge(*train[src])
        for j, tgt in enumerate(BUILTIN_DOMAIN_NAMES):
            acc[i, j] = (predict(test[tgt][0]) == test[tgt][1]).mean()
    loo = np.zeros(len(BUILTIN_DOMAIN_NAMES))
    for j, tgt in enumerate(BUILTIN_DOMAIN_NAMES):
        srcs = [d for d in BUILTIN_DOMAIN_NAMES if d != tgt]
        predict = fit_ridge(np.concatenate([train[d][0] for d in srcs]), np.concatenate([train[d][1] for d in srcs]))
        loo[j] = (predict(test[tgt][0]) == test[tgt][1]).mean()
    return acc, loo


def action_ceiling(seed: int, n: int = 3000) -> np.ndarray:
    """Per domain, the accuracy of a quadratic least-squares classifier on the sampled
    expression actions themselves (no pixels): the ambiguity built into the labels
    (blends, low intensities, resting faces, label noise). Two thirds train, one third test."""
    out = np.zeros(len(BUILTIN_DOMAIN_NAMES))
    for k, name in enumerate(BUILTIN_DOMAIN_NAMES):
        style, rng = STYLES[name], np.random.default_rng([seed, k, 99])
        y = np.arange(n) % NUM_CLASSES
        actions = np.stack([sample_actions(rng, shown_class(rng, int(label), style), style,
                                           sample_identity(rng, name, style)) for label in y])
        x = np.concatenate([actions, actions ** 2, np.ones((n, 1))], 1)
        cut = 2 * n // 3
        w = np.linalg.lstsq(x[:cut], np.eye(NUM_CLASSES)[y[:cut]], rcond=None)[0]
        out[k] = ((x[cut:] @ w).argmax(1) == y[cut:]).mean()
    return out


# ----------------------------------------------------------------------------- small CNN


def cnn_accuracies(parts: dict[str, dict[str, Part]], targets: list[str], seed: int, scale: str,
                   extra: int = 0, epochs: int = 30) -> list[tuple[float, float, float | None]]:
    """Per target: (in-domain, leave-one-domain-out source-only, in-domain with `extra`
    rendered training images or None). A small CNN (3 conv blocks 16-32-64, BN, global
    pool) trained with the docs/METHOD.md §4 augmentation, AdamW + one-cycle."""
    import torch
    from torch import nn
    from torchvision.transforms import v2

    augment = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomAffine(15, translate=(0.05, 0.05), scale=(0.9, 1.05)),
                          v2.ColorJitter(0.2, 0.2, 0.2), v2.RandomGrayscale(0.2)])

    def tensor(images: list[Image.Image]) -> torch.Tensor:
        x = np.stack([np.asarray(im.convert("RGB").resize((CNN_SIZE, CNN_SIZE), Image.Resampling.BOX))
                      for im in images])
        return torch.tensor(x).permute(0, 3, 1, 2).float() / 255

    def fit_and_score(x: torch.Tensor, y: np.ndarray, xt: torch.Tensor, yt: np.ndarray, n_epochs: int) -> float:
        def block(i: int, o: int) -> nn.Module:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),
                                 nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

        torch.manual_seed(seed)  # every fit starts alike, whichever targets ran before
        net = nn.Sequential(block(3, 16), block(16, 32), block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Dropout(0.2), nn.Linear(64, NUM_CLASSES))
        labels = torch.tensor(y)
        opt = torch.optim.AdamW(net.parameters(), 3e-3, weight_decay=1e-3)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=n_epochs * ((len(y) + 63) // 64))
        gen = torch.Generator().manual_seed(seed)
        for _ in range(n_epochs):
            net.train()
            for idx in torch.randperm(len(y), generator=gen).split(64):
                loss = nn.functional.cross_entropy(net(torch.stack([augment(img) for img in x[idx]])), labels[idx],
                                                   label_smoothing=0.1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        net.eval()
        with torch.no_grad():
            return float((net(xt).argmax(1).numpy() == yt).mean())

    data = {name: {k: (tensor(p[k][0]), p[k][1]) for k in ("train", "test")} for name, p in parts.items()}
    results = []
    for tgt in targets:
        (x, y), (xt, yt) = data[tgt]["train"], data[tgt]["test"]
        in_domain = fit_and_score(x, y, xt, yt, epochs)
        srcs = [d for d in BUILTIN_DOMAIN_NAMES if d != tgt]
        # The pooled sources are ~5x one domain: a third of the epochs gives a comparable
        # (slightly larger) number of steps.
        source_only = fit_and_score(torch.cat([data[d]["train"][0] for d in srcs]),
                                    np.concatenate([data[d]["train"][1] for d in srcs]), xt, yt, max(1, epochs // 3))
        more = None
        if extra:
            # Labels cycle through the train part's, so the class priors stay the domain's.
            y_extra = np.resize(y, extra)
            start = 10**6  # past every list index, so none of these images is in a list
            rendered = [render_sample(seed, tgt, 0, start + k, int(label), image_size(tgt, scale))
                        for k, label in enumerate(y_extra)]
            more = fit_and_score(torch.cat([x, tensor(rendered)]), np.concatenate([y, y_extra]), xt, yt,
                                 max(1, epochs // 3))
        results.append((in_domain, source_only, more))
        extra_text = f"   in-domain +{extra} rendered {more:.3f}" if more is not None else ""
        print(f"  {tgt:<8} in-domain {in_domain:.3f}   source-only {source_only:.3f}{extra_text}", flush=True)
    return results


# ----------------------------------------------------------------------------- sample grids


def write_grids(root: Path, out: Path, per_cell: int = 3, cell: int = 64) -> list[Path]:
    """Sample grids from the generated files: the first images of each class of each train list."""
    out.mkdir(parents=True, exist_ok=True)
    samples = {}
    for name in BUILTIN_DOMAIN_NAMES:
        paths, y = read_list(root, DOMAINS[name].train_list)
        samples[name] = [[p for p, lab in zip(paths, y) if lab == c][: per_cell + 1] for c in range(NUM_CLASSES)]
    head, side = 16, 64
    grid = Image.new("RGB", (side + NUM_CLASSES * per_cell * cell, head + len(BUILTIN_DOMAIN_NAMES) * cell), "white")
    draw = ImageDraw.Draw(grid)
    for c, cls in enumerate(CLASSES):
        draw.text((side + c * per_cell * cell + 4, 2), cls, fill="black")
    for r, name in enumerate(BUILTIN_DOMAIN_NAMES):
        draw.text((4, head + r * cell + cell // 2 - 6), name, fill="black")
        for c in range(NUM_CLASSES):
            for k, p in enumerate(samples[name][c][:per_cell]):
                img = Image.open(root / p).convert("RGB").resize((cell, cell), Image.Resampling.BILINEAR)
                grid.paste(img, (side + (c * per_cell + k) * cell, head + r * cell))
    written = [out / "synthfer_grid.png"]
    grid.save(written[0], optimize=True)
    big, rows = 96, per_cell + 1
    for name in BUILTIN_DOMAIN_NAMES:  # one larger sheet per domain: columns = classes
        sheet = Image.new("RGB", (NUM_CLASSES * big, head + rows * big), "white")
        draw = ImageDraw.Draw(sheet)
        for c, cls in enumerate(CLASSES):
            draw.text((c * big + 4, 2), cls, fill="black")
            for k, p in enumerate(samples[name][c][:rows]):
                img = Image.open(root / p).convert("RGB").resize((big, big), Image.Resampling.BILINEAR)
                sheet.paste(img, (c * big, head + k * big))
        written.append(out / f"synthfer_{name}.png")
        sheet.save(written[-1], optimize=True)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("data/synthfer-small"))
    parser.add_argument("--scale", default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grids", type=Path, help="write the sample grids into this folder")
    parser.add_argument("--cnn", nargs="*", choices=BUILTIN_DOMAIN_NAMES, metavar="TARGET",
                        help="also train a small CNN (torch, CPU; minutes) for these targets (none named: all six)")
    parser.add_argument("--cnn-extra", type=int, default=0, metavar="N",
                        help="in-domain CNN also trained on N rendered images of the target")
    args = parser.parse_args()
    t0 = time.perf_counter()
    ensure_synthfer(args.root, args.scale, args.seed)
    print(f"SynthFER {args.scale} seed={args.seed} at {args.root} ({time.perf_counter() - t0:.1f} s)")
    parts = load_parts(args.root)
    acc, loo = probe(parts)
    print("\nlinear probe (ridge, 24x24 gray pixels): rows = trained on, columns = tested on")
    print("train \\ test".ljust(10) + "".join(d.rjust(9) for d in BUILTIN_DOMAIN_NAMES) + "   in-dom  mean other")
    for i, src in enumerate(BUILTIN_DOMAIN_NAMES):
        other = np.delete(acc[i], i).mean()
        print(src.ljust(10) + "".join(f"{a:9.3f}" for a in acc[i]) + f"   {acc[i, i]:6.3f}  {other:10.3f}")
    print("\nlinear probe, leave-one-domain-out (5 sources pooled -> target) vs in-domain:")
    for j, tgt in enumerate(BUILTIN_DOMAIN_NAMES):
        print(f"  {tgt:<8} source-only {loo[j]:.3f}   in-domain {acc[j, j]:.3f}")
    off = ~np.eye(len(acc), dtype=bool)
    print(f"\nmean in-domain {np.diag(acc).mean():.3f}, mean cross-domain {acc[off].mean():.3f}, "
          f"mean leave-one-out {loo.mean():.3f} (chance {1 / NUM_CLASSES:.3f})")
    ceiling = action_ceiling(args.seed)
    print("\nambiguity ceiling (classifier on the expression actions, no pixels): "
          + ", ".join(f"{d} {c:.3f}" for d, c in zip(BUILTIN_DOMAIN_NAMES, ceiling)))
    if args.cnn is not None:
        print(f"\nsmall CNN ({CNN_SIZE} px): in-domain vs leave-one-domain-out source-only:")
        results = cnn_accuracies(parts, args.cnn or list(BUILTIN_DOMAIN_NAMES), args.seed, args.scale, args.cnn_extra)
        print(f"  mean in-domain {np.mean([r[0] for r in results]):.3f}, "
              f"mean source-only {np.mean([r[1] for r in results]):.3f}")
    if args.grids:
        for path in write_grids(args.root, args.grids):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
