"""SynthFER: list format, priors, determinism, domain styles, the domain gap, ensure_synthfer."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lacmfer.data.domains import DOMAINS, NUM_CLASSES
from lacmfer.data.synth import (
    META_FILE,
    PROTOTYPES,
    STYLES,
    ensure_synthfer,
    face_placement,
    generate_synthfer,
    plan_lists,
    render_sample,
    shown_class,
)
from lacmfer.errors import UserError
from lacmfer.names import BUILTIN_DOMAIN_NAMES

REPO = Path(__file__).resolve().parents[1]
LIST_NAMES = {"CK.txt", "JAFFE.txt", "Oulu.txt", "RAF_train.txt", "RAF_test.txt", "FER2013_train.txt",
              "FER2013_test.txt", "Aff_train.txt", "Aff_test.txt"}
LINE = re.compile(r"^(\S+\.png) ([0-6])$")


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_list(path: Path) -> list[tuple[str, int]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = LINE.match(line)
        assert match, f"{path.name}: bad line {line!r}"
        rows.append((match[1], int(match[2])))
    return rows


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "tiny"
    generate_synthfer(root, "tiny", seed=0, progress=False)
    return root


# ----------------------------------------------------------------------------- plan


def real_counts(spec) -> tuple[int, ...]:
    info = DOMAINS[spec.domain]
    return info.test_counts if spec.name == info.test_list and info.has_separate_test else info.train_counts


def test_full_scale_reproduces_the_real_counts() -> None:
    specs = plan_lists("full")
    assert {s.name for s in specs} == LIST_NAMES
    for spec in specs:
        assert spec.counts == real_counts(spec)


@pytest.mark.parametrize("scale, minimum, low, high", [("tiny", 3, 150, 400), ("small", 8, 4000, 8000)])
def test_scaled_priors_follow_the_real_ones(scale: str, minimum: int, low: int, high: int) -> None:
    specs = plan_lists(scale)
    assert low <= sum(s.total for s in specs) <= high
    for spec in specs:
        real = np.array(real_counts(spec), float)
        counts = np.array(spec.counts, float)
        assert counts.min() >= minimum, spec.name
        if scale == "small":
            # The biggest class is the real biggest one (up to near-ties like Aff's 4500 vs 4504)...
            assert real[counts.argmax()] >= 0.99 * real.max(), spec.name
            # ...and, above the per-class minimum, sizes are the real ones times one factor
            # (up to rounding).
            free = counts > minimum
            factor = counts[free].sum() / real[free].sum()
            assert np.abs(counts[free] - factor * real[free]).max() <= 1.5, (spec.name, counts, real)


@pytest.mark.parametrize("scale", ["tiny", "small"])
def test_train_test_proportions_follow_the_real_ones(scale: str) -> None:
    totals = {s.name: s.total for s in plan_lists(scale)}
    for name in BUILTIN_DOMAIN_NAMES:
        info = DOMAINS[name]
        if not info.has_separate_test:
            continue
        real = sum(info.train_counts) / sum(info.test_counts)
        synth = totals[info.train_list] / totals[info.test_list]
        if scale == "small":
            assert real / 1.25 <= synth <= real * 1.1, (name, real, synth)
        else:  # tiny test lists sit at the per-class minimum: only the direction survives
            assert synth >= 2.5, (name, real, synth)



def test_small_wild_sets_outnumber_the_lab_sets() -> None:
    """As in the real data, every in-the-wild set (train + test) is at least twice the
    largest lab set at `small`: with fewer, FER2013 and Aff could not be learned in-domain."""
    totals = {s.name: s.total for s in plan_lists("small")}
    per_domain = {name: totals[DOMAINS[name].train_list] + (totals[DOMAINS[name].test_list]
                                                            if DOMAINS[name].has_separate_test else 0)
                  for name in BUILTIN_DOMAIN_NAMES}
    wild = [n for n in BUILTIN_DOMAIN_NAMES if DOMAINS[n].has_separate_test]
    lab = [n for n in BUILTIN_DOMAIN_NAMES if not DOMAINS[n].has_separate_test]
    assert min(per_domain[n] for n in wild) >= 2 * max(per_domain[n] for n in lab), per_domain

# ----------------------------------------------------------------------------- expressions


def test_confusable_expressions_are_neighbours() -> None:
    """Fear–surprise and disgust–anger are each other's closest expressions (neutral aside),
    and sadness is closest to neutral: the overlaps that make real FER ambiguous."""
    dist = np.linalg.norm(PROTOTYPES[:, None] - PROTOTYPES[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    surprise, fear, disgust, happiness, sadness, anger, neutral = range(NUM_CLASSES)
    expressive = dist.copy()
    expressive[:, neutral] = np.inf
    assert expressive[surprise].argmin() == fear and expressive[fear].argmin() == surprise
    assert expressive[disgust].argmin() == anger and expressive[anger].argmin() == disgust
    assert dist[sadness].argmin() == neutral


def test_label_noise_only_in_the_wild() -> None:
    rng = np.random.default_rng(0)
    for name, style in STYLES.items():
        flipped = np.mean([shown_class(rng, k % NUM_CLASSES, style) != k % NUM_CLASSES for k in range(4000)])
        assert abs(flipped - style.label_noise) < 0.02, name
    assert {n for n, s in STYLES.items() if s.label_noise > 0} == {"RAF", "FER2013", "Aff"}


# ----------------------------------------------------------------------------- files


def test_list_files_and_record(tiny: Path) -> None:
    meta = json.loads((tiny / META_FILE).read_text())
    assert (meta["scale"], meta["seed"]) == ("tiny", 0) and meta["version"]
    assert set(meta["lists"]) == LIST_NAMES
    assert {p.name for p in tiny.glob("*.txt")} == LIST_NAMES
    n_png = 0
    for name, rec in meta["lists"].items():
        rows = read_list(tiny / name)
        assert np.bincount([y for _, y in rows], minlength=NUM_CLASSES).tolist() == rec["counts"]
        assert min(rec["counts"]) >= 3 and rec["total"] == len(rows)
        for path, _ in rows:
            assert not Path(path).is_absolute() and path.split("/")[0] == rec["domain"]
            assert (tiny / path).is_file()
        assert len({p for p, _ in rows}) == len(rows)
        n_png += len(rows)
    assert n_png == meta["total"] == len(list(tiny.rglob("*.png")))


def test_same_seed_same_bytes_any_worker_count(tiny: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_synthfer(again, "tiny", seed=0, progress=False, workers=2)
    assert tree_hashes(again) == tree_hashes(tiny)


def test_other_seed_other_images(tiny: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    generate_synthfer(other, "tiny", seed=1, progress=False)
    a, b = tree_hashes(tiny), tree_hashes(other)
    pngs = [k for k in a if k.endswith(".png")]
    assert set(a) == set(b)
    assert sum(a[k] != b[k] for k in pngs) == len(pngs)


def load_domain(root: Path, domain: str) -> list[Image.Image]:
    return [Image.open(root / p) for p, _ in read_list(root / DOMAINS[domain].train_list)]


def test_domain_styles(tiny: Path) -> None:
    images = {d: load_domain(tiny, d) for d in BUILTIN_DOMAIN_NAMES}
    for d in ("CK", "JAFFE", "Oulu", "FER2013"):
        assert {im.mode for im in images[d]} == {"L"}, d
    for d in ("RAF", "Aff"):
        assert {im.mode for im in images[d]} == {"RGB"}, d
        # Colour: the channels really differ (not grey stored as RGB).
        spread = np.mean([np.asarray(im, float).std(axis=2).mean() for im in images[d]])
        assert spread > 8, (d, spread)
    assert {im.size for im in images["FER2013"]} == {(48, 48)}
    assert {im.size for d in BUILTIN_DOMAIN_NAMES if d != "FER2013" for im in images[d]} == {(64, 64)}

    def mean(d: str) -> float:
        return float(np.mean([np.asarray(im, float).mean() for im in images[d]]))

    def contrast(d: str) -> float:
        return float(np.mean([np.asarray(im, float).std() for im in images[d]]))

    # Oulu (near-infrared-like) is dark and flat next to the studio-lit lab sets.
    assert mean("Oulu") < 0.6 * min(mean("CK"), mean("JAFFE"))
    assert contrast("Oulu") < 0.75 * contrast("CK")
    # JAFFE's light backdrop.
    assert mean("JAFFE") > mean("CK")


def test_crops_are_face_crops() -> None:
    """As a face detector crops: the face fills the frame, eyes and mouth where aligned crops
    put them, in every domain; unaligned detector crops (Aff) jitter more than aligned ones (RAF)."""
    frame = 100
    centres = {}
    for d in BUILTIN_DOMAIN_NAMES:
        rng = np.random.default_rng(0)
        cx, cy, half_h = np.array([face_placement(rng, STYLES[d], frame) for _ in range(400)]).T
        assert (2 * half_h / frame).min() >= 0.85, d  # the face outline, crown to chin
        eyes, mouth = (cy - 0.11 * half_h) / frame, (cy + 0.48 * half_h) / frame  # mid-range identity
        assert 0.3 <= eyes.min() and eyes.max() <= 0.55, d
        assert 0.6 <= mouth.min() and mouth.max() <= 0.9, d
        centres[d] = np.hypot(cx - cx.mean(), cy - cy.mean()).mean() / frame
    assert centres["Aff"] > 2 * centres["RAF"], centres


# ----------------------------------------------------------------------------- domain gap


def probe_features(img: Image.Image) -> np.ndarray:
    """24x24 grayscale pixels, standardised per image."""
    x = np.asarray(img.convert("L").resize((24, 24), Image.Resampling.BOX), float).ravel()
    return (x - x.mean()) / (x.std() + 1e-6)


def fit_ridge(x: np.ndarray, y: np.ndarray, lam: float = 0.1):
    """Linear least-squares classifier on one-hot targets (ridge), features standardised."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    target = np.eye(NUM_CLASSES)[y]
    w = np.linalg.solve(z.T @ z + lam * len(z) * np.eye(z.shape[1]), z.T @ (target - target.mean(0)))
    return lambda t: (((t - mu) / sd) @ w).argmax(1)


