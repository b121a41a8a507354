"""Reading images and resampling them onto the world grid, in physical coordinates (mm).

Images keep their full physical geometry (origin, spacing and direction, oblique included)
as SimpleITK reads it: ITK's LPS physical frame, the frame ShapeWorks works in. Nothing is
reoriented; every resampling goes through physical points, so an image and its
reoriented copy land on the same world-frame array.

Transforms follow ShapeWorks' convention: ``image_to_world`` is a *forward* (4, 4) point
transform mapping an image's physical point to the world frame. A voxel of the output grid
at world point ``w`` takes the image's value at ``inv(image_to_world) @ w``.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

from .errors import ImageError
from .grid import Grid

__all__ = [
    "read_image",
    "resample_to_grid",
    "array_to_image",
    "image_to_array",
    "world_affine_transform",
    "voxelize_mesh",
    "physical_corners",
]

logger = logging.getLogger(__name__)


def read_image(path: str | os.PathLike):
    """Read a 3D image as a float32 ``SimpleITK.Image``, keeping its physical geometry.

    Any scalar pixel type is accepted (integer or float). A multi-component image keeps
    its first component (with a warning). NaN and Inf voxels are replaced by the smallest
    finite value, with a warning that names the file; a constant image is read with a
    warning (it normalizes to 0).

    Parameters
    ----------
    path : str or PathLike
        Any format SimpleITK reads (``.nrrd``, ``.nii.gz``, ``.mha``, ...).

    Returns
    -------
    SimpleITK.Image
        3D, ``sitkFloat32``, same origin, spacing and direction as the file.

    Raises
    ------
    FileNotFoundError
        The file does not exist (resolved path in the message).
    ImageError
        SimpleITK cannot read it, it is not 3D, or no voxel is finite (all NaN/Inf).
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path.resolve()}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        message = f"cannot read image {path}: {str(err).strip().splitlines()[-1]}"
        raise ImageError(message) from err
    if image.GetDimension() != 3:
        raise ImageError(f"image {path} has {image.GetDimension()} dimensions; expected 3")
    if image.GetNumberOfComponentsPerPixel() > 1:
        warnings.warn(f"image {path} has {image.GetNumberOfComponentsPerPixel()} components "
                      "per voxel; using the first", UserWarning, stacklevel=2)
        image = sitk.VectorIndexSelectionCast(image, 0)
    image = sitk.Cast(image, sitk.sitkFloat32)

    # replace NaN/Inf so that no later step (resampling, statistics) sees them
    array = sitk.GetArrayViewFromImage(image)
    finite = np.isfinite(array)
    if not finite.any():
        raise ImageError(f"image {path} holds no finite voxel (all {array.size} are NaN or "
                         "Inf); it cannot be used")
    if not finite.all():
        n_bad = int(array.size - finite.sum())
        fill = float(array[finite].min())
        warnings.warn(f"image {path} holds {n_bad} NaN/Inf voxel(s) of {array.size}; "
                      f"replaced by {fill:g}", UserWarning, stacklevel=2)
        clean = np.where(finite, array, np.float32(fill)).astype(np.float32)
        fixed = sitk.GetImageFromArray(clean)
        fixed.CopyInformation(image)
        image = fixed
    low, high = float(np.min(array[finite])), float(np.max(array[finite]))
    if low == high:
        warnings.warn(f"image {path} is constant ({low:g} everywhere); it carries no "
                      "intensity information and normalizes to 0", UserWarning, stacklevel=2)
    return image


def world_affine_transform(image_to_world: np.ndarray):
    """SimpleITK transform for resampling under a forward ``image_to_world`` (4, 4).

    SimpleITK maps *output* (world) points to *input* (image) points, so this is the
    affine transform ``inv(image_to_world)``.
    """
    import SimpleITK as sitk

    matrix = np.asarray(image_to_world, dtype=float)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"image_to_world must be a finite (4, 4) matrix, got {matrix!r}")
    inverse = np.linalg.inv(matrix)
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(inverse[:3, :3].ravel().tolist())
    transform.SetTranslation(inverse[:3, 3].tolist())
    return transform


