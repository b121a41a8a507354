"""Tests of transforms.py: ShapeWorks' 16-number row-major transforms and the frames."""

from __future__ import annotations

import numpy as np
import pytest

from shapeworks_progressive.transforms import (apply_transform, format_transform,
                                                local_to_world, local_to_world_matrix,
                                                parse_transform, world_to_local)

# A rotation of 90 degrees about z with translation (1, 2, 3), as ShapeWorks writes it.
ROTATION_TEXT = "0 -1 0 1 1 0 0 2 0 0 1 3 0 0 0 1"


def test_parse_is_row_major_forward():
    matrix = parse_transform(ROTATION_TEXT)
    assert matrix[0, 3] == 1.0 and matrix[1, 3] == 2.0 and matrix[2, 3] == 3.0
    assert matrix[0, 1] == -1.0 and matrix[1, 0] == 1.0
    # x axis maps to y, then translates
    np.testing.assert_allclose(apply_transform(np.array([[1.0, 0, 0]]), matrix), [[1, 3, 3]])


@pytest.mark.parametrize("text", ["", "   ", None])
def test_empty_is_identity(text):
    np.testing.assert_array_equal(parse_transform(text), np.eye(4))


def test_twelve_numbers_keep_only_translation():
    matrix = parse_transform("2 0 0 0 2 0 0 0 2 5 6 7")
    expected = np.eye(4)
    expected[:3, 3] = [5, 6, 7]
    np.testing.assert_array_equal(matrix, expected)


@pytest.mark.parametrize("text, match", [("1 0 0", "3 numbers"), ("a b c", "not a number"),
                                         ("1 0 0 nan " + "0 " * 12, "NaN or Inf")])
def test_bad_transforms_raise(text, match):
    with pytest.raises(ValueError, match=match):
        parse_transform(text)


def test_format_round_trip():
    matrix = parse_transform(ROTATION_TEXT)
    text = format_transform(matrix)
    assert text.split()[:4] == ["0.000000", "-1.000000", "0.000000", "1.000000"]
    np.testing.assert_array_equal(parse_transform(text), matrix)
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        format_transform(np.eye(3))


def test_world_is_procrustes_after_alignment_and_inverse():
    rng = np.random.default_rng(0)
    local = rng.normal(size=(20, 3)) * 10
    alignment = parse_transform(ROTATION_TEXT)
    procrustes = np.diag([2.0, 2.0, 2.0, 1.0])
    procrustes[:3, 3] = [-4, 0, 1]
    world = local_to_world(local, alignment, procrustes)
    # order matters: alignment first, then Procrustes
    by_hand = (local @ alignment[:3, :3].T + alignment[:3, 3]) * 2 + [-4, 0, 1]
    np.testing.assert_allclose(world, by_hand)
    np.testing.assert_allclose(world_to_local(world, alignment, procrustes), local, atol=1e-12)
    np.testing.assert_allclose(apply_transform(world, procrustes @ alignment, inverse=True),
                               local, atol=1e-12)
    np.testing.assert_array_equal(local_to_world_matrix(None, None), np.eye(4))
