"""Shape and geometry tests of the Progressive DeepSSM network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shapeworks_progressive.models import model_class, model_class_path
from shapeworks_progressive.models.progressive import ProgressiveDeepSSM, carry_up_parents

from synthetic_ellipsoids import farthest_point_directions

SCALES = [4, 8, 16]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _template():
    return (farthest_point_directions(16) * 6.0 + 10.0).astype(np.float32)


# grid size -> (B, 1, X, Y, Z) logits of the same size; cubic, non-cubic, odd, tiny
@pytest.mark.parametrize("size", [(16, 16, 16), (17, 22, 13), (9, 11, 7), (33, 40, 33)])
@pytest.mark.parametrize("levels", [3, 4])
def test_output_shapes_for_several_grids(size, levels):
    model = ProgressiveDeepSSM(SCALES, _template(), [0, 0, 0], [1.5] * 3, size, channels=2,
                               levels=levels, head_hidden=8, global_hidden=8)
    output = model(torch.randn(2, 1, *size))
    assert [tuple(p.shape) for p in output.particles] == [(2, 4, 3), (2, 8, 3), (2, 16, 3)]
    assert tuple(output.segmentation_logits.shape) == (2, 1, *size)
    assert len(model(torch.randn(1, 1, *size), active_scales=2).particles) == 2


def test_new_model_predicts_the_template_carried_up():
    template = _template()
    model = ProgressiveDeepSSM(SCALES, template, [0, 0, 0], [2.0] * 3, (10, 10, 10),
                               channels=2, levels=2, segmentation=False)
    output = model(torch.randn(3, 1, 10, 10, 10))
    assert output.segmentation_logits is None
    for n, pred in zip(SCALES, output.particles):  # zero-initialized last layers
        np.testing.assert_allclose(pred.detach().numpy(), np.broadcast_to(template[:n], pred.shape),
                                   atol=1e-5)


def test_carry_up_uses_nearest_coarse_particle():
    template = np.array([[0, 0, 0], [10, 0, 0], [9, 1, 0], [1, 0, 1]], dtype=float)
    parents = carry_up_parents(template, [2, 4])
    assert parents[0].tolist() == [1, 0]


def test_new_rows_follow_their_parent_when_coarse_prediction_moves():
    template = _template()
    model = ProgressiveDeepSSM(SCALES, template, [0, 0, 0], [2.0] * 3, (8, 8, 8), channels=2,
                               levels=2, segmentation=False)
    shift = torch.tensor([1.0, -2.0, 0.5])
    with torch.no_grad():  # a pure translation from the scale-1 global head
        model.global_head[-1].bias.copy_((shift / model.offset_scale_mm).repeat(4))
    finest = model(torch.zeros(1, 1, 8, 8, 8)).particles[-1][0].detach().numpy()
    np.testing.assert_allclose(finest, template + shift.numpy(), atol=1e-5)


def test_sampling_reads_the_voxel_at_a_world_position():
    model = ProgressiveDeepSSM([2], _template()[:2], [10, 20, 30], [2.0, 1.0, 0.5], (5, 6, 7),
                               channels=2, levels=1)
    volume = torch.arange(5 * 6 * 7, dtype=torch.float32).reshape(1, 1, 5, 6, 7)
    index = torch.tensor([3, 1, 4])
    world = torch.tensor([10.0, 20.0, 30.0]) + index * torch.tensor([2.0, 1.0, 0.5])
    value = model._sample(volume, model._normalize(world[None, None], (5, 6, 7)))
    assert float(value) == pytest.approx(float(volume[0, 0, 3, 1, 4]), abs=1e-4)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"finest scale \(20\) must equal .* \(16\)"):
        ProgressiveDeepSSM([4, 20], _template(), [0] * 3, [1] * 3, (8, 8, 8))
    model = ProgressiveDeepSSM(SCALES, _template(), [0] * 3, [1] * 3, (8, 8, 8), channels=2,
                               levels=2)
    with pytest.raises(ValueError, match=r"\(B, 1, X, Y, Z\); got \(1, 8, 8, 8\)"):
        model(torch.zeros(1, 8, 8, 8))
    with pytest.raises(ValueError, match="active_scales must be in 1..3; got 4"):
        model(torch.zeros(1, 1, 8, 8, 8), active_scales=4)


def test_model_registry_round_trip():
    path = "shapeworks_progressive.models.progressive:ProgressiveDeepSSM"
    assert model_class("progressive") is ProgressiveDeepSSM
    model = ProgressiveDeepSSM([2], _template()[:2], [0] * 3, [1] * 3, (4, 4, 4), levels=1)
    assert model_class_path(model) == path
    with pytest.raises(ValueError, match="unknown model 'os:system'"):
        model_class("os:system")


def test_pose_head_rotates_and_translates_the_base_shape_about_the_template_centroid():
    template = _template()
    model = ProgressiveDeepSSM(SCALES, template, [0, 0, 0], [2.0] * 3, (8, 8, 8), channels=2,
                               levels=2, segmentation=False, pose=True)
    angle = np.radians(10.0)
    shift = np.array([1.0, -2.0, 0.5])
    with torch.no_grad():  # the last 6 outputs: rotation vector, translation
        bias = model.global_head[-1].bias
        bias[-6:-3] = torch.tensor([0.0, 0.0, angle / 0.1])
        bias[-3:] = torch.tensor(shift / model.offset_scale_mm)
    finest = model(torch.zeros(1, 1, 8, 8, 8)).particles[-1][0].detach().numpy()
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                         [0, 0, 1]])
    centre = template.mean(axis=0)
    expected = (template - centre) @ rotation.T + centre + shift
    np.testing.assert_allclose(finest, expected, atol=1e-4)


def test_shape_scores_give_the_pca_shape_at_every_scale():
    from shapeworks_progressive.models.progressive import shape_basis_from_training

    template = _template()
    rng = np.random.default_rng(0)
    direction = rng.normal(size=(16, 3))
    shapes = template + rng.normal(size=(12, 1, 1)) * direction  # one mode of variation
    basis = shape_basis_from_training(shapes, 2)
    assert basis.shape == (1, 16, 3)  # only one non-zero mode exists
    # the first mode spans the direction; one unit score = one standard deviation
    mode = basis[0].ravel() / np.linalg.norm(basis[0])
    assert abs(mode @ direction.ravel()) / np.linalg.norm(direction) == pytest.approx(1, abs=1e-6)
    scores = (shapes - shapes.mean(0)).reshape(12, -1) @ mode
    assert np.linalg.norm(basis[0]) == pytest.approx(scores.std(ddof=1), rel=1e-5)

    model = ProgressiveDeepSSM(SCALES, template, [0, 0, 0], [2.0] * 3, (8, 8, 8), channels=2,
                               levels=2, shape_basis=basis, seg_features=True)
    with torch.no_grad():
        model.global_head[-1].bias.copy_(torch.tensor([1.5]))
    output = model(torch.zeros(1, 1, 8, 8, 8))
    expected = template + 1.5 * basis[0]
    for n, pred in zip(SCALES, output.particles):  # scale 1 and the carried-up rows
        np.testing.assert_allclose(pred[0].detach().numpy(), expected[:n], atol=1e-4)
    with pytest.raises(ValueError, match=r"shape_basis must be \(K, 16, 3\); got shape"):
        ProgressiveDeepSSM(SCALES, template, [0] * 3, [1] * 3, (8, 8, 8),
                           shape_basis=np.zeros((2, 15, 3)))
    with pytest.raises(ValueError, match="seg_features needs the segmentation decoder"):
        ProgressiveDeepSSM(SCALES, template, [0] * 3, [1] * 3, (8, 8, 8), segmentation=False,
                           seg_features=True)
