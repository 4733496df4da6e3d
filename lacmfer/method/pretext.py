"""A face-pretrained trunk for SynthFER: face identification on people no domain shows.

The released LA-CMFER starts from a trunk pretrained on faces (docs/METHOD.md §2); on
the embedded benchmark the same role is played by a trunk trained here, once, to tell
apart `identities` synthetic people (`lacmfer.data.synth.pretext_identity`, a seed
stream no domain uses) from `images_per_identity` web-like photos each, with any
expression, pose, crop and lighting. Expression labels are never used.

The trained trunk is cached content-addressed, like the decoded images:

    <cache_dir>/pretext-trunk-w<width>-<size>px-<key[:16]>.pt

`key` is a sha256 over this module's format version, SynthFER's generator version, the
model width, the image size and every `model.pretext` setting, so any change trains a
new trunk on next use and an unchanged config reuses the file. Builders take the cache
folder's lock and write atomically, so trials starting together train it once.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, conv1x1
from tqdm import tqdm

from lacmfer.config import ExperimentConfig, PretextConfig
from lacmfer.data.augment import IMAGENET_MEAN, IMAGENET_STD
from lacmfer.data.cache import build_lock
from lacmfer.data.synth import GENERATOR_VERSION, pretext_identity, render_pretext_sample
from lacmfer.files import atomic_path
from lacmfer.method.model import Trunk

# Bump when the pretext network, its training or the file layout changes.
PRETEXT_FORMAT_VERSION = 1
# Photos of every person kept out of training to measure identification accuracy.
_HELD_OUT_PER_IDENTITY = 2


def pretext_key(width: float, image_size: int, pretext: PretextConfig) -> str:
    """sha256 hex digest of everything the pretext trunk depends on."""
    record = {"format": PRETEXT_FORMAT_VERSION, "synthfer": GENERATOR_VERSION, "width": width,
              "image_size": image_size, "pretext": pretext.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def pretext_trunk_path(cfg: ExperimentConfig) -> Path:
    """Where the pretext trunk of this config's width, image size and pretext settings lives."""
    key = pretext_key(cfg.model.width, cfg.data.image_size, cfg.model.pretext)
    return cfg.data.resolved_cache_dir / f"pretext-trunk-w{cfg.model.width:g}-{cfg.data.image_size}px-{key[:16]}.pt"


def _render_people(seed: int, numbers: list[int], per_identity: int, size: int) -> np.ndarray:
    """Photos 0 .. per_identity-1 of each pretext person: uint8 [len(numbers) · per_identity, size, size, 3]."""
    photos = []
    for number in numbers:
        person = pretext_identity(seed, number)
        photos += [np.asarray(render_pretext_sample(seed, person, number, k, size)) for k in range(per_identity)]
    return np.stack(photos)


