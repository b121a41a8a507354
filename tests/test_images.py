"""Image reading (pixel types, NaN, geometry) and resampling onto the world grid."""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from shapeworks_progressive.errors import ImageError
from shapeworks_progressive.grid import Grid
from shapeworks_progressive.images import (array_to_image, image_to_array, read_image,
                                           resample_to_grid, voxelize_mesh)


def _blob_image(size=(30, 26, 22), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                direction=np.eye(3), centre=(14.0, 12.0, 10.0)):
    """A smooth anisotropic Gaussian blob, defined by physical position."""
    image = sitk.Image(list(size), sitk.sitkFloat32)
    image.SetSpacing(list(spacing))
    image.SetOrigin(list(origin))
    image.SetDirection(np.asarray(direction, float).ravel().tolist())
    index = np.stack(np.meshgrid(*[np.arange(s) for s in size], indexing="ij"), -1)
    physical = np.asarray(origin) + (index * spacing) @ np.asarray(direction).T
    values = 100 * np.exp(-np.sum(((physical - centre) / [6.0, 4.0, 3.0]) ** 2, -1) / 2)
    out = sitk.GetImageFromArray(values.transpose(2, 1, 0).astype(np.float32))
    out.CopyInformation(image)
    return out


@pytest.mark.parametrize("pixel", [sitk.sitkUInt8, sitk.sitkInt16, sitk.sitkUInt16,
                                   sitk.sitkFloat64])
def test_any_pixel_type_reads_as_float32_with_geometry(tmp_path, pixel):
    image = sitk.Cast(_blob_image(spacing=(0.5, 1.0, 2.0), origin=(3.0, -4.0, 5.0),
                                  direction=np.diag([-1.0, -1.0, 1.0])), pixel)
    path = tmp_path / "image.nii.gz"
    sitk.WriteImage(image, str(path))
    read = read_image(path)
    assert read.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(read.GetSpacing(), (0.5, 1.0, 2.0))
    np.testing.assert_allclose(read.GetOrigin(), (3.0, -4.0, 5.0), atol=1e-5)
    np.testing.assert_allclose(read.GetDirection(), np.diag([-1.0, -1.0, 1.0]).ravel())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read),
                                  sitk.GetArrayFromImage(image).astype(np.float32))


def test_nan_and_inf_are_replaced_with_a_warning_naming_the_file(tmp_path):
    array = np.arange(60, dtype=np.float32).reshape(3, 4, 5) + 10
    array[0, 0, 0] = np.nan
    array[1, 1, 1] = np.inf
    path = tmp_path / "holes.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    with pytest.warns(UserWarning, match=r"holes\.nrrd holds 2 NaN/Inf voxel"):
        read = sitk.GetArrayFromImage(read_image(path))
    assert np.isfinite(read).all()
    assert read[0, 0, 0] == 11.0 and read[1, 1, 1] == 11.0  # smallest finite value


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.nrrd"):
        read_image(tmp_path / "nope.nrrd")
    bad = tmp_path / "bad.nrrd"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match="bad.nrrd"):
        read_image(bad)


def test_translation_moves_the_content_to_the_world_position():
    image = _blob_image()
    image_to_world = np.eye(4)
    image_to_world[:3, 3] = [-14.0, -12.0, -10.0]  # blob centre -> world origin
    grid = Grid((-10.0, -10.0, -10.0), (1.0, 1.0, 1.0), (21, 21, 21))
    array = resample_to_grid(image, image_to_world, grid)
    assert array.shape == (21, 21, 21) and array.dtype == np.float32
    assert np.unravel_index(np.argmax(array), array.shape) == (10, 10, 10)
    assert array[10, 10, 10] == pytest.approx(100.0, abs=1e-3)
    # the blob is widest along X (sigma 6) and narrowest along Z (sigma 3)
    assert array[16, 10, 10] > array[10, 16, 10] > array[10, 10, 16]


def test_oblique_direction_lands_on_the_same_world_array():
    identity = _blob_image(size=(40, 36, 32), centre=(20.0, 18.0, 16.0))
    rotation = Rotation.from_euler("xyz", [20, -15, 30], degrees=True).as_matrix()
    # same physical content sampled on an oblique, anisotropic grid around the blob
    centre = np.array([20.0, 18.0, 16.0])
    spacing = np.array([0.8, 0.9, 1.1])
    size = (50, 46, 36)
    origin = centre - rotation @ ((np.asarray(size) - 1) / 2 * spacing)
    oblique = _blob_image(size=size, spacing=tuple(spacing), origin=tuple(origin),
                          direction=rotation, centre=tuple(centre))
    image_to_world = np.eye(4)
    image_to_world[:3, 3] = -centre
    grid = Grid((-9.0, -8.0, -6.0), (1.0, 1.0, 1.0), (19, 17, 13))
    a = resample_to_grid(identity, image_to_world, grid)
    b = resample_to_grid(oblique, image_to_world, grid)
    # of a 100 peak: linear interpolation error only (about h^2/8 * f'' ~ 2)
    assert np.abs(a - b).max() < 4.0
    assert np.abs(a - b).mean() < 0.3
    # a wrong geometry (direction ignored) would not match
    ignored = sitk.Image(oblique)
    ignored.SetDirection(np.eye(3).ravel().tolist())
    c = resample_to_grid(ignored, image_to_world, grid)
    assert np.abs(a - c).max() > 10.0


def test_array_image_round_trip_keeps_axes():
    grid = Grid((1.0, 2.0, 3.0), (1.0, 2.0, 0.5), (4, 5, 6))
    array = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    image = array_to_image(array, grid)
    assert image.GetSize() == (4, 5, 6)
    np.testing.assert_array_equal(image_to_array(image), array)
    np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((3, 0, 0)), (4.0, 2.0, 3.0))
    np.testing.assert_array_equal(resample_to_grid(image, np.eye(4), grid), array)


def test_voxelized_sphere_has_the_right_volume_and_place():
    from vtkmodules.vtkFiltersSources import vtkSphereSource

    sphere = vtkSphereSource()
    sphere.SetRadius(8.0)
    sphere.SetCenter(0.0, 0.0, 0.0)
    sphere.SetThetaResolution(64)
    sphere.SetPhiResolution(64)
    sphere.Update()
    shift = np.eye(4)
    shift[:3, 3] = [3.0, -2.0, 1.0]
    grid = Grid((-10.0, -14.0, -10.0), (0.5, 0.5, 0.5), (52, 52, 48))
    mask = voxelize_mesh(sphere.GetOutput(), grid, shift)
    assert mask.dtype == np.uint8
    volume = mask.sum() * 0.125
    assert volume == pytest.approx(4 / 3 * np.pi * 8.0 ** 3, rel=0.04)
    centroid = grid.index_to_world_points(np.argwhere(mask).mean(0))
    np.testing.assert_allclose(centroid, [3.0, -2.0, 1.0], atol=0.1)
