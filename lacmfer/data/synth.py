"""SynthFER: a procedural multi-domain facial expression benchmark (issue 2, item 6).

`python -m lacmfer.data.synth --out DIR --scale tiny|small|full --seed N` draws cartoon
faces from identity parameters, poses one of the seven expressions with action-unit-like
parameters, renders them in the style of each of the six CMFER datasets and writes PNGs
plus list files in the field's format (`relative/path.png label`), so the embedded
benchmark goes through the same loading path as real data.

How an image comes about (all randomness from one per-image seed, see `image_seed`):

1. identity: face shape, skin tone, eye spacing and size, brows, nose, mouth, hair,
   glasses, beard, and a resting-face bias (some people look a little sad at rest);
   JAFFE, CK and Oulu draw it from a fixed pool of subjects, the wild sets fresh each time;
2. expression: `actions = intensity · P[y] (+ a blend towards y's neighbour) + jitter
   + resting bias`, where P holds one prototype row of `ACTIONS` per class; neighbouring
   classes share actions (fear–surprise raise brows and open eyes and mouth, disgust–anger
   lower brows and wrinkle the nose, sadness is a weak departure from neutral), so low
   intensities and blends are genuinely ambiguous; in-the-wild sets also flip a fraction
   of the rendered expressions away from the listed label (label noise);
3. domain style: pose, framing, background, lighting, occluders, colour and sensor
   effects of the dataset the domain is named after (see `STYLES`).

Class priors and train/test sizes follow `DOMAINS[...]` (the real counts); `full`
reproduces them exactly, `small` and `tiny` scale them down with a per-class minimum.
The same (seed, scale) gives byte-identical files whatever the number of worker processes.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import functools
import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from lacmfer.data.domains import CLASSES, DOMAINS, NUM_CLASSES
from lacmfer.errors import UserError, exit_on_user_error
from lacmfer.names import BUILTIN_DOMAIN_NAMES

GENERATOR_VERSION = "3"
META_FILE = "synthfer.json"
SCALES: tuple[str, ...] = ("tiny", "small", "full")

# Native side of the square images per scale; FER2013 is 48 px at every scale like the real set.
NATIVE_SIZE: dict[str, int] = {"tiny": 64, "small": 128, "full": 256}
FER_SIZE = 48
SUPERSAMPLE = 2  # shapes are drawn at 2x and box-filtered down: cheap anti-aliasing
# Face-crop geometry (see `face_placement`): at style scale 1 the face outline, crown to
# chin, is FACE_FILL frame heights; its origin sits FACE_ANCHOR half-heights above centre.
FACE_FILL = 1.04
FACE_ANCHOR = 0.05

# Images per domain (train + test) and the per-class minimum of every list, for the
# scaled-down sets; `full` uses the real counts as they are.
_SCALE_TOTALS: dict[str, dict[str, int]] = {
    "tiny": {"CK": 42, "JAFFE": 28, "Oulu": 35, "RAF": 70, "FER2013": 70, "Aff": 70},
    # small: the wild sets twice the lab sets' size or more, as the real ones are far larger (version 3:
    # at 840 each, FER2013 and Aff could not be learned from their own training lists).
    "small": {"CK": 420, "JAFFE": 140, "Oulu": 490, "RAF": 1680, "FER2013": 1680, "Aff": 1680},
}
_SCALE_MIN_PER_CLASS: dict[str, int] = {"tiny": 3, "small": 8, "full": 0}

# Action-unit-like expression parameters and the seven class prototypes (rows in CLASSES
# order). Values are in "full posed intensity" units; see `_draw_face` for their geometry.
ACTIONS: tuple[str, ...] = (
    "brow_raise", "brow_lower", "brow_inner", "eye_open", "lip_corner",
    "mouth_open", "lip_press", "nose_wrinkle", "lip_stretch",
)
_A = {name: i for i, name in enumerate(ACTIONS)}
PROTOTYPES = np.array([
    # raise lower inner  eye  corner open press nose stretch
    [1.0, 0.0, 0.2, 1.0, 0.0, 0.9, 0.0, 0.0, 0.0],    # surprise
    [0.6, 0.4, 0.9, 0.8, -0.2, 0.45, 0.0, 0.0, 0.9],  # fear
    [0.0, 0.5, 0.0, -0.4, -0.4, 0.15, 0.0, 1.0, 0.2],  # disgust
    [0.1, 0.0, 0.0, -0.35, 1.0, 0.35, 0.0, 0.0, 0.3],  # happiness
    [0.0, 0.2, 0.9, -0.3, -0.7, 0.0, 0.4, 0.0, 0.0],  # sadness
    [0.0, 1.0, 0.0, 0.3, -0.3, 0.1, 0.8, 0.3, 0.0],   # anger
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],    # neutral
])
_ACTION_LOW = np.array([0.0, 0.0, 0.0, -1.0, -1.2, 0.0, 0.0, 0.0, 0.0])
_ACTION_HIGH = np.array([1.2, 1.2, 1.2, 1.2, 1.2, 1.2, 1.2, 1.2, 1.2])
# The confusable pairs of real FER; a blend and a noisy label prefer the neighbour.
NEIGHBOUR: tuple[int, ...] = (1, 0, 5, 6, 6, 2, 4)


@dataclass(frozen=True)
class DomainStyle:
    """How one domain looks (ranges are sampled uniformly per image unless noted)."""

    grayscale: bool
    intensity: tuple[float, float]  # expression intensity
    blend_prob: float  # chance of blending towards the neighbour class
    label_noise: float  # chance that the rendered expression is not the listed label
    subjects: int  # size of the subject pool; 0 = a fresh identity per image
    roll_deg: float  # std of the in-plane rotation
    yaw: float  # max |yaw| (feature shift, 1 = strong profile-ish turn)
    scale: tuple[float, float]  # face height (crown to chin) in frame heights, over FACE_FILL
    shift: float  # max offset of the crop centre, fraction of the frame
    rise: float  # the dataset's crop convention: face centre above (+) or below the frame centre
    clutter: bool  # cluttered, blurred background vs a plain studio backdrop
    backdrop: tuple[float, float]  # plain backdrop grey level range (0-255)
    light: float  # max strength of the linear lighting gradient
    occlusion: float  # chance of an occluder (hand, sunglasses, hat, object)
    glasses: float  # chance of clear glasses
    noise: float  # sensor noise std (0-255)
    blur: tuple[float, float]  # final Gaussian blur radius range, in output pixels


STYLES: dict[str, DomainStyle] = {
    # Every set is a face crop, as a face detector or landmark alignment leaves it: the
    # face fills the frame (`scale` 1: the outline, crown to chin, is 1.04 frame heights,
    # so the hair top is cut and the ears touch the sides). The sets differ in how tight
    # the crop is and how much its position and size jitter (`scale`, `shift`, `rise`).
    # Lab sets: frontal, studio light, posed strong expressions, grayscale. CK: a
    # mid-grey backdrop shows at the corners.
    "CK": DomainStyle(grayscale=True, intensity=(0.75, 1.05), blend_prob=0.12, label_noise=0.0, subjects=120,
                      roll_deg=2.0, yaw=0.05, scale=(0.84, 0.94), shift=0.03, rise=0.0, clutter=False,
                      backdrop=(70, 140), light=0.15, occlusion=0.0, glasses=0.05, noise=1.5, blur=(0.0, 0.4)),
    # JAFFE: ten subjects, a light backdrop, light from above, the crop a little tighter and the face higher.
    "JAFFE": DomainStyle(grayscale=True, intensity=(0.55, 0.95), blend_prob=0.15, label_noise=0.0, subjects=10,
                         roll_deg=2.0, yaw=0.05, scale=(0.88, 0.96), shift=0.02, rise=0.03, clutter=False,
                         backdrop=(175, 225), light=0.25, occlusion=0.0, glasses=0.0, noise=1.0, blur=(0.3, 0.7)),
    # Oulu (near-infrared-like): active frontal light, dark, low contrast, sensor noise; the face a little lower.
    "Oulu": DomainStyle(grayscale=True, intensity=(0.7, 1.0), blend_prob=0.12, label_noise=0.0, subjects=80,
                        roll_deg=3.0, yaw=0.08, scale=(0.86, 0.96), shift=0.03, rise=-0.02, clutter=False,
                        backdrop=(5, 25), light=0.1, occlusion=0.0, glasses=0.2, noise=5.0, blur=(0.3, 0.7)),
    # In the wild: pose, clutter, lighting, occluders, subtler expressions, noisy labels.
    # RAF's crops are aligned on facial landmarks, so roll, offset and size barely vary;
    # yaw, clutter and photometry do.
    "RAF": DomainStyle(grayscale=False, intensity=(0.45, 1.0), blend_prob=0.3, label_noise=0.06, subjects=0,
                       roll_deg=3.0, yaw=0.4, scale=(0.92, 1.0), shift=0.015, rise=0.0, clutter=True,
                       backdrop=(0, 255), light=0.5, occlusion=0.25, glasses=0.15, noise=2.0, blur=(0.0, 0.6)),
    # FER2013: tight, roughly centred 48x48 crops, grayscale, low resolution upsampled,
    # uneven contrast.
    "FER2013": DomainStyle(grayscale=True, intensity=(0.45, 1.0), blend_prob=0.3, label_noise=0.10, subjects=0,
                           roll_deg=5.0, yaw=0.45, scale=(0.92, 1.06), shift=0.04, rise=0.01, clutter=True,
                           backdrop=(0, 255), light=0.5, occlusion=0.2, glasses=0.15, noise=3.0, blur=(0.0, 0.3)),
    # AffectNet: detector crops, not aligned: the widest jitter of offset and size, yaw,
    # warm colour, the most blended expressions.
    "Aff": DomainStyle(grayscale=False, intensity=(0.45, 1.0), blend_prob=0.35, label_noise=0.08, subjects=0,
                       roll_deg=5.0, yaw=0.55, scale=(0.82, 1.06), shift=0.06, rise=-0.02, clutter=True,
                       backdrop=(0, 255), light=0.6, occlusion=0.25, glasses=0.2, noise=2.5, blur=(0.0, 0.8)),
}


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class ListSpec:
    """One list file: its domain, name, image folder and per-class image counts."""

    domain: str
    name: str  # e.g. "RAF_train.txt"
    folder: str  # images live under DIR/<folder>/
    list_index: int  # 0 = train (or the single lab list), 1 = test
    counts: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.counts)


def scaled_counts(real: tuple[int, ...], total: int, minimum: int) -> tuple[int, ...]:
    """Per-class counts summing to about `total` in the proportions of `real`.

    Largest-remainder rounding of `real_c · total / Σ real`, then each class is raised to
    `minimum` (so rare classes exist at small scales; the total may grow a little).
    """
    exact = np.asarray(real, dtype=float) * total / sum(real)
    counts = np.floor(exact).astype(int)
    # Stable order: the largest remainders get the leftover images, ties by class id.
    order = sorted(range(len(real)), key=lambda c: (-(exact[c] - counts[c]), c))
    for c in order[: total - int(counts.sum())]:
        counts[c] += 1
    return tuple(int(max(minimum, n)) for n in counts)


def plan_lists(scale: str) -> list[ListSpec]:
    """The list files of one scale, in BUILTIN_DOMAIN_NAMES order (train before test)."""
    if scale not in SCALES:
        raise UserError(f"SynthFER scale {scale!r}: expected one of {', '.join(SCALES)}")
    specs = []
    for name in BUILTIN_DOMAIN_NAMES:
        info = DOMAINS[name]
        if info.has_separate_test:
            parts = [(info.train_list, "train", info.train_counts), (info.test_list, "test", info.test_counts)]
        else:
            parts = [(info.train_list, "", info.train_counts)]
        domain_real = sum(sum(counts) for _, _, counts in parts)
        for index, (list_name, sub, real) in enumerate(parts):
            if scale == "full":
                counts = tuple(real)
            else:
                share = round(_SCALE_TOTALS[scale][name] * sum(real) / domain_real)
                counts = scaled_counts(real, share, _SCALE_MIN_PER_CLASS[scale])
            folder = f"{name}/{sub}" if sub else name
            specs.append(ListSpec(name, list_name, folder, index, counts))
    return specs


def image_size(domain: str, scale: str) -> int:
    """Side of the square PNGs of a domain at a scale."""
    return FER_SIZE if domain == "FER2013" else NATIVE_SIZE[scale]


def image_seed(seed: int, domain: str, list_index: int, index: int) -> np.random.SeedSequence:
    """The seed of one image: only (seed, domain, list, index), so order and workers don't matter."""
    return np.random.SeedSequence([seed, BUILTIN_DOMAIN_NAMES.index(domain), list_index, 0, index])