def render_pretext_set(pretext: PretextConfig, size: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Every pretext photo (uint8 [N, size, size, 3]) and its person number, person by person.

    The pixels depend only on (seed, person, photo index), so any number of worker
    processes gives the same array.
    """
    per = pretext.images_per_identity + _HELD_OUT_PER_IDENTITY
    people = list(range(pretext.identities))
    chunks = [people[i:i + 8] for i in range(0, len(people), 8)]
    workers = min(os.cpu_count() or 1, 8) if len(people) * per >= 600 else 1  # spawning costs ~1 s
    parts = []
    with tqdm(total=len(people) * per, desc="pretext photos", unit="img", disable=not progress) as bar:
        if workers == 1:
            for chunk in chunks:
                parts.append(_render_people(pretext.seed, chunk, per, size))
                bar.update(len(parts[-1]))
        else:
            # spawn, not fork: the caller holds torch threads.
            with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for part in pool.map(_render_people, [pretext.seed] * len(chunks), chunks,
                                     [per] * len(chunks), [size] * len(chunks)):
                    parts.append(part)
                    bar.update(len(part))
    return np.concatenate(parts), np.repeat(np.arange(len(people)), per)


class PretextNet(nn.Module):
    """The LA-CMFER trunk, one more ResNet stage (2u → 4u, stride 2), pooling and an identity classifier."""

    def __init__(self, unit: int, identities: int) -> None:
        super().__init__()
        self.trunk = Trunk(unit)
        downsample = nn.Sequential(conv1x1(2 * unit, 4 * unit, stride=2), nn.BatchNorm2d(4 * unit))
        self.head = nn.Sequential(BasicBlock(2 * unit, 4 * unit, stride=2, downsample=downsample),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * unit, identities))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))


def _network_input(pixels: Tensor, augment: bool, generator: torch.Generator | None = None) -> Tensor:
    """uint8 [B, S, S, 3] → normalised float [B, 3, S, S]; training also mirrors and greys half/a third at random."""
    x = pixels.permute(0, 3, 1, 2).float() / 255
    if augment:
        flip = torch.rand(len(x), generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        # Three of the six domains are grayscale: identities must not hinge on colour.
        grey = torch.rand(len(x), generator=generator) < 1 / 3
        x = torch.where(grey[:, None, None, None], x.mean(1, keepdim=True).expand_as(x), x)
    mean = torch.tensor(IMAGENET_MEAN)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD)[None, :, None, None]
    return (x - mean) / std


def train_pretext_trunk(width: float, image_size: int, pretext: PretextConfig,
                        progress: bool = True) -> tuple[dict[str, Tensor], float]:
    """Train face identification from scratch; return (trunk state dict, held-out identification accuracy).

    SGD with Nesterov momentum and a cosine learning-rate decay over `pretext.steps`
    batches, label smoothing 0.1; the held-out photos are the last two of each person.
    """
    pixels, people = render_pretext_set(pretext, image_size, progress)
    held_out = np.tile(np.arange(pretext.images_per_identity + _HELD_OUT_PER_IDENTITY)
                       >= pretext.images_per_identity, pretext.identities)
    train_x, train_y = torch.from_numpy(pixels[~held_out]), torch.from_numpy(people[~held_out])
    test_x, test_y = torch.from_numpy(pixels[held_out]), torch.from_numpy(people[held_out])

    # Seeded without touching the caller's random stream: a run that trains the trunk and
    # one that finds it cached must continue identically.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(pretext.seed)
        net = PretextNet(max(1, round(64 * width)), pretext.identities)
    generator = torch.Generator().manual_seed(pretext.seed)
    optimizer = torch.optim.SGD(net.parameters(), lr=pretext.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, pretext.steps)
    net.train()
    for _ in tqdm(range(pretext.steps), desc=f"pretext trunk (width {width:g})", unit="step", disable=not progress):
        batch = torch.randint(len(train_y), (pretext.batch_size,), generator=generator)
        loss = F.cross_entropy(net(_network_input(train_x[batch], True, generator)), train_y[batch],
                               label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    net.eval()
    with torch.no_grad():
        predicted = torch.cat([net(_network_input(x, False)).argmax(1) for x in test_x.split(256)])
    return net.trunk.state_dict(), float((predicted == test_y).float().mean())


def ensure_pretext_trunk(cfg: ExperimentConfig, progress: bool = True) -> Path:
    """The path of this config's pretext trunk, training and caching it first if it is not there."""
    path = pretext_trunk_path(cfg)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(path.parent):
        if not path.exists():  # another process may have trained it while we waited
            trunk, accuracy = train_pretext_trunk(cfg.model.width, cfg.data.image_size, cfg.model.pretext, progress)
            with atomic_path(path) as tmp:
                torch.save({"trunk": trunk, "identification_acc": accuracy,
                            "pretext": cfg.model.pretext.model_dump(mode="json")}, tmp)
            if progress:
                print(f"pretext trunk: identification accuracy {accuracy:.3f} on held-out photos "
                      f"of {cfg.model.pretext.identities} people; saved to {path}")
    return path


def read_pretext_trunk(path: Path) -> dict[str, Tensor]:
    """The trunk state dict stored by `ensure_pretext_trunk`."""
    return torch.load(path, map_location="cpu", weights_only=True)["trunk"]
