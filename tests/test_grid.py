"""Grid: box around world particles, index/world maps, serialisation."""

import json

import numpy as np
import pytest

from shapeworks_progressive.grid import Grid


def test_box_covers_points_with_padding_and_is_centred():
    points = np.array([[-10.0, 0.0, 5.0], [10.0, 20.0, 6.0], [0.0, 5.0, 30.0]])
    grid = Grid.around_points(points, spacing=2.0, padding_mm=5.0)
    assert grid.contains(points, margin_mm=5.0 - 1e-9).all()
    # no more than one voxel of slack on each axis
    extent = grid.high_world - grid.low_world
    assert np.all(extent >= np.ptp(points, axis=0) + 10.0 - 1e-9)
    assert np.all(extent < np.ptp(points, axis=0) + 10.0 + 2.0)
    centre = 0.5 * (grid.low_world + grid.high_world)
    np.testing.assert_allclose(centre, 0.5 * (points.min(0) + points.max(0)))
    assert grid.size == (16, 16, 19)  # ceil(30/2)+1, ceil(30/2)+1, ceil(35/2)+1


def test_anisotropic_spacing_and_multiple_of():
    points = np.random.default_rng(0).normal(size=(50, 3)) * [10, 5, 3]
    grid = Grid.around_points(points, spacing=(1.0, 0.5, 2.0), padding_mm=3.0, multiple_of=8)
    assert all(s % 8 == 0 for s in grid.size)
    assert grid.spacing == (1.0, 0.5, 2.0)
    assert grid.contains(points, margin_mm=3.0 - 1e-9).all()


def test_index_world_round_trip_and_matrix():
    grid = Grid((1.0, -2.0, 3.5), (0.5, 1.0, 2.0), (10, 11, 12))
    indices = np.array([[0, 0, 0], [9, 10, 11], [2.5, 3.0, 0.25]])
    world = grid.index_to_world_points(indices)
    np.testing.assert_allclose(world[1], [1.0 + 4.5, -2.0 + 10.0, 3.5 + 22.0])
    np.testing.assert_allclose(grid.world_to_index(world), indices)
    homogeneous = np.c_[indices, np.ones(3)] @ grid.index_to_world.T
    np.testing.assert_allclose(homogeneous[:, :3], world)


def test_to_dict_from_dict_is_json_and_exact():
    grid = Grid.around_points(np.array([[0.1, 0.2, 0.3], [7.7, 8.8, 9.9]]), spacing=0.7,
                              padding_mm=1.3)
    again = Grid.from_dict(json.loads(json.dumps(grid.to_dict())))
    assert again == grid
    with pytest.raises(ValueError, match="identity direction"):
        Grid.from_dict(dict(grid.to_dict(), direction=[-1, 0, 0, 0, -1, 0, 0, 0, 1]))


@pytest.mark.parametrize("kwargs, match", [
    ({"spacing": 0.0}, "spacing"),
    ({"padding_mm": -1.0}, "padding_mm"),
    ({"multiple_of": 0}, "multiple_of"),
])
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Grid.around_points(np.zeros((2, 3)), **kwargs)


def test_nan_points_are_rejected():
    with pytest.raises(ValueError, match="NaN/Inf: 1"):
        Grid.around_points(np.array([[0.0, 0.0, np.nan], [1.0, 1.0, 1.0]]))
