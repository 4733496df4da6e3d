import numpy as np
import pytest
import torch

from lacmfer.data.cache import decode_image
from lacmfer.data.loaders import BatchStream, eval_batches, fixed_subset, load_split_data
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def raf_split(synth_tiny):
    cfg = tiny_config(synth_tiny)
    return cfg, load_split_data(cfg, "RAF", progress=False)


def stream(samples, sampling="pooled", workers=0, seed=0, stream_id=0):
    return BatchStream(samples, 12, seed=seed, stream_id=stream_id, sampling=sampling, num_workers=workers)


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


def test_batches_are_the_cached_uint8_rows_channels_first(raf_split):
    _, data = raf_split
    s = stream(data.source_train)
    rows = s.batch_rows(0)
    images, labels, domains, seed = next(s)
    assert images.shape == (12, 3, 48, 48) and images.dtype == torch.uint8 and images.is_contiguous()
    # Rows from several list files (the sources are pooled), each the cached image itself.
    assert len(set(data.source_train.domains[rows])) > 1
    for i, k in enumerate(rows):
        assert np.array_equal(images[i].permute(1, 2, 0).numpy(), data.source_train.image(k))
    assert labels.tolist() == data.source_train.labels[rows].tolist()
    assert domains.tolist() == data.source_train.domains[rows].tolist()
    assert seed == s.batch_seed(0)


def test_stream_is_deterministic_resumable_and_worker_independent(raf_split):
    _, data = raf_split
    a = stream(data.source_train)
    first = [next(a) for _ in range(4)]
    b = stream(data.source_train, workers=2)
    for want, got in zip(first, [next(b) for _ in range(4)], strict=True):
        assert torch.equal(want.images, got.images) and torch.equal(want.labels, got.labels)
        assert want.seed == got.seed
    resumed = stream(data.source_train)
    resumed.load_state_dict({"batches": 2})
    again = next(resumed)
    assert torch.equal(again.images, first[2].images) and again.seed == first[2].seed
    assert len({batch.seed for batch in first}) == 4  # a fresh augmentation draw per batch
    other_seed = next(stream(data.source_train, seed=1))
    assert not torch.equal(other_seed.images, first[0].images) and other_seed.seed != first[0].seed
    assert next(stream(data.source_train, stream_id=1)).seed != first[0].seed


def test_pooled_stream_covers_every_sample_once_per_epoch(raf_split):
    _, data = raf_split
    s = stream(data.target_train)
    n = len(data.target_train)
    rows = np.concatenate([s.batch_rows(b) for b in range(n // 12 + 1)])
    assert sorted(rows[:n]) == list(range(n))


def test_balanced_domains_gives_equal_shares(raf_split):
    _, data = raf_split
    s = stream(data.source_train, sampling="balanced_domains")
    counts = np.bincount(data.source_train.domains[s.batch_rows(0)], minlength=6)
    assert sorted(counts[[0, 1, 2, 4, 5]].tolist()) == [2, 2, 2, 3, 3]


def test_eval_batches_are_ordered_and_follow_the_subset(raf_split):
    _, data = raf_split
    batches = list(eval_batches(data.target_test, 10))
    assert torch.cat([b.labels for b in batches]).tolist() == data.target_test.labels.tolist()
    again = torch.cat([b.images for b in eval_batches(data.target_test, 7)])
    assert torch.equal(torch.cat([b.images for b in batches]), again)
    subset = np.array([5, 2, 9])
    picked = torch.cat([b.images for b in eval_batches(data.target_test, 2, subset)])
    assert torch.equal(picked, again[subset])


def test_fixed_subset_is_seeded_sorted_and_none_when_everything_fits():
    a = fixed_subset(1000, 100, [0, 2])
    assert len(a) == 100 and len(set(a.tolist())) == 100 and np.all(np.diff(a) > 0) and a.max() < 1000
    assert np.array_equal(a, fixed_subset(1000, 100, [0, 2]))
    assert not np.array_equal(a, fixed_subset(1000, 100, [1, 2]))
    assert fixed_subset(100, 100, [0, 2]) is None and fixed_subset(100, None, [0, 2]) is None
