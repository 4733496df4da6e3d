"""Shared test fixtures: small configs and list files written in the test itself."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def write(tmp_path: Path):
    """Write a text file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return _write


@pytest.fixture
def restore_registries():
    """Undo every registration a test makes (lists in place: other modules hold them)."""
    from lacmfer import hparams, names
    from lacmfer.data import domains
    from lacmfer.method.methods import METHODS
    from lacmfer.method.validators import TARGET_VALIDATORS

    lists = [names.METHOD_NAMES, names.TARGET_VALIDATOR_NAMES, names.DOMAIN_NAMES]
    saved = [list(items) for items in lists]
    dicts = {id(d): dict(d) for d in (METHODS, TARGET_VALIDATORS, domains.DOMAINS, hparams.HPARAMS)}
    yield
    for items, before in zip(lists, saved, strict=True):
        items[:] = before
    for d in (METHODS, TARGET_VALIDATORS, domains.DOMAINS, hparams.HPARAMS):
        d.clear()
        d.update(dicts[id(d)])


@pytest.fixture(scope="session")
def synth_tiny(tmp_path_factory) -> Path:
    """SynthFER `tiny`, generated once per test session."""
    from lacmfer.data.synth import generate_synthfer

    root = tmp_path_factory.mktemp("synthfer") / "tiny"
    generate_synthfer(root, scale="tiny", seed=0, progress=False)
    return root


def tiny_config(root: Path, **sections):
    """A CPU-sized config on SynthFER tiny: narrow net at 48 px, short schedule."""
    from lacmfer.config import config_from_dict

    raw = {
        "data": {"root": str(root), "image_size": 48, "batch_size": 16, "eval_batch_size": 64, "num_workers": 0},
        "model": {"width": 0.125, "global_blocks": [1, 1], "local_blocks": 1},
        "schedule": {"steps": 20, "lr_decay_steps": 20},
        "eval": {"interval": 10},
        "resources": {"threads": 1},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return config_from_dict(raw)


NO_AUGMENT = {"hflip": False, "color_jitter": 0.0, "grayscale": 0.0, "rotation": 0.0, "translate": 0.0,
              "scale_min": 1.0, "scale_max": 1.0}


@pytest.fixture
def s3(monkeypatch):
    """An S3 server on loopback with a bucket `results`; pyarrow and Ray find it through
    the standard AWS environment variables."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
                       "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3").create_bucket(Bucket="results")
    yield
    server.stop()
