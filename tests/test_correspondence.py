"""Tests of correspondence.py (the optimizer stand-in) and quality.py on analytic shapes."""

from __future__ import annotations

import numpy as np
import pytest

from shapeworks_progressive.correspondence import (
    correspond_shape,
    farthest_point_order,
    generalized_procrustes,
    relax_on_surface,
    rigid_fit,
    snap_to_surface,
    template_particles,
)
from shapeworks_progressive.meshes import mesh_to_arrays
from shapeworks_progressive.quality import (
    coincident_particles,
    pca_compactness,
    prefix_coverage,
    surface_distances,
)
from shapeworks_progressive.transforms import apply_transform


def _ellipsoid(radii=(12.0, 8.0, 6.0)) -> tuple[np.ndarray, np.ndarray]:
    from vtkmodules.vtkFiltersSources import vtkSphereSource

    sphere = vtkSphereSource()
    sphere.SetThetaResolution(60)
    sphere.SetPhiResolution(40)
    sphere.SetRadius(1.0)
    sphere.Update()
    vertices, faces = mesh_to_arrays(sphere.GetOutput())
    return vertices * np.asarray(radii), faces


def _random_rigid(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    matrix = np.eye(4)
    matrix[:3, :3] = q
    matrix[:3, 3] = rng.normal(scale=10.0, size=3)
    return matrix


def test_farthest_point_prefixes_are_nested_and_cover():
    vertices, faces = _ellipsoid()
    particles = template_particles(vertices, faces, 128)
    coverage = prefix_coverage(particles, vertices, [16, 32, 64, 128])
    # nested: every prefix of the 128 is the farthest-point order of its own size
    assert np.array_equal(farthest_point_order(vertices, 32),
                          farthest_point_order(vertices, 64)[:32])
    assert coverage[16] > coverage[32] > coverage[64] > coverage[128]
    # evenly spread: the surface area is about 1000 mm^2, so n points of spacing
    # sqrt(area / n) cover it within about that spacing
    for size, radius in coverage.items():
        assert radius < 1.5 * np.sqrt(1000.0 / size) + 0.5, (size, radius)


def test_rigid_fit_and_procrustes_recover_poses():
    rng = np.random.default_rng(3)
    shape = rng.normal(scale=5.0, size=(50, 3))
    poses = [_random_rigid(rng) for _ in range(4)]
    copies = np.stack([apply_transform(shape, p) for p in poses])
    np.testing.assert_allclose(rigid_fit(shape, copies[1]), poses[1], atol=1e-9)
    transforms, mean = generalized_procrustes(copies)
    world = np.stack([apply_transform(c, t) for c, t in zip(copies, transforms)])
    assert np.abs(world - world[0]).max() < 1e-8
    for t in transforms:
        np.testing.assert_allclose(np.linalg.det(t[:3, :3]), 1.0)


def test_correspond_shape_follows_a_known_deformation():
    vertices, faces = _ellipsoid()
    template = template_particles(vertices, faces, 256)
    stretch = np.diag([1.15, 0.9, 1.05])
    subject_to_scanner = _random_rigid(np.random.default_rng(5))
    # the subject: a stretched ellipsoid in its own (scanner) frame; alignment undoes the pose
    vertices_local = apply_transform(vertices @ stretch, subject_to_scanner)
    alignment = np.linalg.inv(subject_to_scanner)
    found = correspond_shape(template, vertices_local, faces, alignment, seed=0)
    particles_local = found["particles_local"]
    assert particles_local.shape == (256, 3)
    assert surface_distances(particles_local, vertices_local, faces).max() < 1e-6
    np.testing.assert_allclose(found["particles_aligned"],
                               apply_transform(particles_local, alignment), atol=1e-9)
    # correspondence: particle k lands near the stretched template particle k
    expected_aligned = snap_to_surface(template @ stretch, vertices @ stretch, faces)[0]
    errors = np.linalg.norm(found["particles_aligned"] - expected_aligned, axis=1)
    spacing = np.sqrt(1000.0 * 1.1 / 256)
    assert np.median(errors) < 0.5 * spacing, np.median(errors)
    assert coincident_particles(particles_local) == 0


def test_relax_keeps_particles_on_surface_and_spreads_them():
    vertices, faces = _ellipsoid()
    rng = np.random.default_rng(0)
    clumped = vertices[rng.choice(len(vertices), 200, replace=False)] * 0.98
    relaxed = relax_on_surface(clumped, vertices, faces, iterations=30)
    assert surface_distances(relaxed, vertices, faces).max() < 1e-6
    before = prefix_coverage(snap_to_surface(clumped, vertices, faces)[0], vertices, [200])
    after = prefix_coverage(relaxed, vertices, [200])
    assert after[200] < before[200]


@pytest.mark.parametrize("modes", [1, 3])
def test_pca_compactness_counts_modes(modes):
    rng = np.random.default_rng(1)
    base = rng.normal(size=(40, 3))
    directions = rng.normal(size=(modes, 40, 3))
    weights = rng.normal(size=(30, modes)) * 10.0
    shapes = base + np.einsum("sm,mnd->snd", weights, directions)
    result = pca_compactness(shapes, fraction=0.95)
    assert result["modes"] <= modes
    assert result["explained"][modes - 1] == pytest.approx(1.0)
