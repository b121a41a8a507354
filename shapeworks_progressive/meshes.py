"""Surface mesh I/O and conversions (VTK), in physical coordinates (mm).

Formats by suffix, as ShapeWorks: ``.vtk`` (legacy, written binary), ``.vtp``, ``.ply``,
``.stl`` and ``.obj``. Only ``.vtk`` and ``.vtp`` keep per-vertex arrays such as
``deepssm_error``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .fileio import atomic_path

__all__ = [
    "MESH_SUFFIXES",
    "is_mesh_path",
    "read_mesh",
    "write_mesh",
    "mesh_to_arrays",
    "arrays_to_mesh",
    "transform_mesh",
]

MESH_SUFFIXES = (".vtk", ".vtp", ".ply", ".stl", ".obj")


def is_mesh_path(path: str | os.PathLike) -> bool:
    """True when ShapeWorks would read ``path`` as a mesh (by suffix, any case)."""
    return str(path).lower().endswith(MESH_SUFFIXES)


def read_mesh(path: str | os.PathLike):
    """Read a surface mesh into a triangulated ``vtkPolyData``.

    Raises ``FileNotFoundError`` with the resolved path, or ``ValueError`` when the file
    holds no points.
    """
    from vtkmodules.vtkFiltersCore import vtkTriangleFilter
    from vtkmodules.vtkIOGeometry import vtkOBJReader, vtkSTLReader
    from vtkmodules.vtkIOLegacy import vtkPolyDataReader
    from vtkmodules.vtkIOPLY import vtkPLYReader
    from vtkmodules.vtkIOXML import vtkXMLPolyDataReader

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file not found: {path.resolve()}")
    suffix = path.suffix.lower()
    readers = {".vtk": vtkPolyDataReader, ".vtp": vtkXMLPolyDataReader, ".ply": vtkPLYReader,
               ".stl": vtkSTLReader, ".obj": vtkOBJReader}
    if suffix not in readers:
        raise ValueError(f"unknown mesh suffix {suffix!r} for {path}; use one of {MESH_SUFFIXES}")
    reader = readers[suffix]()
    if suffix == ".vtk":
        reader.ReadAllScalarsOn()
        reader.ReadAllVectorsOn()
    reader.SetFileName(str(path))
    reader.Update()
    poly = reader.GetOutput()
    if poly is None or poly.GetNumberOfPoints() == 0:
        raise ValueError(f"mesh file {path} holds no points")
    triangles = vtkTriangleFilter()
    triangles.SetInputData(poly)
    triangles.PassVertsOff()
    triangles.PassLinesOff()
    triangles.Update()
    out = triangles.GetOutput()
    return out if out.GetNumberOfPolys() > 0 else poly


def write_mesh(path: str | os.PathLike, mesh, *, point_arrays: dict | None = None) -> Path:
    """Write a ``vtkPolyData`` atomically; ``point_arrays`` adds per-vertex arrays.

    ``.vtk`` is written as binary legacy VTK, as ShapeWorks writes it.
    """
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkPolyData
    from vtkmodules.vtkIOGeometry import vtkOBJWriter, vtkSTLWriter
    from vtkmodules.vtkIOLegacy import vtkPolyDataWriter
    from vtkmodules.vtkIOPLY import vtkPLYWriter
    from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

    path = Path(path)
    suffix = path.suffix.lower()
    writers = {".vtk": vtkPolyDataWriter, ".vtp": vtkXMLPolyDataWriter, ".ply": vtkPLYWriter,
               ".stl": vtkSTLWriter, ".obj": vtkOBJWriter}
    if suffix not in writers:
        raise ValueError(f"unknown mesh suffix {suffix!r} for {path}; use one of {MESH_SUFFIXES}")
    if point_arrays:
        copy = vtkPolyData()
        copy.DeepCopy(mesh)
        mesh = copy
        for name, values in point_arrays.items():
            values = np.ascontiguousarray(values, dtype=np.float32)
            if values.shape[0] != mesh.GetNumberOfPoints():
                raise ValueError(f"array {name!r} has {values.shape[0]} values for "
                                 f"{mesh.GetNumberOfPoints()} vertices")
            array = numpy_to_vtk(values, deep=True)
            array.SetName(name)
            mesh.GetPointData().AddArray(array)
            if values.ndim == 1:
                mesh.GetPointData().SetActiveScalars(name)
    with atomic_path(path) as tmp:
        writer = writers[suffix]()
        writer.SetFileName(str(tmp))
        writer.SetInputData(mesh)
        if suffix == ".vtk":
            writer.SetFileTypeToBinary()
        if not writer.Write():
            raise OSError(f"VTK could not write {path}")
    return path


def mesh_to_arrays(mesh) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(vertices (V, 3) float64, faces (F, 3) int64)`` of a triangle mesh."""
    from vtkmodules.util.numpy_support import vtk_to_numpy

    vertices = vtk_to_numpy(mesh.GetPoints().GetData()).astype(float)
    polys = mesh.GetPolys()
    if polys.GetNumberOfCells() == 0:
        return vertices, np.zeros((0, 3), dtype=np.int64)
    offsets = vtk_to_numpy(polys.GetOffsetsArray())
    if not np.all(np.diff(offsets) == 3):
        raise ValueError("mesh has non-triangle cells; triangulate it first")
    faces = vtk_to_numpy(polys.GetConnectivityArray()).astype(np.int64).reshape(-1, 3)
    return vertices, faces


def arrays_to_mesh(vertices: np.ndarray, faces: np.ndarray):
    """Build a ``vtkPolyData`` from (V, 3) vertices and (F, 3) triangle indices."""
    from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData

    vertices = np.ascontiguousarray(vertices, dtype=float)
    faces = np.asarray(faces, dtype=np.int64)
    points = vtkPoints()
    points.SetData(numpy_to_vtk(vertices, deep=True))
    cells = vtkCellArray()
    offsets = np.arange(0, 3 * len(faces) + 1, 3, dtype=np.int64)
    cells.SetData(numpy_to_vtkIdTypeArray(offsets, deep=True),
                  numpy_to_vtkIdTypeArray(np.ascontiguousarray(faces.ravel()), deep=True))
    poly = vtkPolyData()
    poly.SetPoints(points)
    poly.SetPolys(cells)
    return poly


def transform_mesh(mesh, matrix: np.ndarray):
    """Return a copy of ``mesh`` with vertices mapped by a forward 4x4 transform."""
    from vtkmodules.vtkCommonDataModel import vtkPolyData

    from .transforms import apply_transform

    vertices, faces = mesh_to_arrays(mesh)
    out = vtkPolyData()
    out.DeepCopy(mesh)
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonCore import vtkPoints

    points = vtkPoints()
    points.SetData(numpy_to_vtk(np.ascontiguousarray(apply_transform(vertices, matrix)),
                                deep=True))
    out.SetPoints(points)
    return out
