"""Dense surfaces from correspondence particles by warping a template mesh.

This follows ShapeWorks' ``MeshWarper`` (``Libs/Mesh/MeshWarper.cpp``):

1. **Clean the template**: triangulate, keep the largest connected region, merge duplicate
   points. We also drop zero-area triangles (which would give infinite cotangent weights
   and NaN vertices) and vertices no triangle uses.
2. **Embed the template particles as vertices**: each particle's closest point on the
   surface splits its triangle into three, or, when it lies on an edge (a barycentric
   weight below 0.01), the edge's triangles into two each; a particle at a vertex (a
   weight above 0.99) is left to that vertex. A particle whose triangle was already split
   in the current pass waits for the next pass, as in ShapeWorks.
3. **Good particles**: every particle snaps to its nearest vertex; particles that share a
   vertex are all dropped (duplicate particles end up here), and the same mask applies to
   every particle set warped later.
4. **Biharmonic coordinates** ``W = igl.biharmonic_coordinates(V, F, S, k=2)`` with the
   good particles' vertices as point handles: ``W`` is ``(n_vertices, n_good)``.

A shape is then ``W @ particles[good]`` (``method="shapeworks"``, exactly ShapeWorks).
The default, ``method="displacement"``, adds the template's detail back:
``V + W @ (particles[good] - template_particles[good])``. Both interpolate the particles
at the handle vertices; the displacement form also returns the template exactly for the
template's own particles, where the ShapeWorks form smooths it (by up to 1.7 mm on the
left-atrium example). For the other left-atrium subjects both forms are about equally far
from the true surfaces (symmetric mean 0.78-0.83 mm, world frame, template LA_04).
Warp particles in the same frame as the template: world particles with
:meth:`MeshWarper.from_project` (the template is mapped to world).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from .errors import MeshWarpError, ProjectError
from .meshes import is_mesh_path

__all__ = ["MeshWarper", "clean_template", "embed_particles", "image_isosurface",
           "WARP_METHODS"]

logger = logging.getLogger(__name__)

WARP_METHODS = ("displacement", "shapeworks")

# Barycentric weight thresholds of ShapeWorks' particle embedding.
_AT_VERTEX = 0.99
_ON_EDGE = 0.01
# A triangle whose area is below this fraction of the mean area counts as degenerate.
_DEGENERATE_AREA = 1e-10


def _triangle_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def _largest_component(vertices: np.ndarray, faces: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Keep the faces of the largest vertex-connected region; drop unused vertices."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(vertices)
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    face_labels = labels[faces[:, 0]]
    largest = np.bincount(face_labels).argmax()
    faces = faces[face_labels == largest]
    used = np.unique(faces)
    remap = np.full(n, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces]


def clean_template(mesh) -> tuple[np.ndarray, np.ndarray]:
    """Clean a template surface as ShapeWorks' MeshWarper does, and drop degenerate faces.

    Parameters
    ----------
    mesh : vtkPolyData or tuple of ((V, 3) ndarray, (F, 3) ndarray)
        The template surface (mm).

    Returns
    -------
    vertices : (V', 3) float64 ndarray
    faces : (F', 3) int64 ndarray
        Triangles of the largest connected region, duplicate points merged, no triangle
        with a repeated vertex or (near) zero area, no unused vertex.
    """
    from vtkmodules.vtkFiltersCore import (vtkCleanPolyData, vtkPolyDataConnectivityFilter,
                                           vtkTriangleFilter)

    from .meshes import arrays_to_mesh, mesh_to_arrays

    if isinstance(mesh, tuple):
        mesh = arrays_to_mesh(*mesh)
    triangles = vtkTriangleFilter()
    triangles.SetInputData(mesh)
    triangles.PassVertsOff()
    triangles.PassLinesOff()
    connectivity = vtkPolyDataConnectivityFilter()
    connectivity.SetInputConnection(triangles.GetOutputPort())
    connectivity.SetExtractionModeToLargestRegion()
    clean = vtkCleanPolyData()
    clean.SetInputConnection(connectivity.GetOutputPort())
    clean.PointMergingOn()
    clean.SetTolerance(0.0)
    clean.ConvertPolysToLinesOff()
    clean.ConvertLinesToPointsOff()
    clean.ConvertStripsToPolysOff()
    clean.Update()
    vertices, faces = mesh_to_arrays(_only_triangles(clean.GetOutput()))
    if len(faces) == 0:
        raise MeshWarpError("the template mesh has no triangles")

    # Degenerate triangles (repeated vertex or zero area) give infinite cotangent weights.
    repeated = ((faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2])
                | (faces[:, 0] == faces[:, 2]))
    areas = _triangle_areas(vertices, faces)
    degenerate = repeated | ~(areas > _DEGENERATE_AREA * max(areas.mean(), 1e-300))
    if degenerate.any():
        logger.info("template mesh: dropping %d degenerate triangle(s)", int(degenerate.sum()))
        faces = faces[~degenerate]
    if len(faces) == 0:
        raise MeshWarpError("every triangle of the template mesh is degenerate")
    return _largest_component(vertices, faces)


def _only_triangles(poly):
    """Drop non-triangle polygons (a cleaned triangle can become a line or a point)."""
    from vtkmodules.vtkFiltersCore import vtkTriangleFilter

    tri = vtkTriangleFilter()
    tri.SetInputData(poly)
    tri.PassVertsOff()
    tri.PassLinesOff()
    tri.Update()
    return tri.GetOutput()


def _barycentric(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Barycentric weights (n, 3) of points in their triangles (clipped to >= 0)."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    v0, v1, v2 = b - a, c - a, points - a
    d00 = np.einsum("ij,ij->i", v0, v0)
    d01 = np.einsum("ij,ij->i", v0, v1)
    d11 = np.einsum("ij,ij->i", v1, v1)
    d20 = np.einsum("ij,ij->i", v2, v0)
    d21 = np.einsum("ij,ij->i", v2, v1)
    denom = d00 * d11 - d01 * d01
    denom = np.where(np.abs(denom) > 0, denom, 1.0)
    w1 = (d11 * d20 - d01 * d21) / denom
    w2 = (d00 * d21 - d01 * d20) / denom
    weights = np.clip(np.stack([1.0 - w1 - w2, w1, w2], axis=1), 0.0, None)
    return weights / weights.sum(axis=1, keepdims=True)


def embed_particles(vertices: np.ndarray, faces: np.ndarray, particles: np.ndarray,
                    *, max_passes: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Insert particles into a triangle mesh as vertices by splitting triangles/edges.

    Parameters
    ----------
    vertices : (V, 3) ndarray
    faces : (F, 3) int ndarray
    particles : (N, 3) ndarray
        Points on (or near) the surface, same frame as ``vertices`` (mm).
    max_passes : int, default: 50
        Passes before giving up; each pass splits every triangle at most once.

    Returns
    -------
    vertices : (V + k, 3) ndarray
        The old vertices followed by the ``k`` inserted points (the particles' closest
        points on the surface).
    faces : (F + 2k', 3) int64 ndarray
        Triangles with the same orientation as their parents.
    """
    import igl

    vertices = np.asarray(vertices, dtype=float)
    faces = np.asarray(faces, dtype=np.int64)
    remaining = np.arange(len(particles))
    for _ in range(max_passes):
        if len(remaining) == 0:
            break
        _, face_ids, closest = igl.point_mesh_squared_distance(
            np.ascontiguousarray(particles[remaining], dtype=float), vertices, faces)
        face_ids = np.asarray(face_ids, dtype=np.int64).ravel()
        weights = _barycentric(closest, vertices, faces[face_ids])
        edge_faces: dict[tuple[int, int], list[int]] = defaultdict(list)
        for f, tri in enumerate(faces):
            for k in range(3):
                a, b = int(tri[k]), int(tri[(k + 1) % 3])
                edge_faces[(min(a, b), max(a, b))].append(f)
        touched = np.zeros(len(faces), dtype=bool)
        new_vertices: list[np.ndarray] = []
        new_faces: list[np.ndarray] = []
        deferred = []
        for j, (f, w, point) in enumerate(zip(face_ids, weights, closest)):
            if w.max() > _AT_VERTEX:
                continue
            tri = faces[f]
            if w.min() < _ON_EDGE:
                k = int(w.argmin())
                a, b = int(tri[(k + 1) % 3]), int(tri[(k + 2) % 3])
                split = edge_faces[(min(a, b), max(a, b))]
                w = w.copy()
                w[k] = 0.0
                point = (w / w.sum()) @ vertices[tri]
                replaced = (a, b)
            else:
                split = [int(f)]
                replaced = tuple(int(v) for v in tri)
            if touched[split].any():
                deferred.append(remaining[j])
                continue
            p = len(vertices) + len(new_vertices)
            new_vertices.append(point)
            touched[split] = True
            for g in split:
                for v in replaced:
                    if v in faces[g]:
                        child = faces[g].copy()
                        child[child == v] = p
                        new_faces.append(child)
        if new_vertices:
            vertices = np.vstack([vertices, np.asarray(new_vertices)])
            faces = np.vstack([faces[~touched], np.asarray(new_faces, dtype=np.int64)])
        remaining = np.asarray(deferred, dtype=np.int64)
    else:
        if len(remaining):
            raise MeshWarpError(f"{len(remaining)} template particle(s) could not be embedded "
                                f"in the template mesh after {max_passes} passes")
    return vertices, faces


class MeshWarper:
    """Biharmonic warp of a template mesh by correspondence particles.

    Parameters
    ----------
    template_mesh : vtkPolyData or tuple of ((V, 3) ndarray, (F, 3) ndarray)
        The template surface (mm), e.g. the reference subject's groomed mesh.
    template_particles : (N, 3) ndarray
        The template's particles on that surface, same frame (mm).
    method : {"displacement", "shapeworks"}, default: "displacement"
        ``"shapeworks"``: ``W @ P[good]``; ``"displacement"``:
        ``V + W @ (P[good] - template_particles[good])``.

    Attributes
    ----------
    vertices : (V, 3) ndarray
        Cleaned template vertices with the particles embedded.
    faces : (F, 3) int64 ndarray
        Triangles shared by every warped mesh.
    good : (N,) bool ndarray
        Particles used as handles; the others (sharing a vertex) are ignored.
    handles : (n_good,) int64 ndarray
        Vertex index of each good particle.
    weights : (V, n_good) ndarray
        Biharmonic coordinates; rows sum to 1.

    Raises
    ------
    MeshWarpError
        The template has no usable triangle, no good particle, or gives NaN weights.
    """

    def __init__(self, template_mesh, template_particles: np.ndarray, *,
                 method: str = "displacement"):
        import igl
        from scipy.spatial import cKDTree

        if method not in WARP_METHODS:
            raise ValueError(f"unknown warp method {method!r}; use one of {WARP_METHODS}")
        self.method = method
        template_particles = np.asarray(template_particles, dtype=float)
        if template_particles.ndim != 2 or template_particles.shape[1] != 3:
            raise MeshWarpError(f"template particles must be (N, 3), got "
                                f"{template_particles.shape}")
        if not np.all(np.isfinite(template_particles)):
            raise MeshWarpError("template particles hold NaN or Inf")
        self.template_particles = template_particles

        # Steps 1-2: clean the template and embed its particles as vertices.
        vertices, faces = clean_template(template_mesh)
        vertices, faces = embed_particles(vertices, faces, template_particles)
        self.vertices, self.faces = vertices, faces

        # Step 3: good particles own their nearest vertex alone.
        _, nearest = cKDTree(vertices).query(template_particles)
        counts = np.bincount(nearest, minlength=len(vertices))
        self.good = counts[nearest] == 1
        if not self.good.any():
            raise MeshWarpError("no template particle has a vertex of its own; are all "
                                "template particles the same point?")
        if not self.good.all():
            logger.info("mesh warp: %d of %d template particles share a vertex and are "
                        "ignored", int((~self.good).sum()), len(self.good))
        self.handles = nearest[self.good].astype(np.int64)

        # Step 4: biharmonic coordinates with the good particles as point handles.
        weights = igl.biharmonic_coordinates(vertices, faces,
                                             [[int(h)] for h in self.handles], 2)
        weights = np.asarray(weights, dtype=float)
        if not np.all(np.isfinite(weights)):
            raise MeshWarpError("biharmonic coordinates of the template hold NaN or Inf")
        self.weights = weights
        self._detail = vertices - weights @ template_particles[self.good]

    @classmethod
    def from_project(cls, project, *, rows: np.ndarray | None = None, frame: str = "world",
                     domain_index: int = 0, method: str = "displacement") -> MeshWarper:
        """Template = the reference subject's groomed mesh and local particles.

        Parameters
        ----------
        project : Project
        rows : (n,) int ndarray, optional
            Template particle rows to use, in this order (e.g. ``particle_order[:128]``
            for a coarse scale). All rows when omitted.
        frame : {"world", "local"}, default: "world"
            ``"world"`` maps the template mesh and particles by the reference subject's
            ``procrustes @ alignment``, so that world particles can be warped.
        domain_index : int, default: 0
        method : {"displacement", "shapeworks"}, default: "displacement"
        """
        from .meshes import read_mesh
        from .particles import read_particles
        from .transforms import apply_transform

        if frame not in ("world", "local"):
            raise ValueError(f"unknown frame {frame!r}; use 'world' or 'local'")
        index = project.reference_index
        if index is None:
            index = 0
            logger.info("project has no alignment_reference_chosen; template = first subject")
        subject = project.subjects[index]
        groomed = subject.groomed[domain_index] if subject.groomed else None
        local = (subject.local_particles[domain_index] if subject.local_particles else None)
        if groomed is None or local is None or not Path(groomed).is_file():
            message = (f"the template subject {subject.name!r} (row {index}) of "
                       f"{project.path} needs a groomed file and local particles; got "
                       f"groomed={groomed}, local_particles={local}")
            raise ProjectError(message)
        mesh = read_mesh(groomed) if is_mesh_path(groomed) else image_isosurface(groomed)
        particles = read_particles(local)
        if rows is not None:
            particles = particles[np.asarray(rows, dtype=np.int64)]
        if frame == "world":
            from .meshes import transform_mesh

            matrix = subject.world_transform(domain_index)
            mesh = transform_mesh(mesh, matrix)
            particles = apply_transform(particles, matrix)
        return cls(mesh, particles, method=method)

    @property
    def n_particles(self) -> int:
        """Number of particles a shape must have."""
        return len(self.template_particles)

    def warp(self, particles: np.ndarray) -> np.ndarray:
        """Vertices (V, 3) of the template warped to ``particles`` (N, 3), same frame."""
        particles = np.asarray(particles, dtype=float)
        if particles.shape != self.template_particles.shape:
            raise MeshWarpError(f"particles have shape {particles.shape}; the warp needs "
                                f"{self.template_particles.shape}")
        if not np.all(np.isfinite(particles)):
            raise MeshWarpError("particles to warp hold NaN or Inf")
        vertices = self.weights @ particles[self.good]
        if self.method == "displacement":
            vertices = vertices + self._detail
        if not np.all(np.isfinite(vertices)):
            raise MeshWarpError("the warped mesh has NaN vertices")
        return vertices

    def build_mesh(self, particles: np.ndarray):
        """The warped surface as a ``vtkPolyData`` (same triangles for every shape)."""
        from .meshes import arrays_to_mesh

        return arrays_to_mesh(self.warp(particles), self.faces)

    def template_mesh(self):
        """The cleaned template with embedded particles as a ``vtkPolyData``."""
        from .meshes import arrays_to_mesh

        return arrays_to_mesh(self.vertices, self.faces)


def image_isosurface(path: str | os.PathLike, level: float = 0.0):
    """Iso-surface of a groomed image (distance transform: ``level`` 0) in its physical frame.

    Parameters
    ----------
    path : path-like
        Image file (e.g. ShapeWorks' ``*_DT.nrrd``); any direction and spacing.
    level : float, default: 0.0
        Iso value; 0 is the surface of a signed distance transform whatever its sign
        convention.

    Returns
    -------
    vtkPolyData
        Triangle surface, vertices in the image's physical (ITK, LPS) frame (mm).
    """
    import SimpleITK as sitk
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkFiltersCore import vtkFlyingEdges3D

    from .meshes import arrays_to_mesh, mesh_to_arrays
    from .segmentation import index_to_world_matrix
    from .transforms import apply_transform

    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    array_xyz = np.transpose(sitk.GetArrayViewFromImage(image), (2, 1, 0))
    grid = vtkImageData()
    grid.SetDimensions(*array_xyz.shape)
    grid.GetPointData().SetScalars(
        numpy_to_vtk(np.ascontiguousarray(array_xyz).ravel(order="F"), deep=True))
    contour = vtkFlyingEdges3D()
    contour.SetInputData(grid)
    contour.SetValue(0, float(level))
    contour.ComputeNormalsOff()
    contour.ComputeGradientsOff()
    contour.ComputeScalarsOff()
    contour.Update()
    vertices_index, faces = mesh_to_arrays(contour.GetOutput())
    if len(faces) == 0:
        raise MeshWarpError(f"the image {path} has no iso-surface at {level}")
    index_to_world = index_to_world_matrix(image)
    if np.linalg.det(index_to_world[:3, :3]) < 0:
        faces = faces[:, ::-1]
    return arrays_to_mesh(apply_transform(vertices_index, index_to_world), faces)


