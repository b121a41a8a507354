"""Tests of grooming.py: centre of mass, medoid and rigid ICP on analytic surfaces."""

from __future__ import annotations

import numpy as np

from shapeworks_progressive.grooming import (
    alignment_transform,
    chamfer_distance,
    rigid_icp,
    select_medoid,
    surface_center_of_mass,
    translation_matrix,
)
from shapeworks_progressive.meshes import arrays_to_mesh, mesh_to_arrays
from shapeworks_progressive.transforms import apply_transform


def _ellipsoid(radii=(20.0, 10.0, 6.0)) -> tuple[np.ndarray, np.ndarray]:
    """Triangulated ellipsoid (mm) centred at the origin, no symmetry-free ambiguity aside."""
    from vtkmodules.vtkFiltersSources import vtkSphereSource

    sphere = vtkSphereSource()
    sphere.SetRadius(1.0)
    sphere.SetThetaResolution(48)
    sphere.SetPhiResolution(32)
    sphere.Update()
    vertices, faces = mesh_to_arrays(sphere.GetOutput())
    vertices = vertices * np.asarray(radii)
    # a bump at +x breaks the ellipsoid's mirror symmetry so the ICP answer is unique
    vertices[:, 0] += 3.0 * np.exp(-((vertices[:, 1] - 4.0) ** 2 + vertices[:, 2] ** 2) / 20.0)
    return vertices, faces


def _rotation(degrees_z: float, degrees_x: float) -> np.ndarray:
    a, b = np.radians(degrees_z), np.radians(degrees_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rz @ rx
    return matrix


def test_center_of_mass_of_translated_ellipsoid():
    vertices, faces = _ellipsoid()
    centre = surface_center_of_mass(vertices + [5.0, -3.0, 12.0], faces)
    centre_reference = surface_center_of_mass(vertices, faces)
    np.testing.assert_allclose(centre - centre_reference, [5.0, -3.0, 12.0], atol=1e-9)


def test_rigid_icp_recovers_known_rotation():
    vertices, faces = _ellipsoid()
    target = arrays_to_mesh(vertices, faces)
    moved = apply_transform(vertices, _rotation(12.0, -8.0))
    icp = rigid_icp(moved, target)
    np.testing.assert_allclose(icp[:3, :3], _rotation(12.0, -8.0)[:3, :3].T, atol=0.02)
    assert np.abs(apply_transform(moved, icp) - vertices).max() < 0.5


def test_alignment_transform_maps_subject_frame_onto_reference():
    vertices, faces = _ellipsoid()
    reference_aligned = arrays_to_mesh(vertices, faces)
    subject_to_scanner = translation_matrix([40.0, -25.0, 60.0]) @ _rotation(-10.0, 6.0)
    vertices_subject = apply_transform(vertices, subject_to_scanner)
    alignment = alignment_transform(vertices_subject, faces, reference_aligned)
    # alignment is rigid and undoes the subject's pose
    np.testing.assert_allclose(alignment[:3, :3] @ alignment[:3, :3].T, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(alignment @ subject_to_scanner, np.eye(4), atol=0.05)
    assert chamfer_distance(apply_transform(vertices_subject, alignment), vertices) < 0.05


def test_select_medoid_picks_middle_shape():
    vertices, _ = _ellipsoid()
    clouds = [vertices * s for s in (0.8, 1.0, 1.25, 0.9, 1.1)]
    index, distances = select_medoid(clouds)
    assert index == 1
    np.testing.assert_allclose(distances, distances.T)
    assert np.all(np.diag(distances) == 0)
