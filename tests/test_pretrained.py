"""Pretrained trunks: torchvision's ImageNet weights offline, the SynthFER pretext trunk and its cache."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision

from lacmfer.config import PretextConfig, config_from_dict
from lacmfer.data.synth import STYLES, pretext_identity, subject
from lacmfer.errors import UserError
from lacmfer.method import pretext
from lacmfer.method.model import LACMFERNet
from lacmfer.method.pretrained import imagenet_weights_file, load_pretrained_trunk
from lacmfer.names import BUILTIN_DOMAIN_NAMES

TINY_PRETEXT = {"identities": 3, "images_per_identity": 2, "steps": 2, "batch_size": 4}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch cache; any download attempt fails as it would offline."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))

    def offline(url: str, dst: str, *args: object, **kwargs: object) -> None:
        raise URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return home


def config(tmp_path: Path, **model: object):
    return config_from_dict({"data": {"root": str(tmp_path / "data"), "image_size": 32},
                             "model": {"global_blocks": [1, 1], "local_blocks": 1, **model}})


def test_imagenet_weights_load_from_the_torch_cache(tmp_path: Path, torch_home: Path) -> None:
    state = torchvision.models.resnet18(weights=None).state_dict()
    for value in state.values():  # distinguishable from a fresh initialisation
        if value.is_floating_point():
            value.normal_()
    expected_file = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert imagenet_weights_file() == expected_file
    expected_file.parent.mkdir(parents=True)
    torch.save(state, expected_file)

    model = LACMFERNet(global_blocks=(1, 1), local_blocks=1)
    load_pretrained_trunk(model, config(tmp_path, pretrained="imagenet"))
    for key, value in model.trunk.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_imagenet_weights_offline_name_the_file_to_place(tmp_path: Path, torch_home: Path) -> None:
    with pytest.raises(UserError) as err:
        load_pretrained_trunk(LACMFERNet(global_blocks=(1, 1), local_blocks=1), config(tmp_path, pretrained="imagenet"))
    message = str(err.value)
    assert "\n" not in message
    assert str(torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message


def test_imagenet_weights_need_width_one(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"model: pretrained: imagenet .*needs width 1"):
        config(tmp_path, pretrained="imagenet", width=0.25)


def test_pretext_people_are_nobody_in_any_domain() -> None:
    """Pretext identities come from their own seed stream, not from a domain's subject pool."""
    people = {pretext_identity(0, n) for n in range(20)}
    for domain in BUILTIN_DOMAIN_NAMES:
        pool = {subject(0, domain, n, STYLES[domain]) for n in range(20)}
        assert not {(p.face_w, p.eye_sep) for p in people} & {(s.face_w, s.eye_sep) for s in pool}, domain


def test_pretext_trunk_learns_to_tell_people_apart() -> None:
    """Held-out photos of 6 people are identified far above chance (1/6) after a short training."""
    budget = PretextConfig(identities=6, images_per_identity=12, steps=80, batch_size=32, lr=0.05)
    trunk, accuracy = pretext.train_pretext_trunk(0.125, 32, budget, progress=False)
    assert accuracy >= 0.5  # 3x chance
    assert set(trunk) == set(LACMFERNet(width=0.125).trunk.state_dict())


def test_pretext_training_leaves_the_callers_random_stream_alone() -> None:
    torch.manual_seed(7)
    want = torch.rand(3)
    torch.manual_seed(7)
    pretext.train_pretext_trunk(0.125, 32, PretextConfig(**TINY_PRETEXT), progress=False)
    torch.testing.assert_close(torch.rand(3), want, rtol=0, atol=0)


def test_pretext_trunk_is_trained_once_cached_and_loads_at_any_width(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(tmp_path, pretrained="synthfer_pretext", width=0.25, pretext=TINY_PRETEXT)
    path = pretext.ensure_pretext_trunk(cfg, progress=False)
    assert path.parent == cfg.data.resolved_cache_dir and path.name.startswith("pretext-trunk-w0.25-32px-")
    stored = pretext.read_pretext_trunk(path)

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached trunk was trained again")

    monkeypatch.setattr(pretext, "train_pretext_trunk", no_training)
    model = LACMFERNet(width=0.25, global_blocks=(1, 1), local_blocks=1)
    load_pretrained_trunk(model, cfg)
    for key, value in model.trunk.state_dict().items():
        torch.testing.assert_close(value, stored[key], rtol=0, atol=0)


@pytest.mark.parametrize("change", [{"width": 0.125}, {"pretext": {**TINY_PRETEXT, "steps": 3}},
                                    {"pretext": {**TINY_PRETEXT, "seed": 1}}])
def test_pretext_trunk_file_is_content_addressed(tmp_path: Path, change: dict) -> None:
    base = {"pretrained": "synthfer_pretext", "width": 0.25, "pretext": TINY_PRETEXT}
    assert pretext.pretext_trunk_path(config(tmp_path, **base)) != pretext.pretext_trunk_path(
        config(tmp_path, **{**base, **change}))
