"""One spelling of each list of names, and registries that agree with the config."""

from __future__ import annotations

import ast
import re
import subprocess

import pytest

from lacmfer import names
from lacmfer.config import ExperimentConfig, config_from_dict
from lacmfer.errors import UserError
from lacmfer.hparams import HPARAMS
from lacmfer.method.methods import METHODS
from lacmfer.method.validators import TARGET_VALIDATORS
from tests.conftest import REPO

REGISTRIES = {
    "domains": set(names.domain_names()),
    "objectives": set(names.objectives()) | {names.ORACLE_METRIC},
    "cluster ramps": set(names.CLUSTER_RAMPS),
    "methods": set(names.METHOD_NAMES),
}
SOURCES = ["lacmfer", "search", "trainables", "bench", "tune.py"]


def python_sources():
    for entry in SOURCES:
        path = REPO / entry
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def test_no_module_but_the_names_module_spells_a_list_of_names():
    # A tuple, list or set literal holding three or more names of one registry is a copy of
    # that registry (a selection of two, such as the methods a script compares, is fine).
    # Per-domain data keyed by domain (SynthFER's styles) is a dict, not a copy.
    copies = []
    for path in python_sources():
        if path == REPO / "lacmfer" / "names.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                strings = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                copies += [f"{path.relative_to(REPO)}:{node.lineno} {kind}"
                           for kind, registry in REGISTRIES.items() if len(strings & registry) >= 3]
    assert copies == []


def test_the_config_accepts_exactly_the_registered_names():
    for domain in names.domain_names():
        config_from_dict({"data": {"domains": [domain, "CK" if domain != "CK" else "RAF"], "targets": [domain]}})
    for method in names.METHOD_NAMES:
        assert config_from_dict({"loss": {"adaptation": method}}).loss.adaptation == method
    for ramp in names.CLUSTER_RAMPS:
        assert config_from_dict({"schedule": {"cluster_ramp": ramp}}).schedule.cluster_ramp == ramp
    for section, key, value in (("data", "targets", ["Nowhere"]), ("loss", "adaptation", "cdan"),
                                ("schedule", "cluster_ramp", "cubic"), ("eval", "objective", "accuracy")):
        with pytest.raises(UserError, match=rf"{section}\.{key}"):
            config_from_dict({section: {key: value}})
    assert ExperimentConfig().data.domains == list(names.domain_names())


def test_every_registered_name_has_its_implementation():
    assert set(METHODS) == set(names.METHOD_NAMES)
    assert list(TARGET_VALIDATORS) == names.TARGET_VALIDATOR_NAMES


def test_every_searchable_parameter_sets_an_existing_config_key():
    cfg = ExperimentConfig()
    values = cfg.searchable_values()
    assert set(values) == set(HPARAMS)
    for name, hparam in HPARAMS.items():
        spec = hparam.distribution
        new = spec["choices"][-1] if spec["distribution"] == "choice" else spec["high"]
        assert cfg.with_values({hparam.key: new}).searchable_values()[name] == new, name


DOCUMENT = re.compile(r"\b(SPEC|DESIGN)(\.md)?\s*§|\b(SPEC|DESIGN)\.md\b")
# Documents are upper-case Markdown files (docs/RESULTS.md, README.md); lower-case ones
# (summary.md, report.md) are outputs a run writes.
DOCUMENT_PATH = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[A-Z][A-Z0-9_]*\.md)\b")


def test_no_file_outside_docs_refers_to_a_document_not_in_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    missing = []
    for name in tracked:
        path = REPO / name
        if name.startswith("docs/") or path == REPO / "tests" / "test_names.py" or path.suffix not in (
                ".py", ".md", ".yaml", ".toml", ".txt"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if DOCUMENT.search(line):
                missing.append(f"{name}:{number}: {line.strip()}")
            for ref in DOCUMENT_PATH.findall(line):
                if not ((REPO / ref).exists() or (path.parent / ref).exists()):
                    missing.append(f"{name}:{number}: {ref}")
    assert missing == []


def test_the_dataset_table_describes_the_built_in_domains_in_order():
    """`lacmfer.names` spells the domain names without importing the data package; the table must agree."""
    from lacmfer.data.domains import DOMAINS

    assert tuple(DOMAINS)[: len(names.BUILTIN_DOMAIN_NAMES)] == names.BUILTIN_DOMAIN_NAMES
