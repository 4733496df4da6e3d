import numpy as np

from lacmfer.config import DataConfig
from lacmfer.data.manifest import load_domains
from lacmfer.data.splits import make_split, stratified_holdout
from tests.test_manifest import make_six_domains


def test_stratified_holdout_is_per_class_and_deterministic():
    labels = np.repeat(np.arange(7), [40, 10, 20, 3, 1, 0, 30])
    train, val = stratified_holdout(labels, 0.1, seed=0, domain="RAF")
    assert np.intersect1d(train, val).size == 0
    assert np.union1d(train, val).tolist() == list(range(len(labels)))
    assert np.bincount(labels[val], minlength=7).tolist() == [4, 1, 2, 0, 0, 0, 3]
    again = stratified_holdout(labels, 0.1, seed=0, domain="RAF")[1]
    assert np.array_equal(val, again)
    assert not np.array_equal(val, stratified_holdout(labels, 0.1, seed=1, domain="RAF")[1])
    # Every class keeps a training row even with a large fraction.
    train, _ = stratified_holdout(labels, 0.9, seed=0, domain="RAF")
    assert set(labels[train]) == {0, 1, 2, 3, 4, 6}


def test_leave_one_domain_out(tmp_path):
    make_six_domains(tmp_path, per_list=70)
    domains = load_domains(DataConfig(root=tmp_path))
    lab = make_split(domains, "CK", 0.1, seed=0)
    assert lab.sources == ("JAFFE", "Oulu", "RAF", "FER2013", "Aff")
    assert lab.target_test_is_train  # lab convention: whole set is stream and test
    assert [p.domain for p in lab.source_train] == list(lab.sources)
    assert all(p.manifest.list_file.name.endswith(("_train.txt", "JAFFE.txt", "Oulu.txt")) for p in lab.source_train)
    for tr, va in zip(lab.source_train, lab.source_val, strict=True):
        assert len(va) == 7 and len(tr) == 63  # 10 % of each class of 70
        assert np.intersect1d(tr.rows, va.rows).size == 0
    wild = make_split(domains, "RAF", 0.1, seed=0)
    assert not wild.target_test_is_train
    assert wild.target_train.manifest.list_file.name == "RAF_train.txt"
    assert wild.target_test.manifest.list_file.name == "RAF_test.txt"
    # A source's hold-out does not depend on which domain is the target.
    ck_in_raf_split = next(p for p in wild.source_val if p.domain == "CK")
    ck_in_aff_split = next(p for p in make_split(domains, "Aff", 0.1, 0).source_val if p.domain == "CK")
    assert np.array_equal(ck_in_raf_split.rows, ck_in_aff_split.rows)
