"""Batched augmentation against torchvision's per-image transforms, image by image."""

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from lacmfer.config import AugmentConfig
from lacmfer.data.augment import IMAGENET_MEAN, IMAGENET_STD, BatchAugment, network_input

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)
NO_GEOMETRY = {"hflip": False, "rotation": 0.0, "translate": 0.0, "scale_min": 1.0, "scale_max": 1.0}
NO_COLOUR = {"color_jitter": 0.0, "grayscale": 0.0}


def _images(batch: int, size: int, low: int = 0, high: int = 256) -> torch.Tensor:
    return torch.randint(low, high, (batch, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(7))


def test_geometry_is_torchvisions_flip_then_affine_per_image():
    size, images = 32, _images(64, 32)
    augment = BatchAugment(AugmentConfig(**NO_COLOUR), size)
    out = augment(images, seed=5)
    draws = augment.draws(64, size, seed=5)
    assert draws.flip.any() and not draws.flip.all() and len(set(draws.angle.tolist())) == 64
    for i in range(64):
        ref = images[i].float() / 255
        if draws.flip[i]:
            ref = TF.horizontal_flip(ref)
        ref = TF.affine(ref, angle=float(draws.angle[i]), translate=[int(v) for v in draws.translate[i]],
                        scale=float(draws.scale[i]), shear=[0.0, 0.0], interpolation=InterpolationMode.NEAREST)
        torch.testing.assert_close(out[i], (ref - MEAN) / STD, rtol=0, atol=1e-5)


def test_colour_is_torchvisions_jitter_in_drawn_order_then_grayscale():
    # Mid-range pixels: no op pushes a value out of [0, 1], where torchvision clamps after each op.
    size, images = 16, _images(256, 16, low=90, high=150)
    augment = BatchAugment(AugmentConfig(grayscale=0.5, **NO_GEOMETRY), size)
    out = augment(images, seed=3)
    draws = augment.draws(256, size, seed=3)
    assert 0 < draws.grayscale.sum() < 256
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for i in range(256):
        ref = images[i].float() / 255
        for op in draws.colour_order[i].tolist():
            ref = adjust[op](ref, float(draws.colour_factors[i, op]))
        if draws.grayscale[i]:
            ref = TF.rgb_to_grayscale(ref, num_output_channels=3)
        torch.testing.assert_close(out[i], (ref - MEAN) / STD, rtol=0, atol=1e-5)


def test_draws_follow_the_configured_distributions():
    aug = AugmentConfig()  # the paper defaults: jitter 0.2, grayscale 0.2, ±15°, 5 %, scale 0.9–1.05
    d = BatchAugment(aug, 64).draws(20_000, 64, seed=0)
    # 20,000 draws: a rate's standard error is below 0.004, so ±0.02 is five of them.
    assert d.flip.mean() == pytest.approx(0.5, abs=0.02)
    assert d.grayscale.mean() == pytest.approx(0.2, abs=0.02)
    assert -15 <= d.angle.min() < -14.9 and 14.9 < d.angle.max() <= 15
    assert set(np.unique(d.translate).tolist()) == {-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0}  # round(U(±3.2)) px
    assert 0.9 <= d.scale.min() < 0.901 and 1.049 < d.scale.max() <= 1.05
    assert 0.8 <= d.colour_factors.min() < 0.801 and 1.199 < d.colour_factors.max() <= 1.2
    assert sorted(d.colour_order[0].tolist()) == [0, 1, 2]
    assert len({tuple(o) for o in d.colour_order.tolist()}) == 6  # every order of the three ops occurs


def test_one_draw_per_image_and_the_seed_fixes_the_batch():
    images = _images(1, 32).expand(8, 3, 32, 32)  # eight copies of one image
    augment = BatchAugment(AugmentConfig(), 32)
    out = augment(images, seed=11)
    assert len({tuple(o.flatten()[:64].tolist()) for o in out}) == 8
    assert torch.equal(out, augment(images, seed=11))
    assert not torch.equal(out, augment(images, seed=12))


def test_network_input_resizes_larger_cache_images_and_normalises():
    images = torch.full((2, 3, 64, 64), 255, dtype=torch.uint8)
    out = network_input(images, 48)
    assert out.shape == (2, 3, 48, 48) and out.dtype == torch.float32
    torch.testing.assert_close(out[0, :, 0, 0], (1 - MEAN.flatten()) / STD.flatten())
    augmented = BatchAugment(AugmentConfig(), 48)(images, seed=0)
    assert augmented.shape == (2, 3, 48, 48)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augmentation_on_cuda_equals_the_cpu():
    images = _images(16, 32)
    colour = BatchAugment(AugmentConfig(**NO_GEOMETRY), 32)
    torch.testing.assert_close(colour(images.cuda(), seed=4).cpu(), colour(images, seed=4), rtol=0, atol=1e-5)
    # Nearest-neighbour sampling: a grid point within float rounding of a pixel border may
    # pick the other pixel on another device; every other pixel is the same.
    full = BatchAugment(AugmentConfig(), 32)
    differ = (full(images.cuda(), seed=4).cpu() - full(images, seed=4)).abs() > 1e-4
    assert differ.float().mean() < 1e-3
