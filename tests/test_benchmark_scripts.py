"""Tests of the helpers in benchmarks/ that produce committed results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def mean_shape_module(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import mean_shape_hippocampus

    return mean_shape_hippocampus


def test_mean_shape_predictions_use_each_scans_registration(mean_shape_module, tmp_path):
    from shapeworks_progressive.particles import read_particles
    from shapeworks_progressive.writeback import read_predictions

    rng = np.random.default_rng(0)
    mean_world = rng.normal(size=(8, 3)) * 10
    order = [3, 1, 7, 0, 2, 6, 4, 5]
    angle = np.deg2rad(30)
    image_to_world = np.eye(4)
    image_to_world[:3, :3] = [[np.cos(angle), -np.sin(angle), 0],
                              [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    image_to_world[:3, 3] = [5.0, -2.0, 1.0]
    run = tmp_path / "run"
    (run / "predictions").mkdir(parents=True)
    (run / "predictions" / "predictions.json").write_text(json.dumps({
        "frame": "world", "units": "mm", "scale_sizes": [4, 8], "particle_order": order,
        "subjects": {"case_a": {"row_index": 0, "image": "a.nrrd",
                                "image_to_world": image_to_world.ravel().tolist(),
                                "segmentation": "segmentation.nrrd"}}}))

    folder = mean_shape_module.write_mean_shape_predictions(mean_world, run, tmp_path / "out")

    local = read_particles(folder / "case_a" / "local.particles")
    back = local @ image_to_world[:3, :3].T + image_to_world[:3, 3]
    np.testing.assert_allclose(back, mean_world, atol=1e-5)
    np.testing.assert_allclose(read_particles(folder / "case_a" / "scale4_world.particles"),
                               mean_world[order[:4]], atol=1e-5)
    (prediction,) = read_predictions(tmp_path / "out")
    assert prediction.segmentation is None
    np.testing.assert_allclose(prediction.particles_world, mean_world, atol=1e-5)


def test_mean_shape_needs_a_run_with_predictions(mean_shape_module, tmp_path):
    with pytest.raises(FileNotFoundError, match="predictions.json"):
        mean_shape_module.write_mean_shape_predictions(np.zeros((4, 3)), tmp_path, tmp_path)
