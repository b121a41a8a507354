"""The common voxel grid of the training images, in the WORLD frame (mm).

A :class:`Grid` is axis-aligned (identity direction): voxel index ``(i, j, k)`` (array axes
``(X, Y, Z)``) sits at the world point ``origin + (i, j, k) * spacing``. It is built as the
box around all training world particles, padded by ``padding_mm`` on every side, so each
training shape lies inside it with a margin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Grid"]


@dataclass(frozen=True)
class Grid:
    """An axis-aligned voxel grid in the world frame.

    Attributes
    ----------
    origin : (3,) tuple of float
        World position (mm) of voxel ``(0, 0, 0)``'s centre.
    spacing : (3,) tuple of float
        Voxel size (mm) along X, Y and Z.
    size : (3,) tuple of int
        Number of voxels along X, Y and Z; arrays on the grid have shape ``size``.
    """

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    size: tuple[int, int, int]

    def __post_init__(self):
        origin = tuple(float(v) for v in np.ravel(self.origin))
        spacing = tuple(float(v) for v in np.ravel(self.spacing))
        size = tuple(int(v) for v in np.ravel(self.size))
        problems = []
        if len(origin) != 3 or not np.all(np.isfinite(origin)):
            problems.append(f"origin must be 3 finite numbers, got {self.origin!r}")
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            problems.append(f"spacing must be 3 positive numbers (mm), got {self.spacing!r}")
        if len(size) != 3 or not all(s >= 1 for s in size):
            problems.append(f"size must be 3 positive integers, got {self.size!r}")
        if problems:
            raise ValueError("invalid grid: " + "; ".join(problems))
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "size", size)

    # construction -----------------------------------------------------------------------

    @classmethod
    def around_points(cls, points_world: np.ndarray, *, spacing: float | Sequence[float] = 1.0,
                      padding_mm: float = 10.0, multiple_of: int = 1) -> Grid:
        """Build the grid around world points, padded on every side.

        Parameters
        ----------
        points_world : (..., 3) ndarray
            World points (mm), e.g. all training particles stacked ``(S, N, 3)``.
        spacing : float or (3,) sequence, default: 1.0
            Voxel size (mm).
        padding_mm : float, default: 10.0
            Margin (mm) added beyond the points' bounding box on every side.
        multiple_of : int, default: 1
            Round each size up to a multiple of this (e.g. 8 for a network that halves
            the grid three times). The box stays centred on the points.

        Returns
        -------
        Grid
            Covers ``[min - padding_mm, max + padding_mm]`` on every axis, centred on the
            points' bounding box.
        """
        points = np.asarray(points_world, dtype=float).reshape(-1, 3)
        if points.shape[0] == 0 or not np.all(np.isfinite(points)):
            raise ValueError("grid needs at least one finite point, got "
                             f"{points.shape[0]} points (NaN/Inf: "
                             f"{int((~np.isfinite(points)).any(axis=1).sum())})")
        spacing_xyz = np.broadcast_to(np.asarray(spacing, dtype=float), (3,)).copy()
        if not np.all(spacing_xyz > 0):
            raise ValueError(f"spacing must be positive (mm), got {spacing!r}")
        if padding_mm < 0:
            raise ValueError(f"padding_mm must be >= 0, got {padding_mm!r}")
        if int(multiple_of) < 1:
            raise ValueError(f"multiple_of must be >= 1, got {multiple_of!r}")
        low = points.min(axis=0) - padding_mm
        high = points.max(axis=0) + padding_mm
        size = np.ceil((high - low) / spacing_xyz - 1e-9).astype(int) + 1
        size = (np.ceil(size / int(multiple_of)) * int(multiple_of)).astype(int)
        centre = 0.5 * (low + high)
        origin = centre - 0.5 * (size - 1) * spacing_xyz
        return cls(tuple(origin), tuple(spacing_xyz), tuple(size))

    # geometry ---------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(X, Y, Z)`` of images on this grid (same as ``size``)."""
        return self.size

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.size))

    @property
    def low_world(self) -> np.ndarray:
        """(3,) world position (mm) of the first voxel centre."""
        return np.asarray(self.origin)

    @property
    def high_world(self) -> np.ndarray:
        """(3,) world position (mm) of the last voxel centre."""
        return np.asarray(self.origin) + (np.asarray(self.size) - 1) * np.asarray(self.spacing)

    @property
    def index_to_world(self) -> np.ndarray:
        """(4, 4) forward transform from continuous voxel index (i, j, k) to world mm."""
        matrix = np.diag([*self.spacing, 1.0])
        matrix[:3, 3] = self.origin
        return matrix

    def world_to_index(self, points_world: np.ndarray) -> np.ndarray:
        """(N, 3) world points (mm) to continuous voxel indices (i, j, k)."""
        points = np.asarray(points_world, dtype=float)
        return (points - np.asarray(self.origin)) / np.asarray(self.spacing)

    def index_to_world_points(self, indices: np.ndarray) -> np.ndarray:
        """(N, 3) continuous voxel indices (i, j, k) to world points (mm)."""
        indices = np.asarray(indices, dtype=float)
        return np.asarray(self.origin) + indices * np.asarray(self.spacing)

    def contains(self, points_world: np.ndarray, *, margin_mm: float = 0.0) -> np.ndarray:
        """(N,) bool: whether each world point lies at least ``margin_mm`` inside the grid."""
        points = np.asarray(points_world, dtype=float).reshape(-1, 3)
        return np.all((points >= self.low_world + margin_mm)
                      & (points <= self.high_world - margin_mm), axis=1)

    # serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain JSON-able dict: ``origin``, ``spacing``, ``size`` and ``direction``."""
        return {"origin": [float(v) for v in self.origin],
                "spacing": [float(v) for v in self.spacing],
                "size": [int(v) for v in self.size],
                "direction": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]}

    @classmethod
    def from_dict(cls, mapping: dict) -> Grid:
        """Inverse of :meth:`to_dict`; a non-identity ``direction`` is rejected."""
        direction = mapping.get("direction")
        if direction is not None and not np.allclose(np.asarray(direction, dtype=float),
                                                     np.eye(3).ravel()):
            raise ValueError(f"a Grid has an identity direction, got {direction!r}")
        try:
            return cls(tuple(mapping["origin"]), tuple(mapping["spacing"]),
                       tuple(mapping["size"]))
        except KeyError as err:
            raise ValueError(f"grid dict lacks {err.args[0]!r}: {mapping!r}") from err
