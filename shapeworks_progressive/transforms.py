"""4x4 transforms as ShapeWorks stores them, and the local/world particle frames.

ShapeWorks writes transforms as 16 numbers, the row-major 4x4 matrix ``M`` of a
*forward* point transform: ``p' = M @ [p, 1]`` (VTK layout, translation at indices 3, 7
and 11). The frames of one domain of one subject are related by::

    particles_world = procrustes @ alignment @ particles_local

``particles_local`` lie on the groomed surface (the groomed file's coordinates) and
``particles_world`` in the shared shape space. All coordinates are in mm.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "IDENTITY",
    "parse_transform",
    "format_transform",
    "apply_transform",
    "local_to_world",
    "world_to_local",
    "local_to_world_matrix",
]

IDENTITY = np.eye(4)


def parse_transform(text: str | None) -> np.ndarray:
    """Parse a ShapeWorks transform string into a (4, 4) float64 matrix.

    16 numbers are the row-major matrix. A 12-number (ITK parameter) form keeps only its
    translation (indices 9 to 11), as ShapeWorks does. An empty string or ``None`` is the
    identity. Any other count raises ``ValueError``, unlike ShapeWorks, which silently
    takes the identity: a wrong transform would move every particle.
    """
    if text is None or not str(text).strip():
        return IDENTITY.copy()
    try:
        values = [float(v) for v in str(text).split()]
    except ValueError as err:
        message = f"transform {text!r} holds a value that is not a number"
        raise ValueError(message) from err
    if len(values) == 16:
        matrix = np.asarray(values, dtype=float).reshape(4, 4)
    elif len(values) == 12:
        matrix = IDENTITY.copy()
        matrix[:3, 3] = values[9:12]
    else:
        message = f"transform {text!r} has {len(values)} numbers; expected 16 (row-major 4x4)"
        raise ValueError(message)
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"transform {text!r} holds NaN or Inf")
    return matrix


def format_transform(matrix: np.ndarray) -> str:
    """Format a (4, 4) matrix as ShapeWorks' 16 row-major numbers, six decimals."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (4, 4):
        raise ValueError(f"a transform must be (4, 4), got {matrix.shape}")
    return " ".join(f"{v:.6f}" for v in matrix.ravel())


def apply_transform(points: np.ndarray, matrix: np.ndarray, *, inverse: bool = False) -> np.ndarray:
    """Map (N, 3) points through a forward 4x4 transform (or its inverse)."""
    points = np.asarray(points, dtype=float)
    matrix = np.asarray(matrix, dtype=float)
    if inverse:
        matrix = np.linalg.inv(matrix)
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def local_to_world_matrix(alignment: np.ndarray | None, procrustes: np.ndarray | None
                          ) -> np.ndarray:
    """Return ``procrustes @ alignment``; ``None`` stands for the identity."""
    a = IDENTITY if alignment is None else np.asarray(alignment, dtype=float)
    p = IDENTITY if procrustes is None else np.asarray(procrustes, dtype=float)
    return p @ a


def local_to_world(particles_local: np.ndarray, alignment: np.ndarray | None,
                   procrustes: np.ndarray | None) -> np.ndarray:
    """(N, 3) local particles to world: ``procrustes @ alignment @ local``."""
    return apply_transform(particles_local, local_to_world_matrix(alignment, procrustes))


def world_to_local(particles_world: np.ndarray, alignment: np.ndarray | None,
                   procrustes: np.ndarray | None) -> np.ndarray:
    """(N, 3) world particles to local: ``inv(procrustes @ alignment) @ world``."""
    return apply_transform(particles_world, local_to_world_matrix(alignment, procrustes),
                           inverse=True)
