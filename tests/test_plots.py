"""search.plots: every picture of a split is a readable PNG of the fixed size, linked from summary.md."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from PIL import Image

from lacmfer.config import config_from_dict, save_config
from search.analysis import TrialRecord
from search.export import write_export
from search.plots import DPI, FIGURE_SIZE_IN, PICTURES, load_split_study, write_search_plots
from search.storage import ExperimentLocations

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = {"hyper_align": {"distribution": "loguniform", "low": 0.05, "high": 1.6},
         "threshold": {"distribution": "uniform", "low": 0.2, "high": 0.8}}
SIZE = (round(FIGURE_SIZE_IN[0] * DPI), round(FIGURE_SIZE_IN[1] * DPI))


def trial(trial_id: str, status: str, objectives: list[float], params: dict) -> TrialRecord:
    history = [{"step": 10.0 * (i + 1), "objective": o, "source_val_acc": o, "target_acc": 0.3 + 0.5 * o,
                "im": 0.1 * i, "entropy": -o, "bnm": 0.2 + 0.1 * o, "snd": 1.0 - o}
               for i, o in enumerate(objectives)]
    return TrialRecord(trial_id, "CK", params, status, history)


@pytest.fixture
def search(tmp_path):
    cfg = config_from_dict({"data": {"root": str(tmp_path / "data"), "targets": ["CK", "JAFFE"]},
                            "search": {"space": SPACE}, "schedule": {"steps": 30}, "eval": {"interval": 10},
                            "output": {"results_dir": str(tmp_path), "name": "exp"}})
    exp = cfg.experiment_dir
    save_config(cfg, exp / "config.yaml")
    study = optuna.create_study(study_name="exp/CK", storage=f"sqlite:///{exp / 'optuna.db'}", direction="maximize")
    dists = {"hyper_align": FloatDistribution(0.05, 1.6, log=True), "threshold": FloatDistribution(0.2, 0.8)}
    for i in range(12):  # 11 complete: importance needs 10 (search.analysis.MIN_COMPLETE_FOR_IMPORTANCE)
        params = {"hyper_align": 0.05 + 0.1 * i, "threshold": 0.25 + 0.04 * i}
        state = TrialState.PRUNED if i == 3 else TrialState.COMPLETE
        study.add_trial(create_trial(params=params, distributions=dists, state=state,
                                     value=None if i == 3 else 0.5 - abs(params["hyper_align"] - 0.5)))
    records = {
        "CK": [trial("a", "completed", [0.3, 0.5, 0.6], {"hyper_align": 0.3, "threshold": 0.4}),
               trial("b", "stopped early", [0.2], {"hyper_align": 1.2, "threshold": 0.7}),
               trial("c", "diverged", [0.4, math.nan], {"hyper_align": 0.9, "threshold": 0.3}),
               trial("d", "completed", [0.4, 0.45, 0.42], {"hyper_align": 0.1, "threshold": 0.6})],
        "JAFFE": [],  # no study and no trial: nothing to draw
    }
    return cfg, exp, records


def studies(exp: Path) -> dict[str, optuna.Study | None]:
    return {target: load_split_study(f"sqlite:///{exp / 'optuna.db'}", f"exp/{target}") for target in ("CK", "JAFFE")}


def test_each_picture_is_a_readable_png_of_the_fixed_size(search):
    cfg, exp, records = search
    section = write_search_plots(exp, cfg, studies(exp), records, {"CK": [("source_val_acc", 0.9)]})
    for kind, title in PICTURES.items():
        path = exp / "plots" / f"CK_{kind}.png"
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == SIZE, kind
            image.load()  # decodes every pixel: a truncated file fails here
        assert f"![CK: {title}](plots/CK_{kind}.png)" in section
        assert not (exp / "plots" / f"JAFFE_{kind}.png").exists()
        assert f"- {title}: not enough trials or evaluations to draw it." in section.split("### JAFFE")[1]


def test_a_picture_that_can_no_longer_be_drawn_is_removed(search):
    cfg, exp, records = search
    write_search_plots(exp, cfg, studies(exp), records, {})
    section = write_search_plots(exp, cfg, {"CK": None, "JAFFE": None}, records, {})  # the database is gone
    assert not (exp / "plots" / "CK_history.png").exists() and not (exp / "plots" / "CK_importance.png").exists()
    assert (exp / "plots" / "CK_curves.png").exists()
    assert "- objective per trial, best so far: not enough" in section


def test_summary_links_the_pictures_of_each_split(search):
    cfg, exp, records = search
    write_export(ExperimentLocations.of(cfg), cfg, records)
    summary = (exp / "summary.md").read_text(encoding="utf-8")
    links = [line for line in summary.splitlines() if line.startswith("![CK: ")]
    assert len(links) == len(PICTURES)
    for line in links:
        assert (exp / Path(line.split("](")[1].rstrip(")"))).is_file()


def test_the_export_reads_the_studies_once(search, monkeypatch):
    """One read of the Optuna storage serves every split's importances and plots: with results
    in object storage each read downloads the database. Fails if the importances or the
    plots open it again (as each split's importances did)."""
    cfg, exp, records = search
    places = ExperimentLocations.of(cfg)
    reads = []
    opened = ExperimentLocations.readable_optuna_storage

    def counted(self):
        reads.append(1)
        return opened(self)

    monkeypatch.setattr(ExperimentLocations, "readable_optuna_storage", counted)
    summary = write_export(places, cfg, records)
    assert len(reads) == 1
    ck = next(split for split in summary.splits if split.target == "CK")
    assert ck.importances and (exp / "plots" / "CK_importance.png").is_file()
    jaffe = next(split for split in summary.splits if split.target == "JAFFE")
    assert jaffe.importance_note == f"not available: no study 'exp/JAFFE' in {exp / 'optuna.db'}"