def list_labels(seed: int, spec: ListSpec) -> np.ndarray:
    """The listed labels of a list in file order: its class counts, shuffled deterministically."""
    labels = np.repeat(np.arange(NUM_CLASSES), spec.counts)
    rng = np.random.default_rng([seed, BUILTIN_DOMAIN_NAMES.index(spec.domain), spec.list_index, 1])
    return rng.permutation(labels)


# ----------------------------------------------------------------------------- identity


_HAIR_COLOURS = np.array([(25, 20, 18), (58, 40, 28), (105, 72, 45), (196, 160, 98),
                          (150, 62, 32), (150, 148, 145), (222, 220, 214)], dtype=float)
_IRIS_COLOURS = np.array([(60, 38, 22), (35, 25, 20), (70, 100, 140), (80, 110, 70)], dtype=float)


@dataclass(frozen=True)
class Identity:
    """Who is on the picture: shape and colour parameters in face units (half-height 1)."""

    face_w: float  # half-width of the face outline
    squareness: float  # superellipse exponent of the outline
    chin_taper: float
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_style: int  # 0 short, 1 long, 2 bangs, 3 bald, 4 bun
    hairline: float
    eye_sep: float  # half the distance between the eye centres
    eye_y: float
    eye_rx: float
    eye_ry: float
    eye_tilt: float
    iris: tuple[float, float, float]
    brow_gap: float
    brow_thick: float
    brow_len: float
    nose_len: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip_thick: float
    lip: tuple[float, float, float]
    glasses: bool
    beard: int  # 0 none, 1 moustache, 2 full beard
    clothes: tuple[float, float, float]
    rest: tuple[float, ...]  # resting-face bias added to the actions


