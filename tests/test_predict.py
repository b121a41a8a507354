"""predict on a tiny synthetic ellipsoid project with a 2-epoch model (CPU, one thread).

The project comes from ``test_dataset._make_project``: six ellipsoid MRIs, each in its own
frame (rotations, flipped directions, one anisotropic image), with known image-to-world
transforms, so local particles and segmentations can be checked in each image's frame.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy.spatial.transform import Rotation

from shapeworks_progressive.cli import main
from shapeworks_progressive.dataset import prepare_dataset
from shapeworks_progressive.errors import ParticleCountError, ProjectValidationError
from shapeworks_progressive.evaluation import segmentation_dice
from shapeworks_progressive.particles import read_particles, write_particles
from shapeworks_progressive.predict import predict, select_targets, write_segmentation
from shapeworks_progressive.project import Project
from shapeworks_progressive.transforms import apply_transform
from shapeworks_progressive.validation import validate_project

from test_dataset import AXES, N_PARTICLES, _ellipsoid_points, _make_project, _subject_image

TINY_CONFIG = {
    "data": {"spacing": 2.0, "padding_mm": 5.0},
    "model": {"channels": 2, "levels": 2, "head_hidden": 8, "global_hidden": 8},
    "schedule": {"epochs_per_stage": 0, "final_epochs": 2},
    "optim": {"batch_size": 4},
    "run": {"device": "cpu", "num_threads": 1, "seed": 0},
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_consistent_project(folder):
    """The synthetic project with world files = procrustes @ alignment @ local exactly,
    and the template (groom reference) on row 1, whose groomed file is a mesh."""
    path, truths = _make_project(folder)
    project = Project.load(path)
    for subject in project.subjects:
        local = read_particles(subject.local_particles[0])
        write_particles(subject.world_particles[0],
                        apply_transform(local, subject.world_transform(0)))
    project.set_parameters("groom", {"1": {"alignment_reference_chosen": "1"}})
    project.save(overwrite=True)
    return path, truths


def train_tiny(project_path, run_dir) -> None:
    """A 2-epoch model through the train command."""
    config_path = run_dir.parent / "tiny_config.json"
    config_path.write_text(json.dumps(TINY_CONFIG))
    assert main(["train", str(project_path), "--config", str(config_path), "--out",
                 str(run_dir), "--no-progress"]) == 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict_project")
    path, truths = make_consistent_project(folder)
    run_dir = folder / "run"
    train_tiny(path, run_dir)
    return folder, path, truths, run_dir


@pytest.fixture(scope="module")
def new_image(trained, tmp_path_factory):
    """An image that is not in the project, with its true image-to-world transform."""
    folder = tmp_path_factory.mktemp("new_image")
    rotation = Rotation.from_rotvec([0.05, -0.08, 0.1]).as_matrix()
    image_to_world = np.eye(4)
    image_to_world[:3, :3] = rotation
    image_to_world[:3, 3] = -(rotation @ np.array([19.0, 15.0, 13.0]))
    image = _subject_image(np.linalg.inv(image_to_world), direction=np.eye(3),
                           origin=[0.0, 0.0, 0.0], spacing=(1.0, 1.0, 1.0), size=(40, 32, 28),
                           gain=3.0)
    path = folder / "new_case.nii.gz"
    sitk.WriteImage(image, str(path))
    return path, image_to_world


@pytest.fixture(scope="module")
def predicted(trained, new_image):
    folder, path, _, run_dir = trained
    before = path.read_bytes()
    status = main(["predict", str(path), "--model", str(run_dir), "--subjects", "test", "val",
                   "--images", str(new_image[0]), "--no-progress"])
    return status, before


def _manifest(run_dir):
    return json.loads((run_dir / "predictions" / "predictions.json").read_text())


def test_predict_writes_every_file_of_the_layout(trained, predicted):
    _, _, _, run_dir = trained
    status, _ = predicted
    assert status == 0
    manifest = _manifest(run_dir)
    assert manifest["scale_sizes"] == [8, 16, 32, 64]
    order = np.asarray(manifest["particle_order"])
    assert sorted(order.tolist()) == list(range(N_PARTICLES))
    assert list(manifest["subjects"]) == ["ell_5", "ell_4", "new_case"]
    assert [e["row_index"] for e in manifest["subjects"].values()] == [5, 4, None]
    for name, entry in manifest["subjects"].items():
        folder = run_dir / "predictions" / name
        world = read_particles(folder / "world.particles")
        assert world.shape == (N_PARTICLES, 3)
        for size in manifest["scale_sizes"]:
            scale = read_particles(folder / f"scale{size}_world.particles")
            assert scale.shape == (size, 3)
        # the finest scale in model order is world.particles in project order
        finest = read_particles(folder / "scale64_world.particles")
        np.testing.assert_allclose(world[order], finest, atol=1e-5)
        assert (folder / "segmentation.nrrd").is_file()
        assert entry["seconds"] >= entry["registration_seconds"] > 0
        assert entry["registration"]["converged"]


def test_local_particles_map_to_world_through_the_predicted_project(trained, predicted):
    _, path, _, run_dir = trained
    predicted_path = path.with_name("tiny_predicted.swproj")
    project = Project.load(predicted_path)
    rows = [s for s in project.subjects if s.groups.get("source") == "predicted"]
    assert [s.extra["predicted_from"] for s in rows] == ["ell_5", "ell_4", "new_case"]
    for subject in rows:
        local = read_particles(subject.local_particles[0])
        world = read_particles(subject.world_particles[0])
        mapped = apply_transform(local, subject.world_transform(0))
        np.testing.assert_allclose(mapped, world, atol=1e-3)
        folder = run_dir / "predictions" / subject.extra["predicted_from"]
        np.testing.assert_allclose(world, read_particles(folder / "world.particles"),
                                   atol=1e-5)
        np.testing.assert_allclose(local, read_particles(folder / "local.particles"),
                                   atol=1e-5)
        assert subject.excluded


def test_local_particles_lie_in_the_subjects_own_image_frame(trained, predicted, new_image):
    _, path, _, run_dir = trained
    project = Project.load(path)
    # project subjects: their true local particles are in their image frame
    for name in ("ell_4", "ell_5"):
        truth = read_particles(project.subjects[project.subject_index(name)].local_particles[0])
        local = read_particles(run_dir / "predictions" / name / "local.particles")
        assert np.linalg.norm(local - truth, axis=1).mean() < 1.5, name
    # the new image: known transform, ellipsoid particles in project order
    image_path, image_to_world = new_image
    truth = apply_transform(_ellipsoid_points(N_PARTICLES, AXES), image_to_world, inverse=True)
    local = read_particles(run_dir / "predictions" / "new_case" / "local.particles")
    assert np.linalg.norm(local - truth, axis=1).mean() < 1.5


def test_original_project_is_byte_identical_and_predicted_project_validates(trained,
                                                                            predicted):
    _, path, _, _ = trained
    _, before = predicted
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(before).digest()
    original = Project.load(path)
    assert validate_project(original).ok
    predicted_project = Project.load(path.with_name("tiny_predicted.swproj"))
    report = validate_project(predicted_project)
    assert report.ok, [str(p) for p in report.problems]
    assert len(predicted_project.subjects) == len(original.subjects) + 3
    assert main(["info", str(path.with_name("tiny_predicted.swproj"))]) == 0
    # original rows unchanged, string for string
    written = json.loads(path.with_name("tiny_predicted.swproj").read_text())["data"]
    assert written[:6] == json.loads(before)["data"]


def test_segmentation_goes_back_to_the_subjects_image_grid(trained, predicted, tmp_path):
    folder, path, _, run_dir = trained
    # the predicted label map has the geometry of the subject's image
    image = sitk.ReadImage(str(folder / "ell_4.nrrd"))
    labels = sitk.ReadImage(str(run_dir / "predictions" / "ell_4" / "segmentation.nrrd"))
    assert labels.GetSize() == image.GetSize()
    np.testing.assert_allclose(labels.GetOrigin(), image.GetOrigin())
    np.testing.assert_allclose(labels.GetDirection(), image.GetDirection())
    assert labels.GetPixelID() == sitk.sitkUInt8
    # the true grid mask taken back through the registration matches the subject's own
    data = prepare_dataset(path, folder / "progressive_runs" / "cache", spacing=2.0,
                           padding_mm=5.0, progress=False)
    val = data.split("val")
    entry = _manifest(run_dir)["subjects"]["ell_4"]
    image_to_world = np.asarray(entry["image_to_world"]).reshape(4, 4)
    out = write_segmentation(val.segmentations[0].astype(np.float32), data.grid,
                             folder / "ell_4.nrrd", image_to_world, tmp_path / "back.nrrd")
    assert segmentation_dice(out, folder / "ell_4_seg.nrrd") > 0.8
    # a wrong direction of the transform lands elsewhere
    wrong = write_segmentation(val.segmentations[0].astype(np.float32), data.grid,
                               folder / "ell_4.nrrd", np.linalg.inv(image_to_world),
                               tmp_path / "wrong.nrrd")
    assert segmentation_dice(wrong, folder / "ell_4_seg.nrrd") < 0.5


def test_unknown_subject_and_missing_image_are_reported_together(trained, capsys):
    _, path, _, run_dir = trained
    with pytest.raises(ProjectValidationError) as caught:
        select_targets(Project.load(path), ["ell_0", "nosuch"],
                       [path.parent / "missing.nrrd"])
    message = str(caught.value)
    assert "'nosuch'" in message and "missing.nrrd" in message
    assert len(caught.value.problems) == 2
    status = main(["predict", str(path), "--model", str(run_dir), "--subjects", "nosuch",
                   "--out", str(run_dir / "not_written"), "--no-progress"])
    assert status == 2
    assert "no subject named 'nosuch'" in capsys.readouterr().err
    assert not (run_dir / "not_written").exists()


def test_particle_count_mismatch_names_both_counts(trained, tmp_path):
    folder, path, _, run_dir = trained
    copy = tmp_path / "fewer"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("progressive_runs", "run"))
    project = Project.load(copy / path.name)
    for subject in project.subjects:
        for file in (subject.local_particles[0], subject.world_particles[0]):
            write_particles(file, read_particles(file)[:32])
    with pytest.raises(ParticleCountError) as caught:
        predict(project, run_dir, subjects=["test"], out_dir=tmp_path / "out", progress=False)
    message = str(caught.value)
    assert "64" in message and "32" in message and str(run_dir / "best.pt") in message
    assert not (tmp_path / "out").exists()


def test_images_only_predicts_without_the_project_rows(trained, new_image, tmp_path):
    _, path, _, run_dir = trained
    result = predict(path, run_dir, images=[new_image[0]], out_dir=tmp_path / "new",
                     write_project=False, progress=False)
    assert [p.name for p in result.predictions] == ["new_case"]
    assert result.predictions[0].row_index is None and result.project_path is None
    manifest = json.loads((tmp_path / "new" / "predictions.json").read_text())
    assert manifest["subjects"]["new_case"]["image"] == str(new_image[0])
    registered = np.asarray(manifest["subjects"]["new_case"]["image_to_world"]).reshape(4, 4)
    truth_world = _ellipsoid_points(N_PARTICLES, AXES)
    moved = apply_transform(apply_transform(truth_world, new_image[1], inverse=True),
                            registered)
    assert np.linalg.norm(moved - truth_world, axis=1).mean() < 1.0


def test_a_failed_registration_exits_non_zero_and_names_the_image(trained, tmp_path, capsys):
    # A 3-voxel scan cannot cover the reference anatomy: the registration fails.
    _, path, _, run_dir = trained
    noise = np.random.default_rng(0).normal(size=(3, 3, 3)).astype(np.float32)
    image = sitk.GetImageFromArray(noise)
    image.SetOrigin((500.0, 500.0, 500.0))
    blank = tmp_path / "blank_scan.nii.gz"
    sitk.WriteImage(image, str(blank))
    status = main(["predict", str(path), "--model", str(run_dir), "--images", str(blank),
                   "--out", str(tmp_path / "out"), "--no-project", "--no-progress"])
    assert status == 1
    err = capsys.readouterr().err
    assert "did not converge" in err and "blank_scan" in err