def resample_to_grid(image, image_to_world: np.ndarray, grid: Grid, interpolator: str = "linear",
                     *, default_value: float | None = None) -> np.ndarray:
    """Resample an image onto the world grid under a forward image-to-world transform.

    Parameters
    ----------
    image : SimpleITK.Image
        3D image in its own physical frame (any direction and spacing).
    image_to_world : (4, 4) ndarray
        Forward transform from the image's physical points (mm) to world points (mm).
    grid : Grid
        Output grid (world frame, identity direction).
    interpolator : {"linear", "nearest"}, default: "linear"
    default_value : float, optional
        Value for grid voxels outside the image. Default: the image's minimum (its
        background for MRI and CT).

    Returns
    -------
    (X, Y, Z) ndarray of float32
        Indexed ``[i, j, k]`` like ``grid``.
    """
    import SimpleITK as sitk

    interpolators = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}
    if interpolator not in interpolators:
        raise ValueError(f"interpolator must be one of {sorted(interpolators)}, "
                         f"got {interpolator!r}")
    if default_value is None:
        default_value = float(sitk.GetArrayViewFromImage(image).min())
    output = sitk.Resample(image, list(grid.size), world_affine_transform(image_to_world),
                           interpolators[interpolator], list(grid.origin), list(grid.spacing),
                           np.eye(3).ravel().tolist(), float(default_value), sitk.sitkFloat32)
    return image_to_array(output)


def image_to_array(image) -> np.ndarray:
    """SimpleITK image to an ``(X, Y, Z)`` float32 ndarray (SimpleITK gives (Z, Y, X))."""
    import SimpleITK as sitk

    return np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0),
                                dtype=np.float32)


def array_to_image(array_xyz: np.ndarray, grid: Grid):
    """An ``(X, Y, Z)`` array on ``grid`` as a float32 SimpleITK image in the world frame."""
    import SimpleITK as sitk

    array_xyz = np.asarray(array_xyz, dtype=np.float32)
    if array_xyz.shape != tuple(grid.size):
        raise ValueError(f"array shape {array_xyz.shape} does not match grid size {grid.size}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    image.SetOrigin(list(grid.origin))
    image.SetSpacing(list(grid.spacing))
    image.SetDirection(np.eye(3).ravel().tolist())
    return image


def physical_corners(image) -> np.ndarray:
    """(8, 3) physical positions (mm) of an image's corner voxel centres."""
    size = np.asarray(image.GetSize()) - 1
    corners = []
    for i in (0, size[0]):
        for j in (0, size[1]):
            for k in (0, size[2]):
                corners.append(image.TransformContinuousIndexToPhysicalPoint(
                    [float(i), float(j), float(k)]))
    return np.asarray(corners, dtype=float)


def voxelize_mesh(mesh, grid: Grid, mesh_to_world: np.ndarray | None = None) -> np.ndarray:
    """Rasterize a closed surface mesh onto the grid (inside = 1).

    Parameters
    ----------
    mesh : vtkPolyData
        Closed triangle surface, in its own frame (mm).
    grid : Grid
        Output grid, world frame.
    mesh_to_world : (4, 4) ndarray, optional
        Forward transform from the mesh's frame to the world frame; identity if omitted.

    Returns
    -------
    (X, Y, Z) ndarray of uint8
        1 at voxel centres inside the surface, 0 elsewhere.
    """
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkImagingStencil import vtkImageStencil, vtkPolyDataToImageStencil

    from .meshes import transform_mesh

    if mesh_to_world is not None:
        mesh = transform_mesh(mesh, mesh_to_world)
    blank = vtkImageData()
    blank.SetOrigin(*grid.origin)
    blank.SetSpacing(*grid.spacing)
    blank.SetDimensions(*grid.size)
    blank.AllocateScalars(3, 1)  # VTK_UNSIGNED_CHAR
    vtk_to_numpy(blank.GetPointData().GetScalars())[:] = 1

    to_stencil = vtkPolyDataToImageStencil()
    to_stencil.SetInputData(mesh)
    to_stencil.SetOutputOrigin(*grid.origin)
    to_stencil.SetOutputSpacing(*grid.spacing)
    to_stencil.SetOutputWholeExtent(0, grid.size[0] - 1, 0, grid.size[1] - 1,
                                    0, grid.size[2] - 1)
    to_stencil.Update()
    stencil = vtkImageStencil()
    stencil.SetInputData(blank)
    stencil.SetStencilConnection(to_stencil.GetOutputPort())
    stencil.ReverseStencilOff()
    stencil.SetBackgroundValue(0)
    stencil.Update()
    flat = vtk_to_numpy(stencil.GetOutput().GetPointData().GetScalars())
    # VTK point order is x fastest: reshape as (Z, Y, X) then transpose
    return np.ascontiguousarray(flat.reshape(grid.size[::-1]).transpose(2, 1, 0),
                                dtype=np.uint8)
