"""Tests for writeback: the predicted project beside the user's, and the DeepSSM layout."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from shapeworks_progressive.errors import ProjectError
from shapeworks_progressive.particles import read_particles, write_particles
from shapeworks_progressive.project import Project
from shapeworks_progressive.transforms import apply_transform
from shapeworks_progressive.validation import validate_project
from shapeworks_progressive.writeback import (PredictedShape, read_predictions,
                                              write_back_run, write_deepssm_layout,
                                              write_predicted_project)


def _rigid(angle_deg: float, translation) -> np.ndarray:
    angle = np.deg2rad(angle_deg)
    matrix = np.eye(4)
    matrix[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    matrix[:3, 3] = translation
    return matrix


@pytest.fixture
def predictions(left_atrium_copy):
    import SimpleITK as sitk

    project = Project.load(left_atrium_copy)
    rng = np.random.default_rng(1)
    out = []
    for row in (1, 3):
        subject = project.subjects[row]
        truth = read_particles(subject.world_particles[0])
        image = left_atrium_copy.parent / f"{subject.name}_mri.nrrd"
        sitk.WriteImage(sitk.Image(8, 8, 8, sitk.sitkFloat32), str(image))
        # the prediction lies in the frame its (made-up) registration put the scan in
        image_to_world = _rigid(20.0 * row, [3.0, -7.0, 11.0 * row])
        truth_in_frame = apply_transform(
            apply_transform(truth, subject.world_transform(0), inverse=True), image_to_world)
        out.append(PredictedShape(
            name=subject.name, row_index=row, image=image,
            particles_world=truth_in_frame + rng.normal(scale=0.5, size=truth.shape),
            image_to_world=image_to_world))
    return out


def test_original_project_stays_byte_identical_and_rows_unchanged(left_atrium_copy,
                                                                   predictions):
    before = left_atrium_copy.read_bytes()
    project = Project.load(left_atrium_copy)
    path = write_predicted_project(project, predictions)
    assert left_atrium_copy.read_bytes() == before
    assert hashlib.sha256(before).hexdigest() == hashlib.sha256(
        left_atrium_copy.read_bytes()).hexdigest()
    assert path == left_atrium_copy.with_name("left_atrium_predicted.swproj")
    original = json.loads(before)
    written = json.loads(path.read_text())
    assert written["data"][:4] == original["data"]
    for section in ("groom", "optimize", "studio", "project", "analysis", "deepssm"):
        assert written[section] == original[section]
    new_rows = written["data"][4:]
    assert [r["name"] for r in new_rows] == ["LA_03_predicted", "LA_01_predicted"]
    assert all(r["group_source"] == "predicted" and r["excluded"] == "true" for r in new_rows)
    assert new_rows[0]["shape_1"] == "LA_03.vtk" and new_rows[0]["groomed_1"] == ""
    assert new_rows[0]["image_image"] == "LA_03_mri.nrrd"
    assert all(isinstance(v, str) for r in written["data"] for v in r.values())


def test_predicted_project_loads_validates_and_local_maps_to_world(left_atrium_copy,
                                                                   predictions):
    path = write_predicted_project(Project.load(left_atrium_copy), predictions)
    loaded = Project.load(path)
    assert len(loaded.subjects) == 6
    report = validate_project(loaded)
    assert report.ok, [str(p) for p in report.problems]
    assert report.particle_counts == {"1": 128}
    for prediction, subject in zip(predictions, loaded.subjects[4:]):
        assert subject.excluded and subject.groups == {"source": "predicted"}
        local = read_particles(subject.local_particles[0])
        world = read_particles(subject.world_particles[0])
        np.testing.assert_allclose(world, prediction.particles_world, atol=1e-5)
        np.testing.assert_allclose(apply_transform(local, subject.world_transform()),
                                   prediction.particles_world, atol=1e-4)
        np.testing.assert_allclose(subject.alignment(), prediction.image_to_world, atol=1e-6)
        np.testing.assert_allclose(subject.procrustes_transform(), np.eye(4))
        # Local particles are in the image frame, not the world frame.
        assert np.abs(local - world).max() > 1.0


def test_refuses_original_path_and_wrong_particle_count(left_atrium_copy, predictions):
    project = Project.load(left_atrium_copy)
    with pytest.raises(ProjectError, match="original project"):
        write_predicted_project(project, predictions, path=left_atrium_copy)
    bad = PredictedShape(name="x", particles_world=np.zeros((64, 3)))
    with pytest.raises(ProjectError, match="64 particles"):
        write_predicted_project(project, [bad])


def test_read_predictions_and_deepssm_layout(left_atrium_copy, predictions, tmp_path):
    from shapeworks_progressive.meshes import read_mesh

    run_dir = tmp_path / "run"
    manifest = {"scale_sizes": [32, 128], "particle_order": list(range(128)), "subjects": {}}
    for p in predictions:
        folder = run_dir / "predictions" / p.name
        write_particles(folder / "world.particles", p.particles_world)
        write_particles(folder / "local.particles", p.particles_local)
        write_particles(folder / "scale32_world.particles", p.particles_world[:32])
        manifest["subjects"][p.name] = {
            "row_index": p.row_index, "image": str(p.image),
            "image_to_world": p.image_to_world.ravel().tolist()}
    (run_dir / "predictions" / "predictions.json").write_text(json.dumps(manifest))
    loaded = read_predictions(run_dir)
    assert [p.name for p in loaded] == ["LA_03", "LA_01"]
    assert sorted(loaded[0].scales) == [32]  # scale 128 has no file
    np.testing.assert_allclose(loaded[1].image_to_world, predictions[1].image_to_world)
    np.testing.assert_allclose(loaded[1].particles_world, predictions[1].particles_world,
                               atol=1e-6)

    project = Project.load(left_atrium_copy)
    mesh = read_mesh(left_atrium_copy.parent / "LA_01.vtk")
    write_deepssm_layout(project, loaded, meshes={"LA_01": mesh},
                         distances={"LA_01": 0.75, "LA_03": float("nan")})
    folder = left_atrium_copy.parent / "deepssm" / "model" / "test_predictions"
    assert (folder / "world_predictions" / "3.particles").is_file()
    assert (folder / "world_predictions" / "3.vtk").is_file()
    assert not (folder / "world_predictions" / "1.vtk").exists()
    table = (left_atrium_copy.parent / "deepssm" / "test_distances.csv").read_text()
    assert table == "Name,Distance\nLA_03,N/A\nLA_01,0.750000\n"


def test_write_back_run_with_evaluation(left_atrium_copy, predictions, tmp_path):
    from shapeworks_progressive.evaluation import evaluate_run

    run_dir = tmp_path / "run"
    manifest = {"subjects": {}}
    for p in predictions:
        write_particles(run_dir / "predictions" / p.name / "world.particles", p.particles_world)
        manifest["subjects"][p.name] = {"row_index": p.row_index,
                                        "image_to_world": p.image_to_world.ravel().tolist()}
    (run_dir / "predictions" / "predictions.json").write_text(json.dumps(manifest))
    project = Project.load(left_atrium_copy)
    evaluation = evaluate_run(project, run_dir, save_meshes=False)
    path = write_back_run(project, run_dir, evaluation=evaluation, deepssm_layout=True)
    assert len(Project.load(path).subjects) == 6
    folder = left_atrium_copy.parent / "deepssm" / "model" / "test_predictions"
    assert (folder / "world_predictions" / "1.vtk").is_file()
    lines = (left_atrium_copy.parent / "deepssm" / "test_distances.csv").read_text().split()
    assert lines[1] == f"LA_03,{evaluation.distances['LA_03']:.6f}"
    assert 0.5 < evaluation.distances["LA_03"] < 3.0
