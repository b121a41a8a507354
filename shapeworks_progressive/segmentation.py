"""Shapes from label images: largest connected component and surface meshes.

Everything here works in the label image's own physical frame (mm): the image origin,
spacing and direction (for example the hippocampus crops' ``diag(-1, -1, 1)``) are
honoured, so a mesh vertex lies where the voxel it came from lies in the scanner's
space. Arrays taken from SimpleITK are ``(Z, Y, X)``; they are transposed to
``(X, Y, Z)`` before use, as everywhere in this package.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .errors import ImageError

__all__ = [
    "largest_component",
    "index_to_world_matrix",
    "segmentation_to_mesh",
    "smooth_surface",
    "extract_shape",
]

logger = logging.getLogger(__name__)


def index_to_world_matrix(image) -> np.ndarray:
    """Return the (4, 4) forward transform from continuous ``(i, j, k)`` index to mm.

    ``world = origin + direction @ diag(spacing) @ index``, with ``index`` ordered
    ``(X, Y, Z)`` as SimpleITK's ``TransformContinuousIndexToPhysicalPoint``.
    """
    dimension = image.GetDimension()
    if dimension != 3:
        raise ImageError(f"expected a 3D image, got a {dimension}D one")
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def largest_component(label_image, *, name: str = ""):
    """Binary mask (label > 0) keeping only the largest 26-connected component.

    Parameters
    ----------
    label_image : SimpleITK.Image
        Any integer or float label image; every value > 0 is foreground.
    name : str
        Subject name for error messages.

    Returns
    -------
    SimpleITK.Image
        ``uint8`` mask {0, 1} on the same grid (origin, spacing, direction kept).

    Raises
    ------
    ImageError
        The image holds no foreground voxel.
    """
    import SimpleITK as sitk

    foreground = sitk.Cast(label_image > 0, sitk.sitkUInt8)
    components = sitk.ConnectedComponent(foreground, True)
    relabelled = sitk.RelabelComponent(components, sortByObjectSize=True)
    mask = sitk.Cast(relabelled == 1, sitk.sitkUInt8)
    kept = int(sitk.GetArrayViewFromImage(mask).sum())
    if kept == 0:
        raise ImageError(f"subject {name!r}: the label image holds no voxel > 0")
    total = int(sitk.GetArrayViewFromImage(foreground).sum())
    if kept < total:
        logger.debug("subject %s: kept %d of %d foreground voxels (largest component)",
                     name, kept, total)
    mask.CopyInformation(label_image)
    return mask


def segmentation_to_mesh(mask, *, padding: int = 3, smoothing_iterations: int = 15,
                         passband: float = 0.1):
    """Surface mesh of a binary mask in the mask's physical frame (mm).

    The mask is padded with ``padding`` background voxels (the hippocampus nearly
    fills its crop, and an open surface would result otherwise), contoured at 0.5
    with VTK's flying edges in index space, mapped to mm with the image's
    index-to-physical transform, lightly smoothed (windowed sinc, which keeps the
    volume) and given outward normals.

    Parameters
    ----------
    mask : SimpleITK.Image
        Binary ``{0, 1}`` image.
    padding : int, default: 3
        Background voxels added on every side before contouring.
    smoothing_iterations : int, default: 15
        Windowed-sinc iterations; 0 turns smoothing off.
    passband : float, default: 0.1
        Windowed-sinc pass band (smaller smooths more).

    Returns
    -------
    vtkPolyData
        Closed triangle mesh, vertices in the mask's physical frame (mm).
    """
    import SimpleITK as sitk
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkFiltersCore import vtkFlyingEdges3D

    from .meshes import arrays_to_mesh, mesh_to_arrays
    from .transforms import apply_transform

    # Pad with background, in index space (X, Y, Z)
    array_zyx = sitk.GetArrayViewFromImage(mask)
    array_xyz = np.ascontiguousarray(np.transpose(array_zyx > 0, (2, 1, 0)), dtype=np.uint8)
    array_xyz = np.pad(array_xyz, padding)
    size = array_xyz.shape

    # Contour in index coordinates, shifted back by the padding
    image = vtkImageData()
    image.SetDimensions(*size)
    image.SetOrigin(-padding, -padding, -padding)
    image.SetSpacing(1.0, 1.0, 1.0)
    scalars = numpy_to_vtk(array_xyz.ravel(order="F"), deep=True)
    image.GetPointData().SetScalars(scalars)
    contour = vtkFlyingEdges3D()
    contour.SetInputData(image)
    contour.SetValue(0, 0.5)
    contour.ComputeNormalsOff()
    contour.ComputeGradientsOff()
    contour.ComputeScalarsOff()
    contour.Update()
    vertices_index, faces = mesh_to_arrays(contour.GetOutput())
    if len(faces) == 0:
        raise ImageError("the mask gives an empty surface")

    # Index to mm; a mirroring direction flips the triangles' winding
    index_to_world = index_to_world_matrix(mask)
    vertices_world = apply_transform(vertices_index, index_to_world)
    if np.linalg.det(index_to_world[:3, :3]) < 0:
        faces = faces[:, ::-1]
    mesh = arrays_to_mesh(vertices_world, faces)

    return smooth_surface(mesh, iterations=smoothing_iterations, passband=passband)


def smooth_surface(mesh, *, iterations: int = 15, passband: float = 0.1):
    """Light windowed-sinc smoothing (keeps the volume) plus outward point normals.

    Parameters
    ----------
    mesh : vtkPolyData
        Closed triangle surface (mm); its frame is kept.
    iterations : int, default: 15
        Windowed-sinc iterations; 0 only adds normals.
    passband : float, default: 0.1
        Pass band (smaller smooths more).

    Returns
    -------
    vtkPolyData
    """
    from vtkmodules.vtkFiltersCore import vtkPolyDataNormals, vtkWindowedSincPolyDataFilter

    if iterations > 0:
        smoother = vtkWindowedSincPolyDataFilter()
        smoother.SetInputData(mesh)
        smoother.SetNumberOfIterations(iterations)
        smoother.SetPassBand(passband)
        smoother.NormalizeCoordinatesOn()
        smoother.BoundarySmoothingOff()
        smoother.FeatureEdgeSmoothingOff()
        smoother.NonManifoldSmoothingOn()
        smoother.Update()
        mesh = smoother.GetOutput()

    normals = vtkPolyDataNormals()
    normals.SetInputData(mesh)
    normals.ConsistencyOn()
    normals.AutoOrientNormalsOn()
    normals.SplittingOff()
    normals.ComputePointNormalsOn()
    normals.ComputeCellNormalsOff()
    normals.Update()
    return normals.GetOutput()


def extract_shape(label_path: str | os.PathLike, segmentation_path: str | os.PathLike,
                  mesh_path: str | os.PathLike, *, name: str = "", padding: int = 3,
                  smoothing_iterations: int = 15) -> dict:
    """Largest component of ``label > 0`` and its surface, written in the subject's frame.

    Parameters
    ----------
    label_path : path
        Label image (any pixel type; values > 0 are the shape).
    segmentation_path : path
        Where the binary mask is written (same grid as the labels), e.g. ``.nii.gz``.
    mesh_path : path
        Where the surface mesh is written (mm, the label image's physical frame).
    name : str
        Subject name for logs and errors.

    Returns
    -------
    dict
        ``voxels`` (int), ``vertices`` (int), ``faces`` (int), ``volume_mm3`` (float).
    """
    import SimpleITK as sitk
    from vtkmodules.vtkFiltersCore import vtkMassProperties

    from .fileio import atomic_path
    from .meshes import write_mesh

    label_path = Path(label_path)
    if not label_path.is_file():
        raise FileNotFoundError(f"label image of subject {name!r} not found: "
                                f"{label_path.resolve()}")
    try:
        labels = sitk.ReadImage(str(label_path))
    except RuntimeError as err:
        raise ImageError(f"subject {name!r}: cannot read label image {label_path}") from err
    mask = largest_component(labels, name=name or label_path.name)
    with atomic_path(segmentation_path) as tmp:
        sitk.WriteImage(mask, str(tmp), True)
    mesh = segmentation_to_mesh(mask, padding=padding,
                                smoothing_iterations=smoothing_iterations)
    write_mesh(mesh_path, mesh)
    mass = vtkMassProperties()
    mass.SetInputData(mesh)
    mass.Update()
    return {
        "voxels": int(sitk.GetArrayViewFromImage(mask).sum()),
        "vertices": int(mesh.GetNumberOfPoints()),
        "faces": int(mesh.GetNumberOfPolys()),
        "volume_mm3": float(mass.GetVolume()),
    }
