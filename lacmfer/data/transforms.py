"""Augmentation of SPEC §4 with torchvision transforms v2, on uint8 CHW tensors.

Images arrive from the cache already resized to the cache size as uint8; geometric and
colour augmentation run on uint8 (cheaper than float), then one conversion to float and
ImageNet normalisation.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from lacmfer.config import AugmentConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_network_input(image_size: int, cache_size: int) -> list[v2.Transform]:
    resize = [v2.Resize((image_size, image_size), antialias=True)] if image_size != cache_size else []
    return [*resize, v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def train_transform(image_size: int, aug: AugmentConfig, cache_size: int | None = None) -> v2.Compose:
    """uint8 (3, S, S) → float (3, image_size, image_size): flip, colour, grayscale, affine."""
    steps: list[v2.Transform] = []
    if aug.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if aug.color_jitter > 0:
        steps.append(v2.ColorJitter(brightness=aug.color_jitter, contrast=aug.color_jitter, saturation=aug.color_jitter))
    if aug.grayscale > 0:
        steps.append(v2.RandomGrayscale(p=aug.grayscale))
    if aug.rotation > 0 or aug.translate > 0 or (aug.scale_min, aug.scale_max) != (1.0, 1.0):
        steps.append(
            v2.RandomAffine(
                degrees=aug.rotation,
                translate=(aug.translate, aug.translate),
                scale=(aug.scale_min, aug.scale_max),
            )
        )
    return v2.Compose(steps + _to_network_input(image_size, cache_size or image_size))


def eval_transform(image_size: int, cache_size: int | None = None) -> v2.Compose:
    """uint8 (3, S, S) → normalised float (3, image_size, image_size), no randomness."""
    return v2.Compose(_to_network_input(image_size, cache_size or image_size))