def _skin(rng: np.random.Generator, light: tuple[float, float]) -> np.ndarray:
    dark, pale = np.array([78, 52, 40.0]), np.array([250, 220, 198.0])
    t = rng.uniform(*light)
    return np.clip(dark + t * (pale - dark) + rng.normal(0, 6, 3), 0, 255)


def sample_identity(rng: np.random.Generator, domain: str, style: DomainStyle) -> Identity:
    """Draw a subject; JAFFE's distribution is narrow (ten Japanese women, long dark hair)."""
    jaffe = domain == "JAFFE"
    # Skin lightness: JAFFE narrow; Oulu's subjects (and near-infrared) render skin light.
    skin = _skin(rng, (0.72, 0.9) if jaffe else (0.5, 1.0) if domain == "Oulu" else (0.05, 1.0))
    if jaffe:
        hair, style_id = _HAIR_COLOURS[rng.integers(0, 2)], int(rng.choice([1, 1, 2]))
    else:
        hair = _HAIR_COLOURS[rng.integers(0, len(_HAIR_COLOURS))]
        style_id = int(rng.integers(0, 5))
    hair = np.clip(hair + rng.normal(0, 8, 3), 0, 255)
    lipstick = not jaffe and rng.random() < 0.15
    lip = np.array([170, 40, 55.0]) if lipstick else skin * np.array([0.86, 0.62, 0.62])
    beard = 0 if jaffe or rng.random() < 0.8 else int(rng.integers(1, 3))
    spread = 0.35 if jaffe else 1.0  # JAFFE: a narrow identity distribution

    def u(lo: float, hi: float) -> float:
        mid = (lo + hi) / 2
        return float(rng.uniform(mid - spread * (mid - lo), mid + spread * (hi - mid)))

    return Identity(
        face_w=u(0.68, 0.84), squareness=u(1.9, 2.8), chin_taper=u(0.15, 0.45),
        skin=tuple(skin), hair=tuple(hair), hair_style=style_id, hairline=u(-0.72, -0.55),
        eye_sep=u(0.32, 0.39), eye_y=u(-0.16, -0.06), eye_rx=u(0.14, 0.17),
        eye_ry=u(0.065, 0.085), eye_tilt=u(-0.02, 0.03),
        iris=tuple(_IRIS_COLOURS[0 if jaffe else rng.integers(0, len(_IRIS_COLOURS))]),
        brow_gap=u(0.14, 0.2), brow_thick=u(0.05, 0.08), brow_len=u(0.2, 0.27),
        nose_len=u(0.22, 0.32), nose_w=u(0.08, 0.12),
        mouth_y=u(0.44, 0.52), mouth_w=u(0.27, 0.34), lip_thick=u(0.04, 0.06),
        lip=tuple(np.clip(lip + rng.normal(0, 6, 3), 0, 255)),
        glasses=bool(rng.random() < style.glasses), beard=beard,
        clothes=tuple(rng.uniform(20, 235, 3)),
        # Resting face: a slightly raised/lowered mouth or brows, a wider or narrower eye.
        rest=tuple(rng.normal(0, [0.05, 0.05, 0.06, 0.12, 0.12, 0.03, 0.05, 0.03, 0.03]) * spread),
    )


@functools.lru_cache(maxsize=1024)
def subject(seed: int, domain: str, number: int, style: DomainStyle) -> Identity:
    """Subject `number` of a lab domain's pool (the same at every scale)."""
    rng = np.random.default_rng([seed, BUILTIN_DOMAIN_NAMES.index(domain), 2, number])
    return sample_identity(rng, domain, style)


# ----------------------------------------------------------------------------- expression


