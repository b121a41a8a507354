"""Tests of shapeworks_progressive.pca on synthetic shapes with a known structure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shapeworks_progressive.errors import ShapeWorksInputError
from shapeworks_progressive.pca import ParticlePCA, fit_pca, num_modes_for_fraction


def _shapes_with_two_modes(num_shapes=30, num_particles=20, seed=0):
    """Shapes = mean + a*u + b*v with known orthonormal u, v and std(a)=3, std(b)=1 mm."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(num_particles, 3)) * 10.0
    u = rng.normal(size=num_particles * 3)
    u /= np.linalg.norm(u)
    v = rng.normal(size=num_particles * 3)
    v -= (v @ u) * u
    v /= np.linalg.norm(v)
    a = rng.normal(size=num_shapes) * 3.0
    b = rng.normal(size=num_shapes) * 1.0
    flat = mean.reshape(-1) + a[:, None] * u + b[:, None] * v
    return flat.reshape(num_shapes, num_particles, 3), u, v


def test_fit_recovers_the_generating_modes_and_variances():
    shapes, u, v = _shapes_with_two_modes()
    pca = fit_pca(shapes, variance_fraction=None)
    assert pca.num_modes == 2  # the exact rank of the centred data
    centred = (shapes - shapes.mean(0)).reshape(len(shapes), -1)
    expected = np.sort(np.linalg.eigvalsh(centred.T @ centred / (len(shapes) - 1)))[::-1][:2]
    np.testing.assert_allclose(pca.variances, expected, rtol=1e-10)
    # The first mode spans mostly u; the space of both modes is exactly span(u, v).
    assert abs(pca.modes[0] @ u) > 0.95
    projector = pca.modes.T @ pca.modes
    np.testing.assert_allclose(projector @ u, u, atol=1e-10)
    np.testing.assert_allclose(projector @ v, v, atol=1e-10)
    np.testing.assert_allclose(pca.modes @ pca.modes.T, np.eye(2), atol=1e-12)


def test_project_reconstruct_round_trip_and_whitening():
    shapes, _, _ = _shapes_with_two_modes()
    pca = fit_pca(shapes, variance_fraction=None)
    scores = pca.project(shapes)
    np.testing.assert_allclose(pca.reconstruct(scores), shapes, atol=1e-10)
    np.testing.assert_allclose(pca.reconstruct(np.zeros(2)), shapes.mean(0), atol=1e-12)
    whitened = pca.whiten(scores)
    np.testing.assert_allclose(whitened.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(whitened.std(0, ddof=1), 1.0, rtol=1e-10)
    np.testing.assert_allclose(pca.unwhiten(whitened), scores, atol=1e-10)


def test_number_of_modes_for_a_variance_fraction():
    variances = np.array([6.0, 3.0, 1.0])
    assert num_modes_for_fraction(variances, 0.5) == 1
    assert num_modes_for_fraction(variances, 0.6) == 1
    assert num_modes_for_fraction(variances, 0.61) == 2
    assert num_modes_for_fraction(variances, 0.9) == 2
    assert num_modes_for_fraction(variances, 1.0) == 3
    shapes, _, _ = _shapes_with_two_modes()
    pca = fit_pca(shapes, variance_fraction=0.5)
    assert pca.num_modes == 1
    assert pca.explained_fraction()[0] > 0.5
    with pytest.raises(ShapeWorksInputError, match="variance fraction"):
        num_modes_for_fraction(variances, 1.5)


def test_storage_round_trips_exactly(tmp_path):
    shapes, _, _ = _shapes_with_two_modes()
    pca = fit_pca(shapes, num_modes=2)
    path = tmp_path / "pca.npz"
    pca.save(path)
    loaded = ParticlePCA.load(path)
    np.testing.assert_array_equal(loaded.modes, pca.modes)
    np.testing.assert_array_equal(loaded.mean_world, pca.mean_world)
    from_json = ParticlePCA.from_dict(json.loads(pca.to_json()))
    np.testing.assert_array_equal(from_json.variances, pca.variances)
    assert from_json.num_shapes == 30


def test_truncate_and_rewhiten():
    shapes, _, _ = _shapes_with_two_modes()
    pca = fit_pca(shapes, variance_fraction=None)
    first = pca.truncate(1)
    assert first.num_modes == 1
    assert first.explained_fraction()[0] == pytest.approx(pca.explained_fraction()[0])
    scores = pca.project(shapes) * 2.0 + 5.0
    rewhitened = pca.with_whitening(scores)
    np.testing.assert_allclose(rewhitened.score_mean, scores.mean(0))
    np.testing.assert_allclose(rewhitened.score_std, 2.0 * pca.score_std, rtol=1e-10)


def test_bad_input_is_rejected_with_a_clear_message():
    with pytest.raises(ShapeWorksInputError, match="at least 2"):
        fit_pca(np.zeros((1, 4, 3)))
    with pytest.raises(ShapeWorksInputError, match="identical"):
        fit_pca(np.ones((3, 4, 3)))
    bad = np.random.default_rng(0).normal(size=(3, 4, 3))
    bad[1, 2, 0] = np.nan
    with pytest.raises(ShapeWorksInputError, match=r"\[1\]"):
        fit_pca(bad)
    shapes, _, _ = _shapes_with_two_modes()
    with pytest.raises(ShapeWorksInputError, match="non-zero modes"):
        fit_pca(shapes, num_modes=5)
