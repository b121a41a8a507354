"""Surface-to-surface distances (mm) and the Dice overlap of label arrays.

Distances follow ShapeWorks' ``Mesh::distance(target, PointToCell)``: for every vertex of
the source mesh, the exact distance to the closest point on the target's triangles
(``vtkStaticCellLocator``). It is one-directional and unsigned; :func:`surface_distances`
computes both directions and the usual summaries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["point_to_cell_distance", "surface_distances", "SurfaceDistances", "dice"]


def point_to_cell_distance(points: np.ndarray, target_mesh) -> np.ndarray:
    """Distance (mm) from each point to the closest point on a target surface.

    Parameters
    ----------
    points : (N, 3) ndarray
        Query points, same frame as the target (mm).
    target_mesh : vtkPolyData
        Target surface (its cells: triangles, or any VTK cells).

    Returns
    -------
    (N,) float64 ndarray
        Unsigned point-to-cell distances (mm).
    """
    from vtkmodules.vtkCommonCore import mutable
    from vtkmodules.vtkCommonDataModel import vtkGenericCell, vtkStaticCellLocator

    points = np.asarray(points, dtype=float)
    if target_mesh.GetNumberOfCells() == 0:
        raise ValueError("the target mesh has no cells to measure a distance to")
    locator = vtkStaticCellLocator()
    locator.SetDataSet(target_mesh)
    locator.BuildLocator()
    closest = [0.0, 0.0, 0.0]
    cell = vtkGenericCell()
    cell_id, sub_id, dist2 = mutable(0), mutable(0), mutable(0.0)
    out = np.empty(len(points))
    for i, p in enumerate(points):
        locator.FindClosestPoint(p.tolist(), closest, cell, cell_id, sub_id, dist2)
        out[i] = float(dist2)
    return np.sqrt(out)


@dataclass(frozen=True)
class SurfaceDistances:
    """Distances between two surfaces A and B (mm).

    Attributes
    ----------
    a_to_b : (Va,) ndarray
        Per vertex of A, distance to surface B.
    b_to_a : (Vb,) ndarray
        Per vertex of B, distance to surface A.
    mean_a_to_b, mean_b_to_a : float
    symmetric_mean : float
        ``(mean_a_to_b + mean_b_to_a) / 2``, ShapeWorks DeepSSM's test distance.
    p95 : float
        95th percentile of all per-vertex distances of both directions pooled.
    hausdorff : float
        Largest distance of either direction.
    """

    a_to_b: np.ndarray
    b_to_a: np.ndarray

    @property
    def mean_a_to_b(self) -> float:
        return float(np.mean(self.a_to_b))

    @property
    def mean_b_to_a(self) -> float:
        return float(np.mean(self.b_to_a))

    @property
    def symmetric_mean(self) -> float:
        return 0.5 * (self.mean_a_to_b + self.mean_b_to_a)

    @property
    def p95(self) -> float:
        return float(np.percentile(np.concatenate([self.a_to_b, self.b_to_a]), 95))

    @property
    def hausdorff(self) -> float:
        return float(max(self.a_to_b.max(), self.b_to_a.max()))

    def summary(self) -> dict[str, float]:
        """The scalar summaries as a plain dict (mm)."""
        return {"mean_a_to_b": self.mean_a_to_b, "mean_b_to_a": self.mean_b_to_a,
                "symmetric_mean": self.symmetric_mean, "p95": self.p95,
                "hausdorff": self.hausdorff}

    to_dict = summary

    def __repr__(self) -> str:  # arrays would flood logs
        return "SurfaceDistances(" + ", ".join(
            f"{k}={v:.4f}" for k, v in self.summary().items()) + ")"



def surface_distances(mesh_a, mesh_b) -> SurfaceDistances:
    """Point-to-cell distances in both directions between two surfaces (same frame, mm)."""
    from vtkmodules.util.numpy_support import vtk_to_numpy

    points_a = vtk_to_numpy(mesh_a.GetPoints().GetData()).astype(float)
    points_b = vtk_to_numpy(mesh_b.GetPoints().GetData()).astype(float)
    return SurfaceDistances(a_to_b=point_to_cell_distance(points_a, mesh_b),
                            b_to_a=point_to_cell_distance(points_b, mesh_a))


def dice(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """Dice overlap ``2|A & B| / (|A| + |B|)`` of two label arrays (non-zero = inside).

    Both empty gives 1.0. The arrays must have the same shape (same voxel grid).
    """
    a = np.asarray(labels_a) != 0
    b = np.asarray(labels_b) != 0
    if a.shape != b.shape:
        raise ValueError(f"label arrays differ in shape: {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total
