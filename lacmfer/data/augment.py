"""Training augmentation of docs/METHOD.md §4 as batched tensor operations on the device.

A batch arrives as uint8 images straight from the cache, already on the training device
(CPU or GPU); every image gets its own random draw, with the distributions of
torchvision's `RandomHorizontalFlip`, `ColorJitter(b, c, s)`, `RandomGrayscale(p)` and
`RandomAffine(degrees, translate, scale)` (nearest-neighbour, black fill) applied in that
order. The draws come from a NumPy generator seeded per batch on the host, so a batch's
augmentation depends only on its seed: the same on every device and after a resume.

Why not a library call per transform (measured in `bench/bench_augment.py`, see
docs/BENCHMARKS.md): torchvision v2 draws one set of parameters per call, so one draw
per image means a Python loop over the batch; kornia draws per image but was almost four
times slower. Here the whole pipeline is a handful of tensor operations whatever the
batch size:

- colour: brightness (f x), saturation (f x + (1 − f) gray(x)), contrast
  (f x + (1 − f) mean gray level) and grayscale all map an image to
  α x + β gray(x) + κ mean gray(x); composed in each image's drawn order they keep that
  form, so the colour step is three numbers per image (`colour_coefficients`) applied
  with two fused multiply-adds that read the uint8 batch directly. torchvision clamps
  to [0, 1] after each colour op; here the clamp comes once, after all of them, which
  differs only for pixels that an earlier op pushed out of range.
- geometry: flip, rotation, translation (whole pixels, as torchvision rounds it) and
  scale are one inverse affine map per image, sampled with one `grid_sample`.
- then a resize when the cache is larger than the network input, and ImageNet
  normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lacmfer.config import AugmentConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R 601 luma weights, those of torchvision's rgb_to_grayscale.
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
_BRIGHTNESS, _CONTRAST, _SATURATION = 0, 1, 2


@dataclass(frozen=True)
class AugmentDraws:
    """The random draws of one batch, one row per image (NumPy: tiny arrays, on the host)."""

    flip: np.ndarray  # (B,) bool
    colour_order: np.ndarray  # (B, 3) a permutation of brightness, contrast, saturation
    colour_factors: np.ndarray  # (B, 3) brightness, contrast, saturation factors (1 = unchanged)
    grayscale: np.ndarray  # (B,) bool
    angle: np.ndarray  # (B,) degrees
    translate: np.ndarray  # (B, 2) whole pixels (x, y)
    scale: np.ndarray  # (B,)


def draw(aug: AugmentConfig, batch: int, size: int, rng: np.random.Generator) -> AugmentDraws:
    """One draw per image, with torchvision's distributions for an image of `size` px."""
    jitter = aug.color_jitter
    max_shift = aug.translate * size
    return AugmentDraws(
        flip=(rng.random(batch) < 0.5) if aug.hflip else np.zeros(batch, dtype=bool),
        colour_order=rng.random((batch, 3)).argsort(axis=1),
        colour_factors=rng.uniform(max(0.0, 1 - jitter), 1 + jitter, (batch, 3)),
        grayscale=rng.random(batch) < aug.grayscale,
        angle=rng.uniform(-aug.rotation, aug.rotation, batch),
        translate=np.round(rng.uniform(-max_shift, max_shift, (batch, 2))),
        scale=rng.uniform(aug.scale_min, aug.scale_max, batch),
    )


def colour_coefficients(draws: AugmentDraws) -> np.ndarray:
    """(B, 3): per image (α, β, κ) with colour(x) = α·x + β·gray(x) + κ·mean gray(x).

    gray(x) = wᵀx is broadcast to the three channels and `mean gray` is the image's mean
    gray level. Brightness (f x), saturation (f x + (1 − f) gray) and contrast
    (f x + (1 − f) mean gray of the current image) and grayscale all keep that form, so
    the jitter in each image's own order followed by grayscale composes to three numbers.
    """
    batch = len(draws.flip)
    gray_of_gray = sum(GRAY_WEIGHTS)  # gray(v·1) = wᵀ1 · v
    alpha, beta, kappa = np.ones(batch), np.zeros(batch), np.zeros(batch)
    for position in range(3):
        op = draws.colour_order[:, position]
        f = draws.colour_factors[np.arange(batch), op]
        gray_gain = alpha + beta * gray_of_gray  # gray(current) = gray_gain·gray(x) + κ wᵀ1 · mean gray(x)
        saturation, contrast = op == _SATURATION, op == _CONTRAST
        beta = f * beta + np.where(saturation, (1 - f) * gray_gain, 0.0)
        kappa = f * kappa + (1 - f) * (np.where(saturation, kappa * gray_of_gray, 0.0)
                                       + np.where(contrast, gray_gain + kappa * gray_of_gray, 0.0))
        alpha = f * alpha
    gray = draws.grayscale
    return np.stack([np.where(gray, 0.0, alpha), np.where(gray, alpha + beta * gray_of_gray, beta),
                     np.where(gray, kappa * gray_of_gray, kappa)], axis=1)