def sample_actions(rng: np.random.Generator, shown: int, style: DomainStyle, identity: Identity) -> np.ndarray:
    """Action parameters of one face showing class `shown` (formula in the module docstring)."""
    intensity = rng.uniform(*style.intensity)
    actions = intensity * PROTOTYPES[shown]
    if rng.random() < style.blend_prob:
        w = rng.uniform(0.15, 0.5)
        actions = (1 - w) * actions + w * intensity * PROTOTYPES[NEIGHBOUR[shown]]
    # Class-specific variants real datasets show: shouting anger, closed-mouth smiles.
    if shown == CLASSES.index("anger") and rng.random() < 0.3:
        actions[_A["mouth_open"]], actions[_A["lip_press"]] = 0.55 * intensity, 0.0
    if shown == CLASSES.index("happiness"):
        actions[_A["mouth_open"]] *= rng.uniform(0.0, 1.8)
    actions = actions + rng.normal(0, 0.08, len(ACTIONS)) + np.asarray(identity.rest)
    return np.clip(actions, _ACTION_LOW, _ACTION_HIGH)


def shown_class(rng: np.random.Generator, label: int, style: DomainStyle) -> int:
    """The expression actually rendered: the label, or (label noise) another class, half the time its neighbour."""
    if rng.random() >= style.label_noise:
        return label
    if rng.random() < 0.5:
        return NEIGHBOUR[label]
    return int((label + rng.integers(1, NUM_CLASSES)) % NUM_CLASSES)


# ----------------------------------------------------------------------------- drawing


class _Painter:
    """Draws face-unit shapes (origin at the face centre, y down, half-height 1) on a canvas.

    Pose: yaw shifts a point sideways in proportion to its depth (nose tip 1, eyes and
    mouth ~0.6, outline 0) and narrows the outline; roll rotates; scale and offset place
    the face in the frame.
    """

    def __init__(self, draw: ImageDraw.ImageDraw, cx: float, cy: float, half_h: float, roll: float, yaw: float):
        self.draw, self.cx, self.cy, self.h, self.yaw = draw, cx, cy, half_h, yaw
        self.cos, self.sin = math.cos(roll), math.sin(roll)

    def px(self, pts: np.ndarray, depth: float) -> list[tuple[float, float]]:
        x = pts[:, 0] * (1 - 0.12 * abs(self.yaw)) + self.yaw * 0.16 * depth
        y = pts[:, 1]
        xs = self.cx + self.h * (self.cos * x - self.sin * y)
        ys = self.cy + self.h * (self.sin * x + self.cos * y)
        return list(zip(xs.tolist(), ys.tolist()))

    def width(self, w: float) -> int:
        return max(1, round(w * self.h))

    def poly(self, pts: np.ndarray, fill: np.ndarray, depth: float = 0.6) -> None:
        self.draw.polygon(self.px(pts, depth), fill=_rgb(fill))

    def line(self, pts: np.ndarray, fill: np.ndarray, w: float, depth: float = 0.6) -> None:
        self.draw.line(self.px(pts, depth), fill=_rgb(fill), width=self.width(w), joint="curve")

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: np.ndarray,
                depth: float = 0.6, n: int = 20) -> None:
        self.poly(_ellipse_pts(cx, cy, rx, ry, n), fill, depth)


def _rgb(c: np.ndarray | tuple[float, ...]) -> tuple[int, int, int]:
    r, g, b = np.clip(np.asarray(c, dtype=float), 0, 255).round().astype(int).tolist()
    return (r, g, b)


def _ellipse_pts(cx: float, cy: float, rx: float, ry: float, n: int = 20) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _curve(x_left: float, x_right: float, y_left: float, y_right: float, y_mid: float, n: int = 9) -> np.ndarray:
    """A parabola through the two ends and `y_mid` at the centre (lips, lids, folds)."""
    t = np.linspace(-1, 1, n)
    x = x_left + (t + 1) / 2 * (x_right - x_left)
    base = y_left + (t + 1) / 2 * (y_right - y_left)
    return np.stack([x, base + (y_mid - (y_left + y_right) / 2) * (1 - t * t)], 1)


