"""Registration to the reference recovers a known rigid transform (1 mm, 2 degrees)."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter
from scipy.spatial.transform import Rotation

from shapeworks_progressive.grid import Grid
from shapeworks_progressive.images import (array_to_image, physical_corners, read_image,
                                           resample_to_grid)
from shapeworks_progressive.registration import STAGES, register_to_reference
from shapeworks_progressive.transforms import apply_transform

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
HIPPOCAMPUS = SHARED / "data" / "hippocampus_msd" / "imagesTr" / "hippocampus_001.nii.gz"


def _ellipsoid_image():
    """Synthetic MRI-like image: bright tri-axial ellipsoid plus an off-centre blob."""
    size, origin = (44, 38, 34), (-21.5, -18.5, -16.5)
    image = sitk.Image(list(size), sitk.sitkFloat32)
    image.SetOrigin(origin)
    index = np.stack(np.meshgrid(*[np.arange(s) for s in size], indexing="ij"), -1)
    p = np.asarray(origin) + index
    radius = np.sqrt(np.sum((p / [13.0, 9.0, 6.0]) ** 2, -1))
    values = 30 + 100 / (1 + np.exp((radius - 1) * 10))
    values += 80 * np.exp(-np.sum((p - [6.0, 4.0, 1.0]) ** 2, -1) / 6.0)
    # smooth tissue-like texture, as real MRI has (a flat phantom gives MI no grip)
    noise = np.random.default_rng(7).normal(size=size)
    values += 40 * gaussian_filter(noise, 2.0) / gaussian_filter(noise, 2.0).std()
    out = sitk.GetImageFromArray(values.transpose(2, 1, 0).astype(np.float32))
    out.CopyInformation(image)
    return out


def _reference_and_moved(image, rotation_deg, translation_mm, scale=1.0):
    """World-frame reference (+ mask) and the image moved by a known image_to_world."""
    corners = physical_corners(image)
    grid = Grid.around_points(corners, spacing=1.0, padding_mm=8.0)
    reference = array_to_image(resample_to_grid(image, np.eye(4), grid), grid)
    ones = sitk.Image(image.GetSize(), sitk.sitkFloat32) + 1.0
    ones.CopyInformation(image)
    mask = sitk.Cast(array_to_image(resample_to_grid(ones, np.eye(4), grid, "nearest",
                                                     default_value=0.0), grid) > 0.5,
                     sitk.sitkUInt8)
    # truth: image_to_world T; the moved image holds I(T p) at its physical point p,
    # on a hippocampus-like grid (direction diag(-1, -1, 1), its own origin)
    centre = corners.mean(axis=0)
    truth = np.eye(4)
    truth[:3, :3] = scale * Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix()
    truth[:3, 3] = centre - truth[:3, :3] @ (centre + 25.0) + translation_mm
    moved_corners = apply_transform(corners, truth, inverse=True)
    span = np.ptp(moved_corners, axis=0)
    moved = sitk.Image([int(s) for s in np.ceil(span) + 1], sitk.sitkFloat32)
    moved.SetDirection([-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0])
    low, high = moved_corners.min(0), moved_corners.max(0)
    moved.SetOrigin([float(high[0]), float(high[1]), float(low[2])])
    background = float(np.median(sitk.GetArrayViewFromImage(image)))
    moved = sitk.Resample(image, moved, _affine(truth), sitk.sitkLinear, background)
    return reference, mask, moved, truth


def _affine(matrix):
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(matrix[:3, :3].ravel().tolist())
    transform.SetTranslation(matrix[:3, 3].tolist())
    return transform


def _errors(result, truth, points_world):
    """Max point distance (mm) and rotation angle (deg) between estimate and truth."""
    points_image = apply_transform(points_world, truth, inverse=True)
    distance = np.linalg.norm(apply_transform(points_image, result.image_to_world)
                              - points_world, axis=1).max()
    rotation = result.image_to_world[:3, :3]
    rotation = rotation / np.cbrt(np.linalg.det(rotation))
    relative = rotation @ (truth[:3, :3] / np.cbrt(np.linalg.det(truth[:3, :3]))).T
    angle = np.degrees(np.arccos(np.clip((np.trace(relative) - 1) / 2, -1, 1)))
    return distance, angle


@pytest.mark.parametrize("stages", [("translation", "rigid"), STAGES])
def test_recovers_known_rigid_transform_of_synthetic_image(stages):
    image = _ellipsoid_image()
    reference, mask, moved, truth = _reference_and_moved(image, (8, -6, 10), (3.0, -4.0, 2.0))
    result = register_to_reference(moved, reference, reference_mask=mask, stages=stages)
    assert result.converged, result.message
    distance, angle = _errors(result, truth, physical_corners(image) * 0.6)
    assert distance < 1.0 and angle < 2.0, (distance, angle)
    assert list(result.stage_metrics) == list(stages)


@pytest.mark.skipif(not HIPPOCAMPUS.is_file(), reason="shared hippocampus data not present")
def test_recovers_known_rigid_transform_of_real_hippocampus_mri():
    image = read_image(HIPPOCAMPUS)
    reference, mask, moved, truth = _reference_and_moved(image, (-7, 5, 9), (2.5, 3.0, -3.5))
    result = register_to_reference(moved, reference, reference_mask=mask)
    assert result.converged, result.message
    corners = physical_corners(image)
    centre = corners.mean(axis=0)
    distance, angle = _errors(result, truth, centre + 0.5 * (corners - centre))
    assert distance < 1.0 and angle < 2.0, (distance, angle)


def test_same_seed_same_result_and_json():
    import json

    image = _ellipsoid_image()
    reference, mask, moved, _ = _reference_and_moved(image, (5, 0, 0), (1.0, 0.0, 0.0))
    a = register_to_reference(moved, reference, reference_mask=mask, seed=3)
    b = register_to_reference(moved, reference, reference_mask=mask, seed=3)
    # equal up to multi-threaded summation order
    np.testing.assert_allclose(a.image_to_world, b.image_to_world, atol=1e-4)
    assert json.loads(json.dumps(a.to_dict()))["converged"] is True


def test_failure_is_a_value_not_an_exception():
    image = _ellipsoid_image()
    reference, mask, _, _ = _reference_and_moved(image, (0, 0, 0), (0.0, 0.0, 0.0))
    blank = sitk.Image([3, 3, 3], sitk.sitkFloat32)  # too small to overlap anything
    blank.SetOrigin([500.0, 500.0, 500.0])
    result = register_to_reference(blank, reference, reference_mask=mask)
    assert result.converged is False
    assert "failed" in result.message
    assert np.all(np.isfinite(result.image_to_world))


def test_unknown_stage_is_rejected():
    image = _ellipsoid_image()
    with pytest.raises(ValueError, match="affine"):
        register_to_reference(image, image, stages=("translation", "affine"))
