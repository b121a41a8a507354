"""Tests for surface_distance: point-to-cell distances and Dice."""

from __future__ import annotations

import numpy as np
import pytest

from shapeworks_progressive.meshes import arrays_to_mesh, mesh_to_arrays
from shapeworks_progressive.surface_distance import (dice, point_to_cell_distance,
                                                     surface_distances)


def _ellipsoid(radii=(20.0, 15.0, 10.0), resolution=160):
    """A finely tessellated ellipsoid (mm) and its unit vertex normals."""
    from vtkmodules.vtkFiltersCore import vtkPolyDataNormals
    from vtkmodules.vtkFiltersSources import vtkSphereSource
    from vtkmodules.util.numpy_support import vtk_to_numpy

    sphere = vtkSphereSource()
    sphere.SetRadius(1.0)
    sphere.SetThetaResolution(resolution)
    sphere.SetPhiResolution(resolution)
    sphere.Update()
    unit, faces = mesh_to_arrays(sphere.GetOutput())
    vertices = unit * np.asarray(radii)
    normals = vtkPolyDataNormals()
    normals.SetInputData(arrays_to_mesh(vertices, faces))
    normals.SplittingOff()
    normals.ComputePointNormalsOn()
    normals.Update()
    vertex_normals = vtk_to_numpy(normals.GetOutput().GetPointData().GetNormals())
    return vertices, faces, vertex_normals.astype(float)


def test_offset_by_one_mm_along_normals_is_one_mm_both_ways():
    vertices, faces, normals = _ellipsoid()
    moved = vertices + 1.0 * normals
    result = surface_distances(arrays_to_mesh(moved, faces), arrays_to_mesh(vertices, faces))
    assert result.mean_a_to_b == pytest.approx(1.0, abs=0.05)
    assert result.mean_b_to_a == pytest.approx(1.0, abs=0.05)
    assert result.symmetric_mean == pytest.approx(1.0, abs=0.05)
    assert result.hausdorff == pytest.approx(1.0, abs=0.05)
    assert result.p95 == pytest.approx(1.0, abs=0.05)


def test_identical_surfaces_are_zero_apart_and_one_sided_distance_is_exact():
    vertices = np.array([[0.0, 0, 0], [10, 0, 0], [0, 10, 0]])
    faces = np.array([[0, 1, 2]])
    mesh = arrays_to_mesh(vertices, faces)
    assert surface_distances(mesh, mesh).hausdorff == pytest.approx(0.0, abs=1e-9)
    # Above the triangle interior: the height; beyond a corner: distance to that corner.
    points = np.array([[2.0, 2.0, 3.0], [-3.0, -4.0, 0.0]])
    np.testing.assert_allclose(point_to_cell_distance(points, mesh), [3.0, 5.0], atol=1e-9)


def test_hausdorff_and_percentile_see_one_far_vertex():
    vertices = np.array([[0.0, 0, 0], [10, 0, 0], [0, 10, 0]])
    faces = np.array([[0, 1, 2]])
    lifted = vertices.copy()
    lifted[2, 2] = 4.0
    result = surface_distances(arrays_to_mesh(lifted, faces), arrays_to_mesh(vertices, faces))
    np.testing.assert_allclose(result.a_to_b, [0.0, 0.0, 4.0], atol=1e-9)
    assert result.hausdorff == pytest.approx(4.0)
    assert result.mean_a_to_b == pytest.approx(4.0 / 3.0)


def test_dice_of_half_overlapping_boxes():
    a = np.zeros((10, 10, 10), dtype=np.uint8)
    b = np.zeros_like(a)
    a[:4] = 1
    b[2:6] = 1
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    assert dice(np.zeros(3), np.zeros(3)) == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        dice(a, b[:5])
