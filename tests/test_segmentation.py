"""Tests of segmentation.py: largest component and meshes in the image's physical frame."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from shapeworks_progressive.errors import ImageError
from shapeworks_progressive.meshes import mesh_to_arrays, read_mesh
from shapeworks_progressive.segmentation import (
    extract_shape,
    index_to_world_matrix,
    largest_component,
    segmentation_to_mesh,
)

DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
ORIGIN = (10.0, -20.0, 30.0)
SPACING = (1.0, 1.0, 1.5)
CENTRE_INDEX = np.array([15.0, 14.0, 10.0])  # (X, Y, Z) voxel index of the ball's centre
RADIUS_MM = 8.0


def _ball_labels() -> sitk.Image:
    """Label image (X=32, Y=30, Z=22): a ball of labels 1/2 plus a 2-voxel blob."""
    shape_zyx = (22, 30, 32)
    z, y, x = np.indices(shape_zyx)
    offsets_mm = np.stack([(x - CENTRE_INDEX[0]) * SPACING[0], (y - CENTRE_INDEX[1]) * SPACING[1],
                           (z - CENTRE_INDEX[2]) * SPACING[2]])
    ball = (offsets_mm ** 2).sum(axis=0) <= RADIUS_MM ** 2
    labels = np.zeros(shape_zyx, dtype=np.uint8)
    labels[ball] = 1
    labels[ball & (x > CENTRE_INDEX[0])] = 2  # two labels, one shape
    labels[1, 1, 1:3] = 1  # a separate small component
    image = sitk.GetImageFromArray(labels)
    image.SetOrigin(ORIGIN)
    image.SetSpacing(SPACING)
    image.SetDirection(DIRECTION)
    return image, int(ball.sum())


def _centre_world() -> np.ndarray:
    image, _ = _ball_labels()
    return np.array(image.TransformContinuousIndexToPhysicalPoint(CENTRE_INDEX.tolist()))


def test_index_to_world_matches_simpleitk():
    image, _ = _ball_labels()
    matrix = index_to_world_matrix(image)
    index = np.array([3.0, 7.5, 2.0])
    expected = image.TransformContinuousIndexToPhysicalPoint(index.tolist())
    np.testing.assert_allclose(matrix[:3, :3] @ index + matrix[:3, 3], expected, atol=1e-12)


def test_largest_component_keeps_ball_only():
    image, ball_voxels = _ball_labels()
    mask = largest_component(image)
    assert int(sitk.GetArrayFromImage(mask).sum()) == ball_voxels
    assert mask.GetDirection() == DIRECTION
    assert mask.GetOrigin() == ORIGIN


def test_largest_component_empty_raises():
    image = sitk.Image(5, 5, 5, sitk.sitkUInt8)
    with pytest.raises(ImageError, match="case7"):
        largest_component(image, name="case7")


def test_mesh_is_in_physical_frame_with_flipped_direction():
    image, _ = _ball_labels()
    mesh = segmentation_to_mesh(largest_component(image), smoothing_iterations=15)
    vertices, _ = mesh_to_arrays(mesh)
    radii = np.linalg.norm(vertices - _centre_world(), axis=1)
    # a voxelised ball of radius 8 mm: the surface lies within about half a voxel of it
    assert abs(radii.mean() - RADIUS_MM) < 0.5
    assert radii.max() - radii.min() < 2.5
    np.testing.assert_allclose(vertices.mean(axis=0), _centre_world(), atol=0.3)


def test_extract_shape_writes_mask_and_mesh(tmp_path):
    image, ball_voxels = _ball_labels()
    label_path = tmp_path / "labels.nii.gz"
    sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32), str(label_path))
    stats = extract_shape(label_path, tmp_path / "seg.nii.gz", tmp_path / "mesh.vtk",
                          name="ball", smoothing_iterations=0)
    assert stats["voxels"] == ball_voxels
    ball_volume = ball_voxels * np.prod(SPACING)
    assert abs(stats["volume_mm3"] - ball_volume) / ball_volume < 0.05
    written = sitk.ReadImage(str(tmp_path / "seg.nii.gz"))
    assert int(sitk.GetArrayFromImage(written).sum()) == ball_voxels
    np.testing.assert_allclose(written.GetDirection(), DIRECTION)
    vertices, faces = mesh_to_arrays(read_mesh(tmp_path / "mesh.vtk"))
    assert len(faces) == stats["faces"]
    np.testing.assert_allclose(vertices.mean(axis=0), _centre_world(), atol=0.3)


def test_extract_shape_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        extract_shape(tmp_path / "nope.nii.gz", tmp_path / "s.nii.gz", tmp_path / "m.vtk")
