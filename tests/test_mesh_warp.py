"""Tests for mesh_warp on the real left-atrium template (groomed mesh + 128 particles)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shapeworks_progressive.errors import MeshWarpError
from shapeworks_progressive.mesh_warp import MeshWarper, clean_template, embed_particles
from shapeworks_progressive.meshes import read_mesh
from shapeworks_progressive.particles import read_particles

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LEFT_ATRIUM = SHARED / "data" / "shapeworks_examples" / "left_atrium"

needs_data = pytest.mark.skipif(not LEFT_ATRIUM.is_dir(), reason="shared data not available")


@pytest.fixture(scope="module")
def template():
    mesh = read_mesh(LEFT_ATRIUM / "groomed" / "LA_04_groomed.vtk")
    particles = read_particles(LEFT_ATRIUM / "particles" / "LA_04_groomed_local.particles")
    return mesh, particles


@pytest.fixture(scope="module")
def warper(template):
    return MeshWarper(*template)


@needs_data
def test_template_particles_warp_back_to_the_template(warper, template):
    _, particles = template
    assert warper.good.sum() == 128
    vertices = warper.warp(particles)
    assert np.abs(vertices - warper.vertices).max() < 1e-9
    # The weights interpolate: handle rows are unit vectors, and every row sums to 1.
    np.testing.assert_allclose(warper.weights[warper.handles], np.eye(128), atol=1e-8)
    np.testing.assert_allclose(warper.weights.sum(axis=1), 1.0, atol=1e-8)


@needs_data
def test_embedded_particles_are_vertices(warper, template):
    _, particles = template
    # Each good particle's handle vertex is its closest point on the surface (or a vertex
    # within 1% of a triangle of it); the mean gap is far below the 1 mm mesh spacing.
    gaps = np.linalg.norm(warper.vertices[warper.handles] - particles, axis=1)
    assert gaps.max() < 0.05
    assert np.median(gaps) < 1e-3


@needs_data
def test_shapeworks_method_interpolates_handles_and_moves_with_a_translation(template):
    mesh, particles = template
    warper = MeshWarper(mesh, particles, method="shapeworks")
    shift = np.array([5.0, -2.0, 1.0])
    vertices = warper.warp(particles + shift)
    np.testing.assert_allclose(vertices[warper.handles], particles + shift, atol=1e-8)
    displacement = MeshWarper(mesh, particles).warp(particles + shift)
    np.testing.assert_allclose(displacement - shift, MeshWarper(mesh, particles).vertices,
                               atol=1e-8)


@needs_data
def test_prefix_subset_builds_a_coarse_warper(template):
    mesh, particles = template
    coarse = MeshWarper(mesh, particles[:32])
    assert coarse.weights.shape[1] == 32
    assert np.isfinite(coarse.warp(particles[:32] * 1.1)).all()
    with pytest.raises(MeshWarpError, match=r"shape \(128, 3\)"):
        coarse.warp(particles)


@needs_data
def test_duplicate_particles_are_dropped_without_nan(template):
    mesh, particles = template
    doubled = particles.copy()
    doubled[5] = doubled[7]
    warper = MeshWarper(mesh, doubled)
    assert not warper.good[5] and not warper.good[7]
    assert warper.good.sum() == 126
    target = doubled * 1.05
    vertices = warper.warp(target)
    assert np.isfinite(vertices).all()
    good = np.flatnonzero(warper.good)
    np.testing.assert_allclose(vertices[warper.handles] - warper.vertices[warper.handles],
                               target[good] - doubled[good], atol=1e-8)


def test_degenerate_triangles_and_duplicate_points_give_no_nan():
    from vtkmodules.vtkFiltersSources import vtkSphereSource

    from shapeworks_progressive.meshes import mesh_to_arrays

    sphere = vtkSphereSource()
    sphere.SetRadius(10.0)
    sphere.SetThetaResolution(24)
    sphere.SetPhiResolution(24)
    sphere.Update()
    vertices, faces = mesh_to_arrays(sphere.GetOutput())
    n = len(vertices)
    # A zero-area triangle (three collinear points on an existing edge), a triangle with a
    # repeated vertex, a duplicated vertex, and a far-away floating triangle.
    a, b = faces[0, 0], faces[0, 1]
    midpoint = 0.5 * (vertices[a] + vertices[b])
    extra = np.array([midpoint, vertices[a], [50, 0, 0], [51, 0, 0], [50, 1, 0]])
    vertices = np.vstack([vertices, extra])
    faces = np.vstack([faces, [[a, b, n], [a, a, b], [n + 1, faces[1, 1], faces[1, 2]],
                               [n + 2, n + 3, n + 4]]])
    cleaned_vertices, cleaned_faces = clean_template((vertices, faces))
    assert cleaned_vertices[:, 0].max() < 11  # the floating triangle is gone
    rng = np.random.default_rng(0)
    particles = rng.normal(size=(40, 3))
    particles = 10.0 * particles / np.linalg.norm(particles, axis=1, keepdims=True)
    particles[3] = particles[4]  # a duplicate particle too
    warper = MeshWarper((vertices, faces), particles)
    warped = warper.warp(particles * 1.5)
    assert np.isfinite(warped).all()
    radii = np.linalg.norm(warped, axis=1)
    assert 14.0 < np.median(radii) < 16.0


def test_embedding_splits_triangles_and_edges():
    vertices = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    faces = np.array([[0, 1, 2], [1, 3, 2]])
    # One point inside triangle 0, one on the shared edge (1, 2).
    points = np.array([[0.2, 0.2, 0.0], [0.5, 0.5, 0.0]])
    new_vertices, new_faces = embed_particles(vertices, faces, points)
    assert len(new_vertices) == 6
    np.testing.assert_allclose(new_vertices[4:], points, atol=1e-12)
    # Area is kept, and every triangle keeps the +z orientation.
    a, b, c = (new_vertices[new_faces[:, k]] for k in range(3))
    normals_z = np.cross(b - a, c - a)[:, 2]
    assert (normals_z > 0).all()
    assert 0.5 * normals_z.sum() == pytest.approx(1.0)
    assert len(new_faces) == 2 + 2 + 2  # 1->3 split after the edge split, one pass each


def test_all_particles_on_one_point_is_a_clear_error():
    vertices = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    faces = np.array([[0, 1, 2], [1, 3, 2]])
    with pytest.raises(MeshWarpError, match="vertex of its own"):
        MeshWarper((vertices, faces), np.full((3, 3), 0.3))


def test_project_template_from_a_distance_transform(ellipsoid_project):
    from shapeworks_progressive.project import Project

    project = Project.load(ellipsoid_project)
    warper = MeshWarper.from_project(project, frame="local")
    # The local particles lie on the DT's zero iso-surface (ITK physical frame).
    gaps = np.linalg.norm(warper.vertices[warper.handles]
                          - warper.template_particles[warper.good], axis=1)
    assert warper.good.all() and gaps.max() < 0.05
    world = MeshWarper.from_project(project, rows=np.arange(64))
    target = read_particles(project.subjects[2].world_particles[0])[:64]
    vertices = world.warp(target)
    np.testing.assert_allclose(vertices[world.handles] - world.vertices[world.handles],
                               target - world.template_particles, atol=1e-8)
