"""Grooming: centre of mass, medoid reference and rigid ICP alignment of surfaces.

This reproduces what ShapeWorks' Groom does for meshes with ``alignment_method:
Iterative Closest Point``: every shape is translated so that its centre of mass sits
at the origin, then rigidly aligned (ICP) to one reference shape, the medoid of the
set. The groomed surface itself stays in the subject's own frame; only the forward
transform ``alignment`` (subject frame -> aligned frame, mm) is stored, as ShapeWorks
stores ``alignment_<d>``.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = [
    "surface_center_of_mass",
    "translation_matrix",
    "subsample_points",
    "chamfer_distance",
    "select_medoid",
    "rigid_icp",
    "alignment_transform",
]

logger = logging.getLogger(__name__)


def surface_center_of_mass(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted centroid (3,) of a triangle surface, in the vertices' frame (mm).

    Weighting by triangle area makes it independent of how densely the surface is
    meshed.
    """
    vertices = np.asarray(vertices, dtype=float)
    triangles = vertices[np.asarray(faces)]
    areas = 0.5 * np.linalg.norm(np.cross(triangles[:, 1] - triangles[:, 0],
                                          triangles[:, 2] - triangles[:, 0]), axis=1)
    if areas.sum() <= 0:
        return vertices.mean(axis=0)
    return (triangles.mean(axis=1) * areas[:, None]).sum(axis=0) / areas.sum()


def translation_matrix(offset: np.ndarray) -> np.ndarray:
    """(4, 4) forward transform that adds ``offset`` (3,) mm to every point."""
    matrix = np.eye(4)
    matrix[:3, 3] = np.asarray(offset, dtype=float)
    return matrix


def subsample_points(points: np.ndarray, count: int, *, rng: np.random.Generator
                     ) -> np.ndarray:
    """Random subset of at most ``count`` rows of (V, 3) ``points`` (no replacement)."""
    points = np.asarray(points, dtype=float)
    if len(points) <= count:
        return points.copy()
    return points[np.sort(rng.choice(len(points), size=count, replace=False))]


def chamfer_distance(points_a: np.ndarray, points_b: np.ndarray) -> float:
    """Symmetric mean closest-point distance (mm) between two (N, 3) point clouds."""
    from scipy.spatial import cKDTree

    distance_ab = cKDTree(points_b).query(points_a)[0]
    distance_ba = cKDTree(points_a).query(points_b)[0]
    return float(0.5 * (distance_ab.mean() + distance_ba.mean()))


def select_medoid(point_clouds: list[np.ndarray]) -> tuple[int, np.ndarray]:
    """Index of the medoid shape: least summed chamfer distance to all the others.

    Parameters
    ----------
    point_clouds : list of (n_i, 3) ndarray
        Cheap subsampled surface points of each shape, already centred on their
        centres of mass (mm); the comparison is translation-only, which suits
        shapes imaged in one orientation, as the hippocampus crops are.

    Returns
    -------
    index : int
        Position of the medoid in ``point_clouds``.
    distances : (S, S) ndarray
        Symmetric matrix of pairwise chamfer distances (mm).
    """
    from scipy.spatial import cKDTree

    count = len(point_clouds)
    if count == 0:
        raise ValueError("select_medoid needs at least one shape")
    trees = [cKDTree(points) for points in point_clouds]
    one_way = np.zeros((count, count))
    for i in range(count):
        for j in range(count):
            if i != j:
                one_way[i, j] = trees[j].query(point_clouds[i])[0].mean()
    distances = 0.5 * (one_way + one_way.T)
    return int(np.argmin(distances.sum(axis=1))), distances


def rigid_icp(source_points: np.ndarray, target_mesh, *, iterations: int = 100,
              landmarks: int = 1000) -> np.ndarray:
    """Rigid ICP (VTK) of (N, 3) points onto a target surface.

    Parameters
    ----------
    source_points : (N, 3) ndarray
        Moving points (mm), roughly pre-aligned (e.g. both centred).
    target_mesh : vtkPolyData
        Fixed surface (mm).
    iterations : int, default: 100
        Maximum ICP iterations.
    landmarks : int, default: 1000
        Source points used per iteration.

    Returns
    -------
    (4, 4) ndarray
        Forward rigid transform (rotation + translation) mapping the source onto the
        target.
    """
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkPolyData
    from vtkmodules.vtkFiltersGeneral import vtkVertexGlyphFilter
    from vtkmodules.vtkCommonDataModel import vtkIterativeClosestPointTransform

    points = vtkPoints()
    points.SetData(numpy_to_vtk(np.ascontiguousarray(source_points, dtype=float), deep=True))
    cloud = vtkPolyData()
    cloud.SetPoints(points)
    vertices = vtkVertexGlyphFilter()
    vertices.SetInputData(cloud)
    vertices.Update()

    icp = vtkIterativeClosestPointTransform()
    icp.SetSource(vertices.GetOutput())
    icp.SetTarget(target_mesh)
    icp.GetLandmarkTransform().SetModeToRigidBody()
    icp.SetMaximumNumberOfIterations(iterations)
    icp.SetMaximumNumberOfLandmarks(landmarks)
    icp.StartByMatchingCentroidsOff()
    icp.CheckMeanDistanceOn()
    icp.SetMeanDistanceModeToRMS()
    icp.SetMaximumMeanDistance(1e-4)
    icp.Modified()
    icp.Update()
    matrix = icp.GetMatrix()
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def alignment_transform(vertices: np.ndarray, faces: np.ndarray, reference_mesh_aligned, *,
                        iterations: int = 50, landmarks: int = 500) -> np.ndarray:
    """Forward alignment (4, 4): subject frame -> aligned frame, centring then ICP.

    Parameters
    ----------
    vertices, faces : (V, 3) ndarray, (F, 3) ndarray
        The subject's groomed surface in its own frame (mm).
    reference_mesh_aligned : vtkPolyData
        The reference surface already in the aligned frame (the medoid, centred).
    iterations, landmarks : int, default: 50, 500
        ICP iterations and source points per iteration (see :func:`rigid_icp`).

    Returns
    -------
    (4, 4) ndarray
        ``icp @ translation(-centre_of_mass)``, a rigid forward transform.
    """
    centering = translation_matrix(-surface_center_of_mass(vertices, faces))
    centred = np.asarray(vertices, dtype=float) + centering[:3, 3]
    icp = rigid_icp(centred, reference_mesh_aligned, iterations=iterations,
                    landmarks=landmarks)
    return icp @ centering
