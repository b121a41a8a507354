"""Tests for evaluation (and the report and CLI built on it), on the left-atrium example."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from shapeworks_progressive.evaluation import (evaluate_predictions, particle_errors,
                                               segmentation_dice)
from shapeworks_progressive.particles import read_particles, write_particles
from shapeworks_progressive.project import Project
from shapeworks_progressive.writeback import PredictedShape


@pytest.fixture(scope="module")
def project(left_atrium_project):
    return Project.load(left_atrium_project)


def _predictions(project, *, noise: float, order: np.ndarray, rows=(1, 3)):
    rng = np.random.default_rng(7)
    out = []
    for row in rows:
        subject = project.subjects[row]
        truth = read_particles(subject.world_particles[0])
        predicted = truth + rng.normal(scale=noise, size=truth.shape)
        out.append(PredictedShape(name=subject.name, row_index=row, particles_world=predicted,
                                  particle_order=order,
                                  image_to_world=subject.world_transform(0),
                                  scales={32: predicted[order[:32]],
                                          128: predicted[order]}))
    return out


def test_particle_errors_are_per_point_euclidean():
    truth = np.zeros((4, 3))
    predicted = np.array([[3.0, 4, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
    rmse, mean = particle_errors(predicted, truth)
    assert rmse == pytest.approx(np.sqrt(25 / 4))
    assert mean == pytest.approx(5 / 4)


def test_true_particles_reach_the_floor_and_coarse_scales_use_the_order(project, tmp_path):
    order = np.random.default_rng(3).permutation(128)
    predictions = _predictions(project, noise=0.0, order=order)
    result = evaluate_predictions(project, predictions, tmp_path / "eval")
    assert [(r["subject"], r["scale"]) for r in result.rows] == [
        ("LA_03", 32), ("LA_03", 128), ("LA_01", 32), ("LA_01", 128)]
    for row in result.rows:
        # Exact particles: zero error at every scale, so the prefix order was applied.
        assert row["particle_rmse_mm"] == pytest.approx(0.0, abs=1e-9)
        assert row["surface_mean_mm"] == pytest.approx(row["floor_surface_mean_mm"], abs=1e-9)
    finest = [r for r in result.rows if r["is_finest"]]
    # Real surfaces: the 128-particle warp is within about a millimetre of the original.
    assert all(0.3 < r["surface_mean_mm"] < 1.5 for r in finest)
    coarse = [r for r in result.rows if r["scale"] == 32]
    assert all(c["surface_mean_mm"] > f["surface_mean_mm"] for c, f in zip(coarse, finest))


def test_ground_truth_is_measured_in_the_prediction_frame(project, tmp_path):
    # A new image registered 3 mm and 5 degrees away from the subject's optimized frame:
    # a prediction that follows the anatomy in that frame has zero error.
    from scipy.spatial.transform import Rotation

    from shapeworks_progressive.transforms import apply_transform

    subject = project.subjects[1]
    moved = np.eye(4)
    moved[:3, :3] = Rotation.from_euler("z", 5, degrees=True).as_matrix()
    moved[:3, 3] = [3.0, 0.0, 0.0]
    image_to_world = moved @ subject.world_transform(0)
    truth = read_particles(subject.world_particles[0])
    predicted = apply_transform(truth, moved)
    prediction = PredictedShape(name=subject.name, row_index=1, particles_world=predicted,
                                image_to_world=image_to_world, particle_order=np.arange(128))
    row = evaluate_predictions(project, [prediction], tmp_path / "eval",
                               save_meshes=False).rows[-1]
    assert row["particle_rmse_mm"] == pytest.approx(0.0, abs=1e-6)
    assert row["surface_mean_mm"] == pytest.approx(row["floor_surface_mean_mm"], abs=1e-6)
    # The unmoved truth, in the moved frame, is off by about the misalignment.
    stale = PredictedShape(name=subject.name, row_index=1, particles_world=truth,
                           image_to_world=image_to_world, particle_order=np.arange(128))
    row = evaluate_predictions(project, [stale], tmp_path / "eval2", save_meshes=False).rows[-1]
    assert row["particle_rmse_mm"] > 3.0


def test_noisy_prediction_outputs_csv_summary_and_meshes(project, tmp_path):
    from vtkmodules.util.numpy_support import vtk_to_numpy

    from shapeworks_progressive.meshes import read_mesh

    order = np.arange(128)
    predictions = _predictions(project, noise=1.0, order=order)
    out = tmp_path / "eval"
    result = evaluate_predictions(project, predictions, out)
    for prediction, row in zip(predictions, [r for r in result.rows if r["is_finest"]]):
        truth = read_particles(project.subjects[prediction.row_index].world_particles[0])
        expected = np.sqrt(np.mean(np.sum((prediction.particles_world - truth) ** 2, axis=1)))
        assert row["particle_rmse_mm"] == pytest.approx(expected, rel=1e-9)
        assert row["surface_mean_mm"] > row["floor_surface_mean_mm"]
        assert row["hausdorff_mm"] >= row["surface_p95_mm"] >= 0
        assert np.isnan(row["dice"])  # the shapes are meshes: no segmentation to compare

    with open(out / "evaluation.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 4 and table[1]["scale"] == "128" and table[1]["subject"] == "LA_03"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frame"] == "prediction" and summary["scales"] == [32, 128]
    finest_rmse = [r["particle_rmse_mm"] for r in result.rows if r["is_finest"]]
    assert summary["per_scale"]["128"]["particle_rmse_mm"]["mean"] == pytest.approx(
        np.mean(finest_rmse))
    assert summary["per_subject"]["LA_01"]["dice"] is None

    mesh = read_mesh(out / "meshes" / "LA_01" / "scale128_predicted.vtk")
    error = vtk_to_numpy(mesh.GetPointData().GetArray("deepssm_error"))
    assert len(error) == mesh.GetNumberOfPoints()
    assert error.mean() == pytest.approx(
        [r for r in result.rows if r["subject"] == "LA_01" and r["is_finest"]][0][
            "surface_pred_to_true_mm"], rel=1e-5)


def test_report_and_cli(left_atrium_copy, tmp_path, capsys):
    from shapeworks_progressive.cli import main

    project = Project.load(left_atrium_copy)
    order = np.arange(128)
    run_dir = tmp_path / "run"
    manifest = {"scale_sizes": [32, 128], "particle_order": order.tolist(), "subjects": {}}
    for p in _predictions(project, noise=0.5, order=order, rows=(0, 2)):
        folder = run_dir / "predictions" / p.name
        write_particles(folder / "world.particles", p.particles_world)
        write_particles(folder / "scale32_world.particles", p.scales[32])
        manifest["subjects"][p.name] = {"row_index": p.row_index,
                                        "image_to_world": np.eye(4).ravel().tolist()}
    (run_dir / "predictions" / "predictions.json").write_text(json.dumps(manifest))
    (run_dir / "train_log.csv").write_text(
        "epoch,train_loss,train_rmse_s1,val_rmse_s1\n1,9,4,5\n2,4,2,3\n")
    code = main(["evaluate", str(left_atrium_copy), "--predictions", str(run_dir)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "report:" in printed and printed.count("\n   128 ") == 1
    report = (run_dir / "evaluation" / "report.md").read_text()
    assert "| 128 |" in report and "training_curves.png" in report
    figures = sorted(p.name for p in (run_dir / "evaluation" / "figures").glob("*.png"))
    assert "error_per_scale.png" in figures and "training_curves.png" in figures
    assert sum(name.startswith("mesh_") for name in figures) == 2


def test_segmentation_dice_resamples_prediction_to_truth_grid(tmp_path):
    import SimpleITK as sitk

    truth = np.zeros((20, 20, 20), dtype=np.uint8)
    truth[4:14, 4:14, 4:14] = 1
    truth_image = sitk.GetImageFromArray(truth)
    # The prediction on a 2x coarser grid whose voxel i covers truth voxels 2i and 2i+1:
    # the same cube, shifted by 4 mm along x, so 6 of its 10 columns overlap.
    coarse = np.zeros((10, 10, 10), dtype=np.uint8)
    coarse[2:7, 2:7, 4:9] = 1  # (z, y, x) = truth (4..13, 4..13, 8..17)
    predicted_image = sitk.GetImageFromArray(coarse)
    predicted_image.SetSpacing((2.0, 2.0, 2.0))
    predicted_image.SetOrigin((0.5, 0.5, 0.5))
    sitk.WriteImage(truth_image, str(tmp_path / "truth.nrrd"))
    sitk.WriteImage(predicted_image, str(tmp_path / "pred.nrrd"))
    value = segmentation_dice(tmp_path / "pred.nrrd", tmp_path / "truth.nrrd")
    assert value == pytest.approx(0.6, abs=1e-9)


def test_mesh_dice_voxelizes_the_true_surface_on_the_prediction_grid(tmp_path):
    import SimpleITK as sitk
    from vtkmodules.vtkFiltersSources import vtkSphereSource

    from shapeworks_progressive.evaluation import mesh_dice

    # Prediction: a ball of radius 8 mm on a 1 mm grid with a mirrored (LPS-like) direction.
    shape = (32, 32, 32)
    index = np.indices(shape).astype(float)
    center_index = np.array([16.0, 16.0, 16.0])  # (x, y, z)
    radius = np.sqrt(sum((index[2 - k] - center_index[k]) ** 2 for k in range(3)))
    image = sitk.GetImageFromArray((radius <= 8.0).astype(np.uint8))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    image.SetOrigin((20.0, 30.0, -5.0))
    sitk.WriteImage(image, str(tmp_path / "pred.nrrd"))
    center_world = image.TransformContinuousIndexToPhysicalPoint(center_index.tolist())
    sphere = vtkSphereSource()
    sphere.SetCenter(*center_world)
    sphere.SetRadius(8.0)
    sphere.SetThetaResolution(64)
    sphere.SetPhiResolution(64)
    sphere.Update()
    assert mesh_dice(tmp_path / "pred.nrrd", sphere.GetOutput()) > 0.97
    # The same ball moved by its radius: lens volume 5/12 pi r^3, so Dice = 10/32.
    sphere.SetCenter(center_world[0] + 8.0, center_world[1], center_world[2])
    sphere.Update()
    assert mesh_dice(tmp_path / "pred.nrrd", sphere.GetOutput()) == pytest.approx(
        10 / 32, abs=0.02)
