import numpy as np
import pytest
import torch

from lacmfer.data.cache import decode_image
from lacmfer.data.loaders import BatchStream, eval_batches, load_split_data
from lacmfer.data.transforms import eval_transform, train_transform
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def raf_split(synth_tiny):
    cfg = tiny_config(synth_tiny)
    return cfg, load_split_data(cfg, "RAF", progress=False)


def stream(cfg, samples, sampling="pooled", workers=0, seed=0):
    tf = train_transform(cfg.data.image_size, cfg.data.augment)
    return BatchStream(samples, 12, tf, seed=seed, stream_id=0, sampling=sampling, num_workers=workers)


def test_split_sets_match_the_lists(raf_split):
    cfg, data = raf_split
    assert data.split.sources == ("CK", "JAFFE", "Oulu", "FER2013", "Aff")
    assert len(data.target_train) == len(data.split.target_train.manifest)
    assert set(np.unique(data.source_train.domains)) == {0, 1, 2, 4, 5}  # every source but RAF (3)
    # A sample's pixels are the decoded image of its list line.
    k = len(data.source_train) - 1
    part = data.source_train.parts[-1]
    path = part.manifest.paths[part.rows[-1]]
    assert np.array_equal(data.source_train.image(k), decode_image(path, cfg.data.resolved_cache_size))
    assert data.source_train.labels[k] == part.manifest.labels[part.rows[-1]]


def test_train_batches_shapes_dtypes_and_normalisation(raf_split):
    cfg, data = raf_split
    x, y, d = next(stream(cfg, data.source_train))
    assert x.shape == (12, 3, 48, 48) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and d.dtype == torch.int64 and y.shape == d.shape == (12,)
    assert -2.2 < x.min() < 0 < x.max() < 2.7  # ImageNet-normalised, not raw uint8


def test_stream_is_deterministic_resumable_and_worker_independent(raf_split):
    cfg, data = raf_split
    a = stream(cfg, data.source_train)
    first = [next(a) for _ in range(4)]
    b = stream(cfg, data.source_train, workers=2)
    for want, got in zip(first, [next(b) for _ in range(4)], strict=True):
        assert all(torch.equal(w, g) for w, g in zip(want, got, strict=True))
    resumed = stream(cfg, data.source_train)
    resumed.load_state_dict({"batches": 2})
    assert all(torch.equal(w, g) for w, g in zip(first[2], next(resumed), strict=True))
    other_seed = next(stream(cfg, data.source_train, seed=1))
    assert not torch.equal(other_seed[0], first[0][0])


def test_pooled_stream_covers_every_sample_once_per_epoch(raf_split):
    cfg, data = raf_split
    s = stream(cfg, data.target_train)
    n = len(data.target_train)
    rows = np.concatenate([[k for k, _ in s.batch_keys(b)] for b in range(n // 12 + 1)])
    assert sorted(rows[:n]) == list(range(n))


def test_balanced_domains_gives_equal_shares(raf_split):
    cfg, data = raf_split
    s = stream(cfg, data.source_train, sampling="balanced_domains")
    rows = [k for k, _ in s.batch_keys(0)]
    counts = np.bincount(data.source_train.domains[rows], minlength=6)
    assert sorted(counts[[0, 1, 2, 4, 5]].tolist()) == [2, 2, 2, 3, 3]


def test_eval_batches_are_ordered_and_unaugmented(raf_split):
    cfg, data = raf_split
    tf = eval_transform(cfg.data.image_size)
    batches = list(eval_batches(data.target_test, tf, 10))
    ys = torch.cat([y for _, y, _ in batches])
    assert ys.tolist() == data.target_test.labels.tolist()
    again = torch.cat([x for x, _, _ in eval_batches(data.target_test, tf, 7)])
    assert torch.equal(torch.cat([x for x, _, _ in batches]), again)