def _outline(idt: Identity, grow: float = 1.0, n: int = 48) -> np.ndarray:
    """Face outline: a superellipse whose lower half tapers towards the chin."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    e = 2 / idt.squareness
    x = idt.face_w * grow * np.sign(c) * np.abs(c) ** e
    y = grow * np.sign(s) * np.abs(s) ** e
    x = x * (1 - idt.chin_taper * np.clip(y, 0, None) ** 2)
    return np.stack([x, y], 1)


def _draw_face(p: _Painter, idt: Identity, a: np.ndarray, rng: np.random.Generator) -> None:
    """Hair, neck, face and the action-driven features, back to front."""
    skin, hair = np.asarray(idt.skin), np.asarray(idt.hair)
    shade = skin * 0.72
    raise_, lower, inner, eye_open, corner, mouth_open, press, wrinkle, stretch = a

    if idt.hair_style in (1, 2):  # long hair falls behind the face onto the shoulders
        p.poly(np.array([[-idt.face_w * 1.25, -0.5], [-idt.face_w * 1.35, 1.45], [idt.face_w * 1.35, 1.45],
                         [idt.face_w * 1.25, -0.5]]), hair, depth=-0.3)
        p.ellipse(0, -0.2, idt.face_w * 1.25, 1.0, hair, depth=-0.3)
    p.poly(np.array([[-0.3, 0.6], [-0.32, 1.5], [0.32, 1.5], [0.3, 0.6]]), shade, depth=-0.2)  # neck
    p.ellipse(0, 1.95, 1.6, 0.62, np.asarray(idt.clothes), depth=-0.2, n=32)  # shoulders
    for side in (-1, 1):  # ears
        p.ellipse(side * idt.face_w * 0.98, -0.02, 0.1, 0.19, shade * 1.12, depth=-0.2 * side)
    p.poly(_outline(idt), skin, depth=0.0)
    if idt.hair_style == 4:
        p.ellipse(0, -1.12, 0.32, 0.22, hair, depth=-0.2)
    if idt.hair_style != 3:  # a hair cap down to the hairline (bangs: lower, over the forehead)
        line_y = -0.48 if idt.hair_style == 2 else idt.hairline
        cap = _outline(idt, grow=1.06)
        cap = cap[cap[:, 1] < line_y]
        fringe = _curve(idt.face_w, -idt.face_w, line_y, line_y, line_y + 0.06)
        p.poly(np.concatenate([cap, fringe]), hair, depth=0.1)

    ey, ex, rx, ry = idt.eye_y, idt.eye_sep, idt.eye_rx, idt.eye_ry
    crease = skin * 0.55
    if raise_ > 0.35:  # forehead lines come with raised brows
        for k in range(3):
            y = ey - idt.brow_gap - 0.2 - 0.08 * k
            if y > (-0.48 if idt.hair_style == 2 else idt.hairline) + 0.04:
                p.line(_curve(-0.3, 0.3, y, y, y - 0.03), skin - (skin - crease) * min(1, raise_ - 0.2), 0.012)
    if lower > 0.35:  # vertical frown lines between the brows
        for side in (-1, 1):
            p.line(np.array([[side * 0.05, ey - 0.2], [side * 0.035, ey - 0.07]]),
                   skin - (skin - crease) * min(1, lower - 0.2), 0.014)

    # Nose and the folds from its wings to the mouth corners (smile, disgust).
    tip = ey + idt.nose_len + 0.08
    wing_y = tip - 0.02 - 0.04 * wrinkle
    w = idt.mouth_w * (1 + 0.14 * max(corner, 0) + 0.25 * stretch - 0.3 * mouth_open * (1 - stretch) - 0.1 * press)
    corner_y = idt.mouth_y - 0.14 * corner - 0.04 * stretch
    fold = min(1.0, 0.15 + 0.7 * max(corner, 0) + 0.7 * wrinkle)
    for side in (-1, 1):
        p.line(_curve(side * (idt.nose_w + 0.05), side * (w + 0.06), wing_y, corner_y + 0.04, wing_y + 0.1),
               skin - (skin - crease) * fold, 0.014, depth=0.7)
    p.line(np.array([[0.02, ey + 0.05], [0.05, tip - 0.03]]), skin * 0.8, 0.014, depth=0.9)
    p.line(_curve(-idt.nose_w, idt.nose_w, wing_y, wing_y, tip + 0.02), shade, 0.02, depth=1.0)
    for side in (-1, 1):
        p.ellipse(side * idt.nose_w * (0.55 + 0.2 * wrinkle), wing_y + 0.005, 0.032 + 0.01 * wrinkle, 0.018,
                  skin * 0.35, depth=0.95)
    if wrinkle > 0.3:  # bunny lines across the bridge
        for side in (-1, 1):
            for k in range(2):
                y = ey + 0.02 + 0.05 * k
                p.line(np.array([[side * 0.03, y], [side * 0.11, y - 0.03]]),
                       skin - (skin - crease) * min(1, wrinkle), 0.012, depth=0.9)

    # Eyes: almond lids opened or narrowed by eye_open; the iris is clipped by the lids,
    # so wide-open eyes show white above it.
    up_h = ry * (1 + 0.9 * max(eye_open, 0)) * (1 + 0.55 * min(eye_open, 0))
    low_h = ry * 0.75 * (1 + 0.15 * max(eye_open, 0)) * (1 + 0.6 * min(eye_open, 0))
    gaze = rng.normal(0, 0.012)
    for side in (-1, 1):
        cx = side * ex
        xs = np.linspace(-rx, rx, 13)
        q = np.clip(1 - (xs / rx) ** 2, 0, None)
        tilt = idt.eye_tilt * side * xs / rx  # outer corner a little higher
        lid_up = np.stack([cx + xs, ey - tilt - up_h * q ** 0.8], 1)
        lid_low = np.stack([cx + xs, ey - tilt + low_h * q ** 0.9], 1)
        p.poly(np.concatenate([lid_up, lid_low[::-1]]), np.array([238, 236, 232.0]))
        iris = _ellipse_pts(cx + gaze, ey + 0.005, ry * 0.95, ry * 0.95, 16)
        ix = np.clip(iris[:, 0] - cx, -rx, rx)
        top = np.interp(ix, xs, lid_up[:, 1])
        bottom = np.interp(ix, xs, lid_low[:, 1])
        iris[:, 1] = np.clip(iris[:, 1], top, bottom)
        p.poly(iris, np.asarray(idt.iris))
        pupil = _ellipse_pts(cx + gaze, ey + 0.005, ry * 0.42, ry * 0.42, 12)
        pupil[:, 1] = np.clip(pupil[:, 1], np.interp(pupil[:, 0] - cx, xs, lid_up[:, 1]),
                              np.interp(pupil[:, 0] - cx, xs, lid_low[:, 1]))
        p.poly(pupil, np.array([12, 10, 10.0]))
        p.line(lid_up, np.array([30, 22, 20.0]), 0.03)
        p.line(lid_low, skin * 0.6, 0.01)
        if corner > 0.5 and eye_open < -0.1:  # crow's feet of a real (Duchenne) smile
            for k in (-1, 0, 1):
                p.line(np.array([[cx + side * (rx + 0.02), ey + 0.02 * k],
                                 [cx + side * (rx + 0.08), ey + 0.045 * k]]), skin - (skin - crease) * 0.7, 0.01)

    # Brows: raise lifts them, lower pulls them down and together (the frown's V),
    # inner lifts their inner ends (the slant of sadness and fear).
    base = ey - idt.brow_gap - 0.14 * raise_ + 0.07 * lower
    brow = np.minimum(hair * 0.8, skin * 0.5)  # brows always darker than the skin
    for side in (-1, 1):
        x_in = side * (ex - idt.brow_len * 0.45 - 0.04 * lower + 0.02 * inner)
        x_out = side * (ex + idt.brow_len * 0.55)
        y_in = base + 0.08 * lower - 0.14 * inner
        y_out = base + 0.01
        centre = _curve(x_in, x_out, y_in, y_out, (y_in + y_out) / 2 - 0.035 - 0.02 * raise_)
        thick = idt.brow_thick * np.linspace(1.0, 0.55, len(centre))[:, None] * np.array([[0, 1]])
        p.poly(np.concatenate([centre - thick / 2, (centre + thick / 2)[::-1]]), brow)

    # Mouth: corners move with lip_corner and stretch; opening with mouth_open; press
    # thins the lips and closes the mouth; nose_wrinkle lifts the upper lip (the snarl).
    gap = 0.34 * mouth_open * (1 - press)
    thick = idt.lip_thick * (1 - 0.75 * press)
    asym = 0.03 * wrinkle * (1 if rng.random() < 0.5 else -1)  # disgust is often one-sided
    yl, yr = corner_y + asym, corner_y - asym
    up_in = idt.mouth_y - 0.35 * gap - 0.05 * wrinkle
    low_in = idt.mouth_y + 0.65 * gap + 0.015 * stretch
    upper_in = _curve(-w, w, yl, yr, up_in)
    lower_in = _curve(-w, w, yl, yr, low_in)
    upper_out = _curve(-w, w, yl, yr, up_in - thick * 0.9)
    lower_out = _curve(-w, w, yl, yr, low_in + thick * 1.2)
    lip = np.asarray(idt.lip)
    p.poly(np.concatenate([upper_out, upper_in[::-1]]), lip)
    p.poly(np.concatenate([lower_in, lower_out[::-1]]), lip * 1.06)
    if gap > 0.015:
        p.poly(np.concatenate([upper_in, lower_in[::-1]]), np.array([45, 20, 25.0]))
        if corner > 0.2 or wrinkle > 0.3 or stretch > 0.3:  # teeth show in smiles, snarls, fear
            teeth = upper_in.copy()
            teeth[:, 1] += 0.45 * (lower_in[:, 1] - upper_in[:, 1])
            p.poly(np.concatenate([upper_in, teeth[::-1]]), np.array([236, 232, 220.0]))
    p.line(upper_in, lip * 0.45, 0.02)

    if idt.beard:  # a moustache over the upper lip, and for some a beard on the chin
        beard = np.minimum(hair * 0.9, skin * 0.6)
        lip_top = upper_out[:, 1] - 0.012
        top = np.maximum(lip_top - 0.07, wing_y + 0.04)
        p.poly(np.concatenate([np.stack([upper_out[:, 0] * 1.1, lip_top], 1),
                               np.stack([upper_out[::-1, 0] * 1.05, top[::-1]], 1)]), beard, depth=0.8)
        if idt.beard == 2:
            chin = _outline(idt)
            p.poly(chin[chin[:, 1] > low_in + thick * 1.2 + 0.05], beard, depth=0.2)
    if idt.glasses:
        frame = np.array([40, 40, 45.0])
        for side in (-1, 1):
            p.line(np.concatenate([(pts := _ellipse_pts(side * ex, ey, rx + 0.05, ry + 0.07, 16)), pts[:1]]),
                   frame, 0.016)
        p.line(np.array([[-ex + rx + 0.05, ey - 0.02], [ex - rx - 0.05, ey - 0.02]]), frame, 0.016)


def _draw_occluder(p: _Painter, idt: Identity, rng: np.random.Generator) -> None:
    """One in-the-wild occluder: a hand, sunglasses, a hat brim or an object at the edge."""
    kind = int(rng.integers(0, 4))
    if kind == 0:  # a hand over the mouth, a cheek or the chin
        x, y = rng.uniform(-0.5, 0.5), rng.uniform(0.3, 0.8)
        skin = np.asarray(idt.skin) * rng.uniform(0.9, 1.05)
        p.ellipse(x, y + 0.25, 0.3, 0.28, skin, depth=1.0)
        for k in range(4):
            p.ellipse(x - 0.18 + 0.12 * k, y - 0.05, 0.055, 0.2, skin * 0.97, depth=1.0)
    elif kind == 1:  # sunglasses hide the eyes
        lens = np.array([20, 20, 25.0])
        for side in (-1, 1):
            p.ellipse(side * idt.eye_sep, idt.eye_y + 0.01, idt.eye_rx + 0.07, idt.eye_ry + 0.09, lens)
        p.line(np.array([[-0.1, idt.eye_y - 0.03], [0.1, idt.eye_y - 0.03]]), lens, 0.03)
    elif kind == 2:  # a hat brim down over the forehead
        colour = rng.uniform(20, 235, 3)
        y = rng.uniform(-0.55, -0.35)
        p.poly(np.array([[-1.3, y], [1.3, y], [1.0, y - 0.12], [-1.0, y - 0.12]]), colour, depth=0.3)
        p.ellipse(0, y - 0.5, idt.face_w * 1.1, 0.5, colour, depth=0.2)
    else:  # an object entering from one side (a phone, a microphone, someone's shoulder)
        side = 1 if rng.random() < 0.5 else -1
        y = rng.uniform(-0.4, 0.8)
        p.poly(np.array([[side * 1.6, y - 0.25], [side * rng.uniform(0.2, 0.6), y - 0.2],
                         [side * rng.uniform(0.2, 0.6), y + 0.25], [side * 1.6, y + 0.3]]),
               rng.uniform(10, 245, 3), depth=1.0)


def _background(rng: np.random.Generator, size: int, style: DomainStyle) -> Image.Image:
    """A plain studio backdrop, or blurred in-the-wild clutter."""
    if not style.clutter:
        grey = rng.uniform(*style.backdrop)
        return Image.new("RGB", (size, size), _rgb(np.full(3, grey) + rng.normal(0, 3, 3)))
    def colour() -> tuple[int, int, int]:  # everyday colours: a random hue, half greyed out
        c = rng.uniform(0, 255, 3)
        return _rgb(0.5 * c + 0.5 * c.mean())

    small = max(8, size // 4)  # drawn at a quarter and upsampled: out-of-focus clutter, cheaply
    img = Image.new("RGB", (small, small), colour())
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 13))):
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * small
        w, h = rng.uniform(0.1, 0.7, 2) * small
        fill = colour()
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=fill)
        elif shape == 1:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=fill)
        else:
            draw.line([x0, y0, x0 + w, y0 + h], fill=fill, width=max(1, int(small * rng.uniform(0.01, 0.05))))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.1, 0.8) * small / 32))
    return img.resize((size, size), Image.Resampling.BILINEAR)


def _finish(img: Image.Image, rng: np.random.Generator, domain: str, style: DomainStyle, out_size: int) -> Image.Image:
    """Domain photometry on the rendered frame: resolution, lighting, colour, sensor."""
    # FER2013 faces were small and blurry before they were stored at 48x48: work at a
    # lower resolution, upsample at the end.
    work = int(rng.integers(28, 45)) if domain == "FER2013" else out_size
    x = np.asarray(img.resize((work, work), Image.Resampling.BOX), dtype=np.float32)
    yy, xx = np.mgrid[0:work, 0:work].astype(np.float32) / (work - 1) * 2 - 1
    angle = -np.pi / 2 + rng.normal(0, 0.2) if domain == "JAFFE" else rng.uniform(0, 2 * np.pi)  # JAFFE: top light
    gain = 1 + rng.uniform(0, style.light) * (np.cos(angle) * xx + np.sin(angle) * yy)
    if domain == "Oulu":
        # Active near-infrared light: a frontal spot falling off to the sides, skin bright
        # but flat, the frame dark, little contrast, row banding of the sensor.
        gain = gain * np.exp(-(xx ** 2 + yy ** 2) * rng.uniform(0.6, 1.1))
        x = 0.38 * x.mean(axis=2, keepdims=True) * gain[..., None] + rng.uniform(10, 18)
        x = np.repeat(x + rng.normal(0, 1.5, (work, 1, 1)), 3, axis=2)
    else:
        x = x * gain[..., None]
    if not style.grayscale:
        # Camera colour: a cast, contrast and saturation per photo; AffectNet runs warm.
        cast = rng.normal(0, 10, 3) + (np.array([10, 2, -10]) if domain == "Aff" else 0)
        mean = x.mean(axis=(0, 1), keepdims=True)
        x = (x - mean) * rng.uniform(0.75, 1.25) + mean + cast
        gray = x.mean(axis=2, keepdims=True)
        x = gray + (x - gray) * rng.uniform(0.6, 1.4)
    elif domain == "FER2013":
        mean = x.mean()
        x = (x - mean) * rng.uniform(0.6, 1.4) + mean + rng.uniform(-30, 30)
    out = Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))
    if style.grayscale:
        out = out.convert("L")
    if work != out_size:
        out = out.resize((out_size, out_size), Image.Resampling.BILINEAR)
    radius = rng.uniform(*style.blur)
    if radius > 0.05:
        out = out.filter(ImageFilter.GaussianBlur(radius))
    y = np.asarray(out, dtype=np.float32)
    y = y + rng.normal(0, style.noise * rng.uniform(0.5, 1.0), y.shape)
    return Image.fromarray(np.clip(y, 0, 255).round().astype(np.uint8))


def face_placement(rng: np.random.Generator, style: DomainStyle, canvas: int) -> tuple[float, float, float]:
    """Where a face detector's crop puts the face: (x, y of the face origin, half-height), in pixels.

    The face origin (face units 0, 0) sits FACE_ANCHOR half-heights above the frame centre,
    which puts the eyes at ~40 % and the mouth at ~72 % of the height like aligned crops;
    the domain's crop convention moves it (`rise`), and each image jitters its position
    (`shift`) and size (`scale`).
    """
    half_h = FACE_FILL / 2 * canvas * rng.uniform(*style.scale)
    cx, cy = (0.5 + rng.uniform(-style.shift, style.shift, 2)) * canvas
    return cx, cy - FACE_ANCHOR * half_h - style.rise * canvas, half_h


def render_sample(seed: int, domain: str, list_index: int, index: int, label: int, size: int) -> Image.Image:
    """Render image `index` of a list (listed class `label`) at `size` px: an "L" or "RGB" PIL image.

    Depends only on its arguments: the image seed is `image_seed(seed, domain, list_index, index)`.
    """
    style = STYLES[domain]
    rng = np.random.default_rng(image_seed(seed, domain, list_index, index))
    if style.subjects:
        idt = subject(seed, domain, int(rng.integers(0, style.subjects)), style)
    else:
        idt = sample_identity(rng, domain, style)
    shown = shown_class(rng, label, style)
    canvas = (FER_SIZE * 2 if domain == "FER2013" else size) * SUPERSAMPLE
    return _render(rng, domain, style, idt, shown, canvas, size)


def _render(rng: np.random.Generator, domain: str, style: DomainStyle, idt: Identity, shown: int,
            canvas: int, size: int) -> Image.Image:
    """Draw `idt` showing class `shown` in a domain's style on a `canvas` px frame, finished at `size` px."""
    actions = sample_actions(rng, shown, style, idt)
    img = _background(rng, canvas, style)
    painter = _Painter(ImageDraw.Draw(img), *face_placement(rng, style, canvas),
                       math.radians(float(np.clip(rng.normal(0, style.roll_deg), -2.5 * style.roll_deg,
                                                  2.5 * style.roll_deg))),
                       rng.uniform(-style.yaw, style.yaw))
    _draw_face(painter, idt, actions, rng)
    if rng.random() < style.occlusion:
        _draw_occluder(painter, idt, rng)
    return _finish(img, rng, domain, style, size)


