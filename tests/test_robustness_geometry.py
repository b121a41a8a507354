"""Robustness, image geometry: any direction, spacing, size and origin lands in one frame.

A tiny model is trained on the synthetic ellipsoid project of ``test_dataset`` (images with
flipped directions, other origins, one anisotropic image). New images of the same anatomy,
written with an oblique direction and anisotropic voxels, are then predicted together with
the same images resampled to an identity direction. Everything downstream of reading
(registration, network input, particles) must agree within stated tolerances:

- network input (normalized units, std 1): mean absolute difference below 0.05
  (the identity copy is a linear resampling: interpolation error only);
- registration: the template placed by the two transforms within 0.1 mm (mean), and
  within 1 mm of the true transform the image was written with;
- predicted world particles: within 0.05 mm (mean) and 0.2 mm (max).
An exact copy (flipped direction -> identity, voxel centres kept) must agree to 1e-4 mm.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy.spatial.transform import Rotation

from shapeworks_progressive.checkpoints import load_model
from shapeworks_progressive.dataset import (prepare_prediction_image,
                                            registration_particle_error)
from shapeworks_progressive.images import physical_corners
from shapeworks_progressive.predict import predict
from shapeworks_progressive.project import Project

from test_dataset import _subject_image
from test_predict import make_consistent_project, train_tiny

INPUT_TOLERANCE = 0.05       # normalized intensity units (mean absolute difference)
FRAME_TOLERANCE_MM = 0.1     # template under the two registrations (mean distance)
TRUTH_TOLERANCE_MM = 1.0     # template under registration vs the true transform
PARTICLE_TOLERANCE_MM = (0.05, 0.2)  # predicted particles: mean, max distance


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _identity_copy(image, spacing=1.0, interpolator=sitk.sitkLinear):
    """The image resampled onto an identity-direction grid covering its corners."""
    corners = physical_corners(image)
    low, high = corners.min(axis=0), corners.max(axis=0)
    size = [int(np.ceil((h - lo) / spacing)) + 1 for lo, h in zip(low, high)]
    background = float(sitk.GetArrayViewFromImage(image).min())
    return sitk.Resample(image, size, sitk.Transform(), interpolator, low.tolist(),
                         [spacing] * 3, np.eye(3).ravel().tolist(), background,
                         sitk.sitkFloat32)


@pytest.fixture(scope="module")
def geometry(tmp_path_factory):
    folder = tmp_path_factory.mktemp("geometry")
    path, _ = make_consistent_project(folder)
    run_dir = folder / "run"
    train_tiny(path, run_dir)

    # an oblique, anisotropic image of the anatomy (true image -> world transform known)
    rotation = Rotation.from_rotvec([0.05, -0.08, 0.1]).as_matrix()
    image_to_world = np.eye(4)
    image_to_world[:3, :3] = rotation
    image_to_world[:3, 3] = -(rotation @ np.array([19.0, 15.0, 13.0]))
    direction = Rotation.from_rotvec([0.3, -0.4, 0.5]).as_matrix()
    spacing, size = np.array([0.8, 1.0, 1.6]), np.array([50, 40, 22])
    origin = np.array([19.0, 15.0, 13.0]) - direction @ ((size - 1) * spacing / 2)
    oblique = _subject_image(np.linalg.inv(image_to_world), direction=direction,
                             origin=origin, spacing=tuple(spacing),
                             size=tuple(int(v) for v in size), gain=2.0)
    sitk.WriteImage(oblique, str(folder / "oblique.nrrd"))
    sitk.WriteImage(_identity_copy(oblique), str(folder / "oblique_identity.nrrd"))

    # exact copy of a flipped-direction subject image: same voxel centres, identity direction
    flipped = sitk.ReadImage(str(folder / "ell_5.nrrd"))
    assert flipped.GetDirection() != tuple(np.eye(3).ravel())
    exact = _identity_copy(flipped, spacing=1.0, interpolator=sitk.sitkNearestNeighbor)
    sitk.WriteImage(exact, str(folder / "ell_5_identity.nrrd"))

    names = ["oblique", "oblique_identity", "ell_5", "ell_5_identity"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = predict(Project.load(path), run_dir,
                         images=[folder / f"{name}.nrrd" for name in names], device="cpu",
                         progress=False, write_project=False, out_dir=folder / "predictions")
    particles = {p.name: p.particles_world for p in result.predictions}
    transforms = {p.name: p.image_to_world for p in result.predictions}
    return folder, run_dir, image_to_world, particles, transforms


def test_oblique_anisotropic_input_matches_its_identity_resampling(geometry):
    folder, run_dir, _, _, _ = geometry
    _, meta = load_model(run_dir / "best.pt")
    info = meta["prediction"]
    arrays = {}
    for name in ("oblique", "oblique_identity"):
        arrays[name], result = prepare_prediction_image(
            folder / f"{name}.nrrd", info["reference"], info["grid"], info["normalization"])
        assert result.converged, result.message
    difference = np.abs(arrays["oblique"] - arrays["oblique_identity"])
    assert arrays["oblique"].std() > 0.5  # real content, not a blank resampling
    assert difference.mean() < INPUT_TOLERANCE


def test_oblique_image_registers_to_the_true_world_frame(geometry):
    _, run_dir, true_image_to_world, _, transforms = geometry
    _, meta = load_model(run_dir / "best.pt")
    template = meta["prediction"]["template_world"]
    between = registration_particle_error(template, transforms["oblique"],
                                          transforms["oblique_identity"])
    assert between < FRAME_TOLERANCE_MM
    for name in ("oblique", "oblique_identity"):
        assert registration_particle_error(template, true_image_to_world,
                                           transforms[name]) < TRUTH_TOLERANCE_MM


def test_predicted_particles_agree_within_the_tolerance(geometry):
    _, _, _, particles, _ = geometry
    distance = np.linalg.norm(particles["oblique"] - particles["oblique_identity"], axis=1)
    assert distance.mean() < PARTICLE_TOLERANCE_MM[0]
    assert distance.max() < PARTICLE_TOLERANCE_MM[1]
    exact = np.linalg.norm(particles["ell_5"] - particles["ell_5_identity"], axis=1)
    assert exact.max() < 1e-4
