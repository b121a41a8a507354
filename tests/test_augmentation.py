"""Tests of PCA-space augmentation: samplers, TPS warp, seeding, caching, train-only guard."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from shapeworks_progressive.augmentation import (
    AugmentationSettings, augment_training_split, kde_bandwidth, nearest_shapes,
    sample_whitened_scores, warp_to_shape, with_augmented)
from shapeworks_progressive.dataset import SplitData
from shapeworks_progressive.errors import ShapeWorksInputError
from shapeworks_progressive.grid import Grid

GRID = Grid((-10.0, 5.0, 2.0), (1.0, 1.0, 1.5), (40, 36, 30))


def _world_points(grid):
    index = np.stack(np.meshgrid(*[np.arange(n) for n in grid.size], indexing="ij"), -1)
    return np.asarray(grid.origin) + index * np.asarray(grid.spacing)


def _centre(grid):
    return np.asarray(grid.origin) + (np.asarray(grid.size) - 1) * np.asarray(grid.spacing) / 2


def _blob(grid, centre_world, sigma_mm=1.5):
    distance2 = ((_world_points(grid) - centre_world) ** 2).sum(-1)
    return np.exp(-distance2 / (2 * sigma_mm ** 2)).astype(np.float32)


def _sphere_particles(centre, radius, count=200, seed=0):
    directions = np.random.default_rng(seed).normal(size=(count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return centre + directions * radius


def _train_split(num_subjects=8, split="train"):
    """Ellipsoid-like shapes (random axis scalings) with a blob image and a ball mask."""
    rng = np.random.default_rng(1)
    centre = _centre(GRID)
    base = _sphere_particles(np.zeros(3), 1.0, count=64, seed=2)
    particles, images, segs = [], [], []
    for _ in range(num_subjects):
        radii = np.array([8.0, 6.0, 5.0]) * (1 + 0.15 * rng.normal(size=3))
        shape = centre + base * radii
        particles.append(shape)
        images.append(_blob(GRID, centre + np.array([radii[0] * 0.5, 0, 0])))
        inside = (((_world_points(GRID) - centre) / radii) ** 2).sum(-1) <= 1.0
        segs.append(inside.astype(np.uint8))
    # As dataset.prepare_dataset builds them: validation and test subjects carry their
    # registration record, training subjects an empty one.
    record = {} if split == "train" else {"converged": True, "metric": -0.5}
    return SplitData(names=[f"s{i}" for i in range(num_subjects)],
                     subject_indices=list(range(num_subjects)), images=np.stack(images),
                     segmentations=np.stack(segs),
                     particles_world=np.stack(particles).astype(np.float32),
                     image_to_world=np.tile(np.eye(4), (num_subjects, 1, 1)),
                     registrations=[dict(record) for _ in range(num_subjects)])


def test_tps_warp_moves_a_known_landmark_within_one_voxel():
    centre = _centre(GRID)
    landmark = centre + np.array([4.0, -2.0, 1.5])
    image = _blob(GRID, landmark)
    source = _sphere_particles(centre, 9.0, count=300)
    # A smooth non-rigid map: affine plus a bend that grows with x.
    affine = np.array([[1.1, 0.05, 0.0], [0.0, 0.95, 0.05], [0.02, 0.0, 1.05]])

    def deform(points):
        moved = centre + (points - centre) @ affine.T + np.array([3.0, -2.5, 2.0])
        moved[:, 1] += 0.02 * (points[:, 0] - centre[0]) ** 2
        return moved

    target = deform(source)
    expected = deform(landmark[None])[0]
    warped, _ = warp_to_shape(image, GRID, source, target, field_stride=2)
    weights = warped.astype(np.float64) / warped.sum()
    found = (weights[..., None] * _world_points(GRID)).sum((0, 1, 2))
    assert np.linalg.norm(found - expected) < 1.0
    assert np.linalg.norm(landmark - expected) > 3.0  # the landmark did move


def test_samplers_shapes_seeding_and_kde_bandwidth():
    scores = np.random.default_rng(0).normal(size=(30, 4))
    for sampler in ("gaussian", "mixture", "kde"):
        first = sample_whitened_scores(scores, sampler, 5, seed=3)
        again = sample_whitened_scores(scores, sampler, 7, seed=3)
        assert first.shape == (5, 4)
        np.testing.assert_array_equal(first, again[:5])  # sample i independent of count
        assert not np.allclose(first, sample_whitened_scores(scores, sampler, 5, seed=4))
    # KDE noise is a bandwidth in whitened units: Silverman's rule, below 1.
    assert kde_bandwidth(30, 4) == pytest.approx((4 / (30 * 6)) ** (1 / 8))
    many = sample_whitened_scores(scores, "kde", 2000, seed=0)
    nearest = nearest_shapes(many, scores)
    residual = many - scores[nearest]
    assert 0.5 * kde_bandwidth(30, 4) < residual.std() < 1.2 * kde_bandwidth(30, 4)
    gaussian = sample_whitened_scores(scores, "gaussian", 4000, seed=0)
    np.testing.assert_allclose(np.cov(gaussian, rowvar=False),
                               np.cov(scores, rowvar=False), atol=0.15)


def test_augmentation_is_identical_for_one_and_two_workers_and_cached(tmp_path):
    train = _train_split()
    settings = AugmentationSettings(count=3, sampler="gaussian", seed=7, num_modes=3,
                                    max_landmarks=32)
    one = augment_training_split(train, GRID, tmp_path / "a", settings, workers=1)
    two = augment_training_split(train, GRID, tmp_path / "b", settings, workers=2)
    np.testing.assert_array_equal(one.images, two.images)
    np.testing.assert_array_equal(one.particles_world, two.particles_world)
    np.testing.assert_array_equal(one.segmentations, two.segmentations)
    assert one.names == ["augmented_00000", "augmented_00001", "augmented_00002"]

    # Shapes and PCA span.
    assert one.images.shape == (3, *GRID.size) and one.images.dtype == np.float32
    assert one.particles_world.shape == (3, 64, 3)
    assert one.segmentations.shape == (3, *GRID.size) and one.segmentations.dtype == np.uint8
    pca = one.pca
    assert pca.num_modes == 3
    recon = pca.reconstruct(pca.project(one.particles_world))
    np.testing.assert_allclose(recon, one.particles_world, atol=1e-3)
    # The base of each sample is its nearest training shape in whitened PCA space.
    train_scores = pca.whiten(pca.project(train.particles_world))
    np.testing.assert_array_equal(one.base_indices,
                                  nearest_shapes(one.scores_whitened, train_scores))
    assert one.base_names == [train.names[i] for i in one.base_indices]
    combined = with_augmented(train, one)
    assert len(combined) == 11 and combined.subject_indices[-3:] == [-1, -1, -1]
    np.testing.assert_array_equal(combined.images[8:], one.images)
    np.testing.assert_array_equal(combined.particles_world[:8], train.particles_world)

    # Second call reuses the cache: the manifest is not rewritten.
    folder = next((tmp_path / "a").iterdir())
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    again = augment_training_split(train, GRID, tmp_path / "a", settings, workers=1)
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.images, one.images)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["settings"]["seed"] == 7 and len(manifest["samples"]) == 3
    # Another seed is another cache entry.
    other = augment_training_split(train, GRID, tmp_path / "a", replace(settings, seed=8))
    assert len(list((tmp_path / "a").iterdir())) == 2
    assert not np.allclose(other.particles_world, one.particles_world)


def test_warped_segmentation_follows_the_generated_shape(tmp_path):
    train = _train_split()
    settings = AugmentationSettings(count=2, sampler="kde", seed=0, num_modes=3,
                                    max_landmarks=64, field_stride=1)
    augmented = augment_training_split(train, GRID, tmp_path, settings)
    for i in range(2):
        seg = augmented.segmentations[i]
        # Mean particle of the generated shape lies in the warped mask's bounding box
        # centre within a voxel or two (ellipsoid: centroid == particle mean).
        mask_centre = (_world_points(GRID)[seg > 0]).mean(0)
        np.testing.assert_allclose(mask_centre, augmented.particles_world[i].mean(0),
                                   atol=1.5)


@pytest.mark.parametrize("split", ["val", "test"])
def test_only_the_training_split_may_feed_augmentation(tmp_path, split):
    settings = AugmentationSettings(count=1)
    with pytest.raises(ShapeWorksInputError, match="training split only; subjects"):
        augment_training_split(_train_split(split=split), GRID, tmp_path, settings)
    assert not any(tmp_path.iterdir())
    # A split that names itself is checked by its name.
    named = _train_split()
    named.split = split
    with pytest.raises(ShapeWorksInputError, match=f"got the '{split}' split"):
        augment_training_split(named, GRID, tmp_path, settings)


def test_bad_settings_list_every_problem():
    with pytest.raises(ShapeWorksInputError, match="sampler must be one of.*count must be"):
        AugmentationSettings(count=0, sampler="uniform")


def test_a_damaged_or_missing_cached_sample_is_generated_again(tmp_path, caplog):
    train = _train_split()
    settings = AugmentationSettings(count=3, sampler="gaussian", seed=7, num_modes=3,
                                    max_landmarks=32)
    first = augment_training_split(train, GRID, tmp_path, settings)
    folder = next(tmp_path.iterdir())
    (folder / "samples" / "augmented_00000.npz").unlink()
    damaged = folder / "samples" / "augmented_00002.npz"
    damaged.write_bytes(damaged.read_bytes()[:200])  # cut short, as by a full disk
    caplog.set_level("WARNING", logger="shapeworks_progressive.augmentation")
    again = augment_training_split(train, GRID, tmp_path, settings)
    assert "2 cached sample(s)" in caplog.text and "augmented_00000.npz" in caplog.text
    np.testing.assert_array_equal(again.images, first.images)
    np.testing.assert_array_equal(again.particles_world, first.particles_world)


def test_a_sample_count_that_cannot_fit_in_memory_is_refused_before_any_work(tmp_path):
    from types import SimpleNamespace

    from shapeworks_progressive.augmentation import augment_from_config
    from shapeworks_progressive.config import validate_config
    from shapeworks_progressive.errors import ConfigError

    train = _train_split()
    data = SimpleNamespace(grid=GRID, split=lambda name: train)
    config = validate_config({"augment": {"pca_samples": 10 ** 9}})
    with pytest.raises(ConfigError, match=r"augment.pca_samples 1000000000: the samples "
                                          r"would take about .* GiB of memory"):
        augment_from_config(data, config, tmp_path)
    assert not any(tmp_path.iterdir())
    assert augment_from_config(data, validate_config({}), tmp_path) is None
