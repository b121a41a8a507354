"""Robustness, intensities: NaN/Inf voxels, constant images, huge outliers, pixel types.

Normalization and losses never give NaN; an image that cannot be used (no finite voxel)
stops ``train`` and ``predict`` with an error naming the subject or the file (status 2).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from shapeworks_progressive.cli import main
from shapeworks_progressive.dataset import prepare_dataset
from shapeworks_progressive.errors import ImageError
from shapeworks_progressive.images import read_image
from shapeworks_progressive.losses import particle_loss, point_rmse, segmentation_loss
from shapeworks_progressive.normalization import IntensityNormalization

from test_dataset import _make_project
from test_predict import TINY_CONFIG, make_consistent_project, train_tiny


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rewrite(path, change):
    """Apply ``change`` to the (Z, Y, X) float32 array of an image file, keep its geometry."""
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    array = change(sitk.GetArrayFromImage(image))
    out = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32))
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path))


def _all_nan(array):
    return np.full_like(array, np.nan)


def test_all_nan_image_is_named(tmp_path):
    path = tmp_path / "blank.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 5, 6), np.inf, np.float32)), str(path))
    with pytest.raises(ImageError, match=r"blank\.nrrd holds no finite voxel"):
        read_image(path)


def test_constant_image_reads_with_a_warning_and_normalizes_to_zero(tmp_path):
    path = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 5, 6), 7, np.int16)), str(path))
    with pytest.warns(UserWarning, match=r"flat\.nrrd is constant \(7 everywhere\)"):
        image = read_image(path)
    normalization = IntensityNormalization(mean=0.25, std=2.0)
    out = normalization.apply(sitk.GetArrayFromImage(image))
    np.testing.assert_array_equal(out, np.full((4, 5, 6), -0.125, np.float32))


@pytest.mark.parametrize("pixel", [sitk.sitkUInt8, sitk.sitkInt16, sitk.sitkUInt16,
                                   sitk.sitkInt32, sitk.sitkFloat32, sitk.sitkFloat64])
def test_pixel_types_normalize_alike(tmp_path, pixel):
    ramp = np.arange(4 * 5 * 6, dtype=np.float64).reshape(4, 5, 6) * 2 + 10
    path = tmp_path / "ramp.nrrd"
    sitk.WriteImage(sitk.Cast(sitk.GetImageFromArray(ramp), pixel), str(path))
    read = sitk.GetArrayFromImage(read_image(path))
    assert read.dtype == np.float32
    expected = IntensityNormalization().rescale(ramp)
    np.testing.assert_allclose(IntensityNormalization().rescale(read), expected, atol=1e-6)


def test_outliers_nan_and_inf_in_a_project_give_finite_prepared_data(tmp_path):
    path, _ = _make_project(tmp_path)

    def outliers(array):
        array = array.copy()
        array[0, 0, 0] = 1e30       # one huge voxel
        array[1, 1, 1] = -np.inf
        array[2, 2, :5] = np.nan
        return array

    _rewrite(tmp_path / "ell_0.nrrd", outliers)   # training (reference) image
    _rewrite(tmp_path / "ell_5.nrrd", outliers)   # test image, registered
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = prepare_dataset(path, tmp_path / "cache", spacing=2.0, padding_mm=4.0,
                               progress=False)
    for split in ("train", "val", "test"):
        images = data.split(split).images
        assert np.isfinite(images).all()
        assert np.abs(images).max() < 20  # the 1e30 voxel is clipped, not propagated
    assert np.isfinite([data.normalization.mean, data.normalization.std]).all()
    # the outlier image still has content (the clip is per image, at its percentiles)
    assert data.split("train").images[0].std() > 0.5


def test_losses_stay_finite_on_extreme_values():
    pred = torch.tensor([[[1e6, -1e6, 3e5], [0.0, 0.0, 0.0]]], requires_grad=True)
    target = torch.tensor([[[0.0, 0.0, 0.0], [float("inf"), 0.0, 0.0]]])
    for kind in ("mse", "focal"):
        loss = particle_loss(pred, target, kind=kind)
        assert torch.isfinite(loss), kind
        loss.backward()
        assert torch.isfinite(pred.grad).all(), kind
        pred.grad = None
    assert np.isfinite(point_rmse(pred.detach(), target)[0])
    logits = torch.tensor([1e4, -1e4, 0.0, 50.0]).reshape(1, 1, 4, 1, 1)
    for target_seg in (torch.zeros(1, 1, 4, 1, 1), torch.ones(1, 1, 4, 1, 1)):
        assert torch.isfinite(segmentation_loss(logits, target_seg))


def test_train_names_the_subject_and_file_of_an_unusable_image(tmp_path, capsys):
    path, _ = _make_project(tmp_path)
    _rewrite(tmp_path / "ell_3.nrrd", _all_nan)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    out = tmp_path / "run"
    code = main(["train", str(path), "--config", str(config), "--out", str(out),
                 "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "subject 'ell_3'" in err and "ell_3.nrrd holds no finite voxel" in err
    assert not (out / "last.pt").exists()


def test_predict_names_an_unusable_image(tmp_path, capsys):
    path, _ = make_consistent_project(tmp_path)
    train_tiny(path, tmp_path / "run")
    blank = tmp_path / "blank_scan.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((8, 8, 8), np.nan, np.float32)), str(blank))
    capsys.readouterr()
    code = main(["predict", str(path), "--model", str(tmp_path / "run"), "--images",
                 str(blank), "--device", "cpu", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "blank_scan.nrrd holds no finite voxel" in err
    assert "predicted" not in capsys.readouterr().out
