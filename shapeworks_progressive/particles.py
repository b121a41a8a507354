"""Reading and writing ShapeWorks particle files.

Two formats, chosen by suffix:

- ``.particles``: plain text, one particle per line ``x y z``, no header. The line
  order is the correspondence index.
- ``.vtk``: legacy VTK PolyData holding only points (``particle_format: vtk``).

Coordinates are in mm, in whatever frame the file is in (local or world).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from .errors import ParticleFileError
from .fileio import atomic_path, atomic_write_text

__all__ = ["read_particles", "write_particles", "PARTICLE_SUFFIXES"]

PARTICLE_SUFFIXES = (".particles", ".vtk")


def read_particles(path: str | os.PathLike) -> np.ndarray:
    """Read a particle file into an (N, 3) float64 array (mm).

    Raises
    ------
    FileNotFoundError
        The file does not exist (the message holds the resolved path).
    ParticleFileError
        The file is empty, its number count is not a multiple of 3, or it holds
        something that is not a number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"particle file not found: {path.resolve()}")
    if path.suffix.lower() == ".vtk":
        points = _read_vtk_points(path)
    else:
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            values = np.array(text.split(), dtype=float)
        except ValueError as err:
            message = f"particle file {path} holds a value that is not a number"
            raise ParticleFileError(message) from err
        if values.size % 3:
            message = (f"particle file {path} holds {values.size} numbers, "
                       "which is not a multiple of 3 (x y z per particle)")
            raise ParticleFileError(message)
        points = values.reshape(-1, 3)
    if points.shape[0] == 0:
        raise ParticleFileError(f"particle file {path} is empty")
    return points


def write_particles(path: str | os.PathLike, particles: np.ndarray) -> Path:
    """Write (N, 3) particles atomically, as text or points-only VTK by suffix.

    Text files get one ``x y z`` line per particle with 6 decimals (micrometre
    resolution for mm coordinates), which ShapeWorks reads.
    """
    path = Path(path)
    particles = np.asarray(particles, dtype=float)
    if particles.ndim != 2 or particles.shape[1] != 3:
        raise ValueError(f"particles must be (N, 3), got {particles.shape} for {path}")
    if not np.all(np.isfinite(particles)):
        raise ParticleFileError(f"refusing to write NaN or Inf particles to {path}")
    if path.suffix.lower() == ".vtk":
        _write_vtk_points(path, particles)
        return path
    buffer = io.StringIO()
    np.savetxt(buffer, particles, fmt="%.6f")
    return atomic_write_text(path, buffer.getvalue())


def _read_vtk_points(path: Path) -> np.ndarray:
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkIOLegacy import vtkPolyDataReader

    reader = vtkPolyDataReader()
    reader.SetFileName(str(path))
    reader.Update()
    poly = reader.GetOutput()
    if poly is None or poly.GetPoints() is None:
        return np.zeros((0, 3))
    return vtk_to_numpy(poly.GetPoints().GetData()).astype(float).reshape(-1, 3)


def _write_vtk_points(path: Path, particles: np.ndarray) -> None:
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkPolyData
    from vtkmodules.vtkIOLegacy import vtkPolyDataWriter

    points = vtkPoints()
    points.SetData(numpy_to_vtk(np.ascontiguousarray(particles), deep=True))
    poly = vtkPolyData()
    poly.SetPoints(points)
    with atomic_path(path) as tmp:
        writer = vtkPolyDataWriter()
        writer.SetFileName(str(tmp))
        writer.SetInputData(poly)
        if not writer.Write():
            raise OSError(f"VTK could not write {path}")
