"""Scale sizes, --scales validation and the nested-prefix rule."""

from pathlib import Path

import numpy as np
import pytest

from shapeworks_progressive.errors import ConfigError
from shapeworks_progressive.particles import read_particles
from shapeworks_progressive.scales import (choose_particle_order, default_scale_sizes,
                                           farthest_point_order, prefix_coverage_ratios,
                                           validate_scale_sizes)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LEFT_ATRIUM = SHARED / "data" / "shapeworks_examples" / "left_atrium" / "particles"


@pytest.mark.parametrize("n, expected", [
    (1024, [128, 256, 512, 1024]),
    (128, [16, 32, 64, 128]),
    (100, [12, 25, 50, 100]),
    (4, [1, 2, 4]),
    (1, [1]),
])
def test_default_scales(n, expected):
    assert default_scale_sizes(n) == expected


def test_validation_accepts_strings_and_lists():
    assert validate_scale_sizes("64,128 256", 256) == [64, 128, 256]
    assert validate_scale_sizes([32, 256], 256) == [32, 256]
    assert validate_scale_sizes(None, 512) == [64, 128, 256, 512]


def test_validation_lists_every_problem():
    with pytest.raises(ConfigError) as info:
        validate_scale_sizes(["abc", 0, 2.5, 512, 256], 1024)
    problems = info.value.problems
    assert any("'abc' is not a number" in p for p in problems)
    assert any("0 is not a positive whole number" in p for p in problems)
    assert any("2.5 is not a positive whole number" in p for p in problems)
    assert any("strictly increasing" in p for p in problems)
    assert any("end the scales with 1024" in p for p in problems)
    assert len(problems) == 5


def _sphere(n=256, seed=0):
    points = np.random.default_rng(seed).normal(size=(n, 3))
    return 20.0 * points / np.linalg.norm(points, axis=1, keepdims=True)


def test_farthest_point_order_is_a_spread_permutation():
    points = _sphere()
    order = farthest_point_order(points)
    assert sorted(order.tolist()) == list(range(len(points)))
    ratios = prefix_coverage_ratios(points, order, [8, 32, 128, 256])
    assert set(ratios) == {8, 32, 128}  # the full set is not a prefix to judge
    assert all(r == pytest.approx(1.0) for r in ratios.values())


def test_sorted_order_is_not_nested_and_gets_farthest_point_order():
    points = _sphere()
    sorted_rows = points[np.argsort(points[:, 2])]
    order, nested, ratios = choose_particle_order(sorted_rows, [32, 64, 128, 256])
    assert not nested
    assert max(ratios.values()) > 2.0
    np.testing.assert_array_equal(order, farthest_point_order(sorted_rows))


@pytest.mark.skipif(not LEFT_ATRIUM.is_dir(), reason="shared ShapeWorks examples not present")
def test_shapeworks_split_order_is_kept():
    files = sorted(LEFT_ATRIUM.glob("*_world.particles"))
    mean_shape = np.mean([read_particles(f) for f in files], axis=0)
    order, nested, ratios = choose_particle_order(mean_shape, default_scale_sizes(128))
    assert nested
    np.testing.assert_array_equal(order, np.arange(128))
    assert all(r < 1.5 for r in ratios.values())
