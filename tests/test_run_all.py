"""The run command: train, predict the test split, evaluate and report, on a tiny project."""

from __future__ import annotations

import csv
import hashlib
import json

import pytest
import torch

from shapeworks_progressive.cli import main
from shapeworks_progressive.config import default_config
from shapeworks_progressive.project import Project

from test_predict import TINY_CONFIG, make_consistent_project


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_run_trains_predicts_evaluates_and_prints_the_table(tmp_path, capsys):
    path, _ = make_consistent_project(tmp_path / "project")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY_CONFIG))
    run_dir = tmp_path / "run"
    status = main(["run", str(path), "--config", str(config), "--out", str(run_dir),
                   "--no-progress", "--studio"])
    assert status == 0
    out = capsys.readouterr().out

    # training, predictions of the test split only, evaluation, report
    assert (run_dir / "best.pt").is_file() and (run_dir / "train_log.csv").is_file()
    manifest = json.loads((run_dir / "predictions" / "predictions.json").read_text())
    assert list(manifest["subjects"]) == ["ell_5"]
    with open(run_dir / "evaluation" / "evaluation.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["scale"]) for r in rows] == [8, 16, 32, 64]
    assert all(r["subject"] == "ell_5" for r in rows)
    finest = rows[-1]
    # a 2-epoch model on identical ellipsoids: sub-voxel, and next to the floor
    assert 0 < float(finest["particle_rmse_mm"]) < 2.0
    assert 0 < float(finest["surface_mean_mm"]) < 2.0
    assert float(finest["floor_surface_mean_mm"]) < 0.5
    report = (run_dir / "evaluation" / "report.md").read_text()
    assert "## Error per scale" in report
    augment = {**default_config()["augment"], **TINY_CONFIG.get("augment", {})}
    assert (f"Augmentation: no PCA augmentation; random rotation up to "
            f"{augment['rotation_deg']} degrees") in report
    summary = json.loads((run_dir / "run_summary.json").read_text())
    assert summary["finest"]["particle_rmse_mm"] == pytest.approx(
        float(finest["particle_rmse_mm"]), abs=1e-5)
    assert set(summary["seconds"]) == {"train", "predict", "evaluate", "total"}

    # the predicted project beside the untouched original; Studio's DeepSSM files
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    predicted = Project.load(path.with_name("tiny_predicted.swproj"))
    assert [s.name for s in predicted.subjects][-1] == "ell_5_predicted"
    deepssm = path.parent / "deepssm"
    assert (deepssm / "model" / "test_predictions" / "world_predictions" / "5.vtk").is_file()
    distances = (deepssm / "test_distances.csv").read_text().splitlines()
    assert distances[0] == "Name,Distance" and distances[1].startswith("ell_5,")
    assert float(distances[1].split(",")[1]) == pytest.approx(
        float(finest["surface_mean_mm"]), abs=1e-5)

    # the table and the closing note
    assert "scale" in out and "floor" in out
    assert "finest scale: particle RMSE" in out


def test_run_checks_the_subjects_before_training(tmp_path, capsys):
    path, _ = make_consistent_project(tmp_path / "project")
    run_dir = tmp_path / "run"
    status = main(["run", str(path), "--out", str(run_dir), "--subjects", "ell_5", "nosuch",
                   "--no-progress"])
    assert status == 2
    assert "nosuch" in capsys.readouterr().err
    assert not run_dir.exists()
