"""Hand-computed values of the particle, deep-supervision and segmentation losses."""

from __future__ import annotations

import math

import pytest
import torch

from shapeworks_progressive.losses import (
    deep_supervision_loss, dice_loss, particle_loss, point_rmse, scale_loss_weights,
    segmentation_loss, surface_loss)


def test_deep_supervision_loss_hand_computed():
    # target (1, 4, 3); scale 1 uses rows 0-1, scale 2 rows 0-3
    target = torch.zeros(1, 4, 3)
    coarse = torch.tensor([[[1.0, 0, 0], [0, 2.0, 0]]])              # d^2 = 1, 4 -> 2.5
    fine = torch.tensor([[[0, 0, 0], [0, 0, 3.0], [1.0, 1, 1], [0, 0, 0]]])  # 0, 9, 3, 0 -> 3
    weights = scale_loss_weights(2, mode="all", scale_weights=[0.5, 2.0])
    total, per_scale = deep_supervision_loss([coarse, fine], target, weights)
    assert [float(v) for v in per_scale] == [2.5, 3.0]
    assert float(total) == pytest.approx(0.5 * 2.5 + 2.0 * 3.0)
    shallow = scale_loss_weights(2, mode="shallow", scale_weights=[0.5, 2.0])
    assert shallow == [0.0, 2.0]
    total, _ = deep_supervision_loss([coarse, fine], target, shallow)
    assert float(total) == pytest.approx(6.0)


def test_fade_in_scales_only_the_newest_weight():
    assert scale_loss_weights(3, fade=0.25) == [1.0, 1.0, 0.25]
    assert scale_loss_weights(1, fade=0.25) == [1.0]


def test_focal_loss_hand_computed():
    pred = torch.tensor([[[3.0, 4.0, 0.0], [1.0, 0.0, 0.0]]])  # distances 5 and 1
    target = torch.zeros(1, 2, 3)
    a, c = 1.32, 2.0
    expected = (25 / (1 + math.exp(a * (c - 5))) + 1 / (1 + math.exp(a * (c - 1)))) / 2
    value = particle_loss(pred, target, kind="focal", focal_a=a, focal_c=c)
    assert float(value) == pytest.approx(expected, rel=1e-6)
    assert float(particle_loss(pred, target)) == pytest.approx(13.0)


def test_non_finite_targets_are_left_out():
    pred = torch.tensor([[[1.0, 0, 0], [5.0, 0, 0]]], requires_grad=True)
    target = torch.tensor([[[0.0, 0, 0], [float("nan"), 0, 0]]])
    loss = particle_loss(pred, target)
    assert float(loss.detach()) == 1.0
    loss.backward()
    assert torch.isfinite(pred.grad).all() and float(pred.grad[0, 1].abs().sum()) == 0
    assert point_rmse(pred.detach(), target) == (1.0, 1)
    assert float(particle_loss(pred.detach(), torch.full_like(target, float("nan")))) == 0.0


def test_dice_and_segmentation_loss_hand_computed():
    logits = torch.tensor([10.0, 10.0, -10.0, -10.0]).reshape(1, 1, 4, 1, 1)
    target = torch.tensor([1.0, 0.0, 0.0, 0.0]).reshape(1, 1, 4, 1, 1)
    p = 1 / (1 + math.exp(-10.0))
    dice = 1 - (2 * p + 1) / (2 * p + 2 * (1 - p) + 1 + 1)
    assert float(dice_loss(logits, target)) == pytest.approx(dice, rel=1e-5)
    bce = (-math.log(p) - math.log(1 - p) - 2 * math.log(p)) / 4
    assert float(segmentation_loss(logits, target)) == pytest.approx(dice + bce, rel=1e-5)
    assert float(dice_loss(torch.full((1, 1, 3, 1, 1), -50.0), torch.zeros(1, 1, 3, 1, 1))) \
        == pytest.approx(0.0, abs=1e-6)


def test_unknown_options_are_named():
    with pytest.raises(ValueError, match="unknown particle loss 'l1'"):
        particle_loss(torch.zeros(1, 1, 3), torch.zeros(1, 1, 3), kind="l1")
    with pytest.raises(ValueError, match=r"prediction \(1, 2, 3\) and target \(1, 1, 3\)"):
        particle_loss(torch.zeros(1, 2, 3), torch.zeros(1, 1, 3))
    with pytest.raises(ValueError, match="unknown deep supervision mode 'none'"):
        scale_loss_weights(2, mode="none")


def test_surface_loss_ignores_sliding_along_the_surface_but_not_shrinking():
    # true particles on a unit-spaced line; the scale's own particles are rows 0-1
    target = torch.tensor([[[0.0, 0, 0], [4.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0]]])
    slid = torch.tensor([[[1.0, 0, 0], [3.0, 0, 0]]])  # on true particles, but not its own
    assert float(surface_loss(slid, target)) == pytest.approx(0 + 0.5 * (1 + 1))  # coverage
    assert float(particle_loss(slid, target[:, :2])) == pytest.approx(1.0)
    inside = torch.tensor([[[0.0, 2.0, 0], [4.0, 0, 0]]])  # row 0 is 2 mm off the line
    # to surface: (4 + 0) / 2; coverage: true (0,0,0) -> 4 (to (0,2,0)), true (4,0,0) -> 0
    assert float(surface_loss(inside, target)) == pytest.approx(2.0 + 2.0)
    # a non-finite true particle is left out: (1,0,0) now lies 1 mm from the nearest one
    target[0, 2] = float("nan")
    assert float(surface_loss(slid, target)) == pytest.approx(0.5 * (1 + 0) + 0.5 * (1 + 1))
