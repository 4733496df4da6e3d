"""The seven expression classes and the six CMFER domains (docs/METHOD.md §1).

Class ids follow the RAF-DB convention used by every list file of the field.
"""

from __future__ import annotations

from dataclasses import dataclass

from lacmfer import names

CLASSES: tuple[str, ...] = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
NUM_CLASSES = len(CLASSES)


@dataclass(frozen=True)
class DomainInfo:
    """One dataset of the benchmark (docs/METHOD.md §1).

    Lab-controlled sets have a single list that is both the unlabeled target stream and
    the test set (the field's convention); in-the-wild sets have separate train/test lists.
    """

    name: str
    train_list: str
    test_list: str
    train_counts: tuple[int, ...]  # images per class in the real train list
    test_counts: tuple[int, ...]  # images per class in the real test list

    @property
    def has_separate_test(self) -> bool:
        return self.train_list != self.test_list


DOMAINS: dict[str, DomainInfo] = {
    d.name: d
    for d in (
        DomainInfo("CK", "CK.txt", "CK.txt",
                   (249, 75, 177, 207, 84, 135, 123), (249, 75, 177, 207, 84, 135, 123)),
        DomainInfo("JAFFE", "JAFFE.txt", "JAFFE.txt",
                   (30, 32, 29, 31, 31, 30, 30), (30, 32, 29, 31, 31, 30, 30)),
        DomainInfo("Oulu", "Oulu.txt", "Oulu.txt",
                   (417, 417, 417, 417, 417, 423, 480), (417, 417, 417, 417, 417, 423, 480)),
        DomainInfo("RAF", "RAF_train.txt", "RAF_test.txt",
                   (1610, 352, 874, 5934, 2425, 854, 3157), (327, 72, 160, 1177, 469, 160, 666)),
        DomainInfo("FER2013", "FER2013_train.txt", "FER2013_test.txt",
                   (3171, 4097, 436, 7215, 4830, 3995, 4965), (416, 528, 55, 879, 594, 491, 626)),
        # AffectNet's per-class train counts are approximate in the literature (docs/METHOD.md §1).
        DomainInfo("Aff", "Aff_train.txt", "Aff_test.txt",
                   (4500, 4500, 3300, 4500, 4500, 4500, 4504), (497, 498, 497, 500, 500, 499, 497)),
    )
}


def register_domain(info: DomainInfo) -> DomainInfo:
    """Add (or replace) a dataset: its lists are then found under `data.root` like the built-in ones."""
    if not info.name.isidentifier():
        raise ValueError(f"{info.name!r}: a domain name is an identifier (it names files and folders)")
    if not len(info.train_counts) == len(info.test_counts) == NUM_CLASSES:
        raise ValueError(f"{info.name}: train_counts and test_counts need one count per class ({NUM_CLASSES})")
    DOMAINS[info.name] = info
    names.add_name(names.DOMAIN_NAMES, info.name)
    return info