# ----------------------------------------------------------------------------- pretext identities

# Face-identification pretraining (lacmfer/method/pretext.py) needs people no domain shows, as
# MS-Celeb's celebrities are not in the FER sets. They come from their own seed stream
# (domain number PRETEXT_STREAM, which no domain has), so they are disjoint from every
# domain's subject pool and from the fresh identities of the wild sets. Their photos are
# web-like: colour, cluttered, any expression at any intensity, varied pose and crop.
PRETEXT = "pretext"
PRETEXT_STREAM = len(BUILTIN_DOMAIN_NAMES)
PRETEXT_STYLE = DomainStyle(grayscale=False, intensity=(0.0, 1.0), blend_prob=0.3, label_noise=0.0, subjects=0,
                            roll_deg=4.0, yaw=0.45, scale=(0.84, 1.04), shift=0.04, rise=0.0, clutter=True,
                            backdrop=(0, 255), light=0.5, occlusion=0.1, glasses=0.15, noise=2.0, blur=(0.0, 0.6))


def pretext_identity(seed: int, number: int) -> Identity:
    """Pretext person `number`: never a subject or a drawn identity of any domain."""
    return sample_identity(np.random.default_rng([seed, PRETEXT_STREAM, 2, number]), PRETEXT, PRETEXT_STYLE)