def test_domain_gap() -> None:
    """A pixel classifier trained on one domain: well above chance on held-out images of its
    own domain; trained on a lab set, clearly worse on the other five; and every domain is
    best served by its own model. (Trained on a wild set, a linear probe learns its own
    cluttered, posed faces poorly and does as well on the clean lab faces: the row test
    holds for the lab sets only.)"""
    n_train, n_test, size = 420, 140, 32
    data = {}
    for d in BUILTIN_DOMAIN_NAMES:
        def sample(start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
            y = np.arange(n) % NUM_CLASSES  # balanced: chance is 1/7
            imgs = [render_sample(0, d, 0, start + i, int(y[i]), size) for i in range(n)]
            # Horizontal flips double the training set cheaply (expressions are near-symmetric).
            return np.array([probe_features(im) for im in imgs]), y, imgs

        xtr, ytr, imgs = sample(0, n_train)
        flipped = np.array([probe_features(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)) for im in imgs])
        xte, yte, _ = sample(10**6, n_test)
        data[d] = (np.concatenate([xtr, flipped]), np.concatenate([ytr, ytr]), xte, yte)
    acc = np.zeros((len(BUILTIN_DOMAIN_NAMES), len(BUILTIN_DOMAIN_NAMES)))
    for i, src in enumerate(BUILTIN_DOMAIN_NAMES):
        predict = fit_ridge(data[src][0], data[src][1])
        for j, tgt in enumerate(BUILTIN_DOMAIN_NAMES):
            acc[i, j] = (predict(data[tgt][2]) == data[tgt][3]).mean()
    off = ~np.eye(len(BUILTIN_DOMAIN_NAMES), dtype=bool)
    diag = np.diag(acc)
    row_other = np.where(off, acc, 0).sum(1) / (len(BUILTIN_DOMAIN_NAMES) - 1)
    col_other = np.where(off, acc, 0).sum(0) / (len(BUILTIN_DOMAIN_NAMES) - 1)
    table = np.array2string(acc, precision=2)
    chance = 1 / NUM_CLASSES
    assert diag.min() >= 1.8 * chance, table
    lab = [BUILTIN_DOMAIN_NAMES.index(d) for d in ("CK", "JAFFE", "Oulu")]
    assert (diag - row_other)[lab].min() >= 0.05, table
    assert (diag - col_other).min() >= 0.03, table
    assert diag.mean() - acc[off].mean() >= 0.2, table