def inverse_affine(draws: AugmentDraws, size: int) -> np.ndarray:
    """(B, 2, 3) maps from output to input in grid_sample's normalised coordinates.

    As torchvision's affine around the image centre: input = R(−θ)/s · (output − t),
    then the horizontal flip (which torchvision applies before the affine) on top.
    """
    angle = np.deg2rad(draws.angle)
    cos, sin = np.cos(angle) / draws.scale, np.sin(angle) / draws.scale
    inverse = np.stack([np.stack([cos, sin], 1), np.stack([-sin, cos], 1)], 1)  # (B, 2, 2)
    shift = draws.translate * (2.0 / size)  # pixels → normalised units (square images)
    theta = np.concatenate([inverse, -(inverse @ shift[:, :, None])], axis=2)
    theta[:, 0] *= np.where(draws.flip, -1.0, 1.0)[:, None]
    return theta


def _normalise(x: Tensor) -> Tensor:
    inv_std = 1.0 / torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    shift = -torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1) * inv_std
    return torch.addcmul(shift, x, inv_std)  # (x − mean) / std in one pass


def _resize(x: Tensor, image_size: int) -> Tensor:
    if x.shape[-1] == image_size and x.shape[-2] == image_size:
        return x
    return F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)


def network_input(images: Tensor, image_size: int) -> Tensor:
    """uint8 (B, 3, S, S) → ImageNet-normalised float (B, 3, image_size, image_size)."""
    return _normalise(_resize(images.float() / 255, image_size))


def _gray(x: Tensor) -> Tensor:
    """(B, 3, H, W), uint8 or float → (B, 1, H, W) float luma, as torchvision's rgb_to_grayscale."""
    r, g, b = x.unbind(dim=1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(1)


class BatchAugment:
    """`augment(images, seed)`: uint8 (B, 3, S, S) on any device → augmented network input.

    The output is float32, ImageNet-normalised, (B, 3, image_size, image_size), on the
    device of the input.
    """

    def __init__(self, aug: AugmentConfig, image_size: int):
        self.aug = aug
        self.image_size = image_size
        self._colour = aug.color_jitter > 0 or aug.grayscale > 0
        self._geometry = aug.hflip or aug.rotation > 0 or aug.translate > 0 or (aug.scale_min, aug.scale_max) != (1, 1)
        self._base_grids: dict[tuple[int, torch.device], Tensor] = {}

    def draws(self, batch: int, size: int, seed: int) -> AugmentDraws:
        return draw(self.aug, batch, size, np.random.default_rng(seed))

    def _base_grid(self, size: int, device: torch.device) -> Tensor:
        """(S·S, 3) rows (x, y, 1) of the output pixel centres, normalised as grid_sample's."""
        key = (size, device)
        if key not in self._base_grids:
            centres = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1
            y, x = torch.meshgrid(centres, centres, indexing="ij")
            self._base_grids[key] = torch.stack([x, y, torch.ones_like(x)], dim=-1).view(-1, 3).to(device)
        return self._base_grids[key]

    def __call__(self, images: Tensor, seed: int) -> Tensor:
        batch, _, height, width = images.shape
        if height != width:
            raise ValueError(f"square images expected, got {height}×{width}")
        device = images.device
        d = self.draws(batch, height, seed)
        if self._colour:  # colour(x) = α x + β gray(x) + κ mean gray(x), then one clamp
            coefficients = torch.from_numpy(colour_coefficients(d) / 255).float().to(device, non_blocking=True)
            alpha, beta, kappa = coefficients.view(batch, 3, 1, 1).unbind(dim=1)
            gray = _gray(images)  # float from uint8 directly: no float copy of the batch first
            offset = torch.addcmul(kappa[:, None] * gray.mean(dim=(2, 3), keepdim=True), gray, beta[:, None])
            x = torch.addcmul(offset, images, alpha[:, None]).clamp_(0.0, 1.0)
        else:
            x = images * (1 / 255)
        if self._geometry:
            theta = torch.from_numpy(inverse_affine(d, height)).float().to(device, non_blocking=True)
            grid = (self._base_grid(height, device) @ theta.transpose(1, 2)).view(batch, height, width, 2)
            x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        return _normalise(_resize(x, self.image_size))