def render_pretext_sample(seed: int, person: Identity, number: int, index: int, size: int) -> Image.Image:
    """Photo `index` of pretext person `number` (`person = pretext_identity(seed, number)`), an RGB image."""
    rng = np.random.default_rng([seed, PRETEXT_STREAM, 0, number, index])
    shown = int(rng.integers(0, NUM_CLASSES))
    return _render(rng, PRETEXT, PRETEXT_STYLE, person, shown, size * SUPERSAMPLE, size)


# ----------------------------------------------------------------------------- writing


def _image_path(spec: ListSpec, index: int) -> str:
    return f"{spec.folder}/{index:06d}.png"


def _write_chunk(seed: int, scale: str, spec: ListSpec, start: int, labels: list[int], out: str) -> int:
    """Render and save images start .. start+len(labels)-1 of a list (a worker's unit of work)."""
    size = image_size(spec.domain, scale)
    for k, label in enumerate(labels):
        img = render_sample(seed, spec.domain, spec.list_index, start + k, label, size)
        img.save(os.path.join(out, _image_path(spec, start + k)), format="PNG", compress_level=6)
    return len(labels)


def _default_workers(n_images: int) -> int:
    # Process start-up (spawn + imports, ~0.5 s) only pays off for larger sets.
    return 1 if n_images < 1500 else max(1, min(os.cpu_count() or 1, 8))