# ----------------------------------------------------------------------------- ensure_synthfer


def test_ensure_is_idempotent(tiny: Path) -> None:
    before = tree_hashes(tiny)
    stamp = (tiny / META_FILE).stat().st_mtime_ns
    ensure_synthfer(tiny, "tiny", 0)
    assert tree_hashes(tiny) == before and (tiny / META_FILE).stat().st_mtime_ns == stamp


@pytest.mark.parametrize("scale, seed", [("small", 0), ("tiny", 3)])
def test_ensure_refuses_a_different_synthfer(tiny: Path, scale: str, seed: int) -> None:
    with pytest.raises(UserError, match=r"synthfer\.json.*scale=tiny seed=0"):
        ensure_synthfer(tiny, scale, seed)


def test_ensure_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a SynthFER folder"):
        ensure_synthfer(tmp_path, "tiny", 0)
    with pytest.raises(UserError, match="not an empty folder"):
        generate_synthfer(tmp_path, "tiny", 0, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_ensure_fills_an_empty_folder(tiny: Path, tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    ensure_synthfer(root, "tiny", 0, progress=False)
    assert tree_hashes(root) == tree_hashes(tiny)


@pytest.mark.parametrize("scale, seed", [("huge", 0), ("tiny", -1)])
def test_bad_arguments(tmp_path: Path, scale: str, seed: int) -> None:
    with pytest.raises(UserError, match="SynthFER (scale|seed)"):
        ensure_synthfer(tmp_path / "x", scale, seed)
    assert not (tmp_path / "x").exists()


def cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "lacmfer.data.synth", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_at_once_make_one_folder(tiny: Path, tmp_path: Path) -> None:
    root = tmp_path / "data" / "synthfer"
    procs = [cli("--out", str(root), "--scale", "tiny", "--seed", "0", "--no-progress") for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert tree_hashes(root) == tree_hashes(tiny)
    assert [p.name for p in root.parent.iterdir()] == ["synthfer"]  # no temporary leftovers


@pytest.mark.parametrize("args, message", [
    (["--scale", "huge"], "invalid choice"),
    (["--seed", "-2"], "seed"),
    ([], "--out"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    full = (["--out", str(tmp_path / "out")] if args else []) + args
    proc = cli(*full)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "out").exists()