def _check_args(scale: str, seed: int) -> None:
    if scale not in SCALES:
        raise UserError(f"SynthFER scale {scale!r}: expected one of {', '.join(SCALES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"SynthFER seed {seed!r}: expected an integer >= 0")


def generate_synthfer(out: Path, scale: str = "small", seed: int = 0, progress: bool = True,
                      workers: int | None = None) -> dict:
    """Write SynthFER (images, the nine list files and `synthfer.json`) into `out`.

    `out` must be missing or empty (UserError otherwise). `synthfer.json` is written last,
    so a folder that has it is complete. The files depend only on (seed, scale): any
    `workers` count (default: 1 for small sets, else up to 8 processes) gives the same
    bytes. Returns the content of `synthfer.json`.
    """
    _check_args(scale, seed)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an empty folder; SynthFER needs a new or empty folder")
    specs = plan_lists(scale)
    for spec in specs:
        (out / spec.folder).mkdir(parents=True, exist_ok=True)
    labels = {spec.name: list_labels(seed, spec) for spec in specs}
    chunk = 64
    jobs = [(seed, scale, spec, start, labels[spec.name][start:start + chunk].tolist(), str(out))
            for spec in specs for start in range(0, spec.total, chunk)]
    n_images = sum(spec.total for spec in specs)
    workers = _default_workers(n_images) if workers is None else max(1, workers)
    with tqdm(total=n_images, desc=f"SynthFER {scale}", unit="img", disable=not progress) as bar:
        if workers == 1:
            for job in jobs:
                bar.update(_write_chunk(*job))
        else:
            # spawn, not fork: callers (the trainer) may hold torch threads.
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                for done in pool.map(_write_chunk, *zip(*jobs)):
                    bar.update(done)
    for spec in specs:
        lines = "".join(f"{_image_path(spec, i)} {int(y)}\n" for i, y in enumerate(labels[spec.name]))
        (out / spec.name).write_text(lines, encoding="utf-8")
    meta = {
        "generator": "SynthFER",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "scale": scale,
        "classes": list(CLASSES),
        "image_size": {d: image_size(d, scale) for d in BUILTIN_DOMAIN_NAMES},
        "lists": {spec.name: {"domain": spec.domain, "counts": list(spec.counts), "total": spec.total}
                  for spec in specs},
        "total": n_images,
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def _check_existing(root: Path, scale: str, seed: int) -> None:
    meta_path = root / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        found = (meta["scale"], meta["seed"], meta["version"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{meta_path}: not a readable SynthFER record ({err}); "
                        "delete the folder to regenerate") from None
    if found != (scale, seed, GENERATOR_VERSION):
        raise UserError(
            f"{meta_path}: holds SynthFER scale={found[0]} seed={found[1]} version={found[2]}, but "
            f"scale={scale} seed={seed} version={GENERATOR_VERSION} was asked; use another data root or delete it")


def ensure_synthfer(root: Path, scale: str, seed: int, progress: bool = True) -> None:
    """Make `root` a SynthFER folder of this (scale, seed), generating it only if needed.

    - `root/synthfer.json` exists: check it records the same scale, seed and generator
      version (UserError otherwise) and do nothing else;
    - `root` exists, is not empty and has no `synthfer.json`: UserError (never write into
      someone's folder);
    - otherwise generate into a temporary sibling folder and rename it to `root`
      atomically. Safe under concurrency: when several processes race, the first rename
      wins and the others discard their copy and use the winner's folder.
    """
    _check_args(scale, seed)
    root = Path(root)
    if (root / META_FILE).exists():
        _check_existing(root, scale, seed)
        return
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UserError(f"{root}: exists, is not empty and is not a SynthFER folder (no {META_FILE}); "
                        "choose another data root")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.synthfer-", dir=root.parent))
    try:
        generate_synthfer(tmp, scale, seed, progress)
        try:
            # POSIX rename replaces a missing or empty directory atomically and fails
            # (ENOTEMPTY/EEXIST) when another process got there first.
            os.rename(tmp, root)
        except OSError:
            if not (root / META_FILE).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _check_existing(root, scale, seed)


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit code 2, like every UserError."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see --help)")


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    """Command line: generate SynthFER into --out unless it is already there."""
    parser = _Parser(prog="python -m lacmfer.data.synth",
                     description="Generate SynthFER, the procedural six-domain facial expression benchmark.")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; must be new or empty)")
    parser.add_argument("--scale", choices=SCALES, default="small",
                        help="tiny: ~300 images (tests); small: ~3,900 (embedded default); full: the real counts")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (>= 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    ensure_synthfer(args.out, args.scale, args.seed, progress=not args.no_progress)
    meta = json.loads((args.out / META_FILE).read_text(encoding="utf-8"))
    print(f"SynthFER {meta['scale']} seed={meta['seed']}: {meta['total']} images, "
          f"{len(meta['lists'])} lists in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
