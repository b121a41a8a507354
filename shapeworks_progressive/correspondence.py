"""A stand-in for the ShapeWorks particle optimizer: template registration + Procrustes.

**This is not ShapeWorks' entropy-based particle optimization.** It is used only when
the ``shapeworks`` Python module cannot be imported, to give a real project whose
particles are in good correspondence and in ShapeWorks' coarse-to-fine order:

1. Template particles are placed on the reference (medoid) surface in a *nested
   farthest-point order*: every prefix of the rows (the first 128, 256, 512, ...) is
   itself spread evenly over the surface, as ShapeWorks' particle splitting leaves the
   rows of a multiscale optimization.
2. The template is carried to every groomed shape in the aligned frame with
   deformable coherent point drift (CPD, ``pycpd``; Myronenko and Song 2010).
3. Every particle is snapped onto the subject's groomed surface (closest point,
   libigl), so the local particles lie exactly on the groomed mesh.
4. Generalized Procrustes analysis (rotation and translation; scaling off by default,
   as ShapeWorks' ``procrustes_scaling``) gives each subject's ``procrustes`` transform.

Frames (all mm): *local* = the groomed mesh's own coordinates (the subject's frame);
*aligned* = ``alignment @ local``; *world* = ``procrustes @ alignment @ local``.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = [
    "farthest_point_order",
    "template_particles",
    "deform_template",
    "snap_to_surface",
    "correspond_shape",
    "generalized_procrustes",
    "rigid_fit",
    "relax_on_surface",
]

logger = logging.getLogger(__name__)


def farthest_point_order(points: np.ndarray, count: int) -> np.ndarray:
    """Greedy farthest-point order of ``count`` rows of (V, 3) ``points``.

    The first row is the point farthest from the centroid; each next row is the point
    farthest (Euclidean) from all rows chosen so far. Any prefix of the order is
    therefore spread evenly: its covering radius is at most twice the best possible
    for that many points (Gonzalez 1985).

    Returns
    -------
    (count,) ndarray of int64
        Row indices into ``points``.
    """
    points = np.asarray(points, dtype=float)
    if count > len(points):
        raise ValueError(f"cannot pick {count} points from {len(points)}")
    order = np.empty(count, dtype=np.int64)
    order[0] = int(np.argmax(np.linalg.norm(points - points.mean(axis=0), axis=1)))
    nearest = np.linalg.norm(points - points[order[0]], axis=1)
    for k in range(1, count):
        order[k] = int(np.argmax(nearest))
        np.minimum(nearest, np.linalg.norm(points - points[order[k]], axis=1), out=nearest)
    return order


def _densify(vertices: np.ndarray, faces: np.ndarray, minimum: int) -> np.ndarray:
    """Surface points: the vertices plus triangle centroids/midpoints until >= minimum."""
    points = [np.asarray(vertices, dtype=float)]
    triangles = np.asarray(vertices, dtype=float)[np.asarray(faces)]
    total = len(vertices)
    if total < minimum:
        points.append(triangles.mean(axis=1))
        total += len(faces)
    if total < minimum:
        for a, b in ((0, 1), (1, 2), (2, 0)):
            points.append(0.5 * (triangles[:, a] + triangles[:, b]))
    return np.concatenate(points)


def template_particles(vertices: np.ndarray, faces: np.ndarray, count: int) -> np.ndarray:
    """(count, 3) particles on a surface in nested farthest-point order (mm).

    Candidates are the surface's vertices, densified with triangle centroids and edge
    midpoints when there are fewer than ``8 * count`` of them.
    """
    candidates = _densify(vertices, faces, 8 * count)
    return candidates[farthest_point_order(candidates, count)]


def _deformable_class():
    from pycpd import DeformableRegistration
    from scipy.spatial.distance import cdist

    class FastDeformableRegistration(DeformableRegistration):
        """pycpd's deformable CPD with O(M^2) matrix assembly (same equations).

        pycpd 2.0 builds ``diag(P1) @ G`` as a dense product (O(M^3)) and the E-step
        with an (M, N, D) temporary; both are replaced by equivalent cheaper forms.
        """

        def expectation(self):
            squared = cdist(self.TY, self.X, "sqeuclidean")
            c = (2 * np.pi * self.sigma2) ** (self.D / 2) * self.w / (1 - self.w)
            c = c * self.M / self.N
            kernel = np.exp(-squared / (2 * self.sigma2))
            denominator = kernel.sum(axis=0)
            denominator[denominator == 0] = np.finfo(float).eps
            self.P = kernel / (denominator + c)
            self.Pt1 = self.P.sum(axis=0)
            self.P1 = self.P.sum(axis=1)
            self.Np = self.P1.sum()

        def update_transform(self):
            a = self.P1[:, None] * self.G
            a[np.diag_indices_from(a)] += self.alpha * self.sigma2
            b = self.P @ self.X - self.P1[:, None] * self.Y
            self.W = np.linalg.solve(a, b)

    return FastDeformableRegistration


def deform_template(template_aligned: np.ndarray, target_points_aligned: np.ndarray, *,
                    control_points: int = 512, alpha: float = 1.0, beta: float = 1.0,
                    max_iterations: int = 80, tolerance: float = 1e-5) -> np.ndarray:
    """Carry template particles onto a target point cloud with deformable CPD.

    Both clouds are expressed in the aligned frame (mm). They are centred on the
    target's centroid and divided by the template's RMS radius, so ``alpha`` (smoothness
    weight) and ``beta`` (Gaussian kernel width) are in units of the shape's size.
    CPD is solved for the first ``control_points`` template rows (an even subset, by
    the nested order), and its smooth displacement field is applied to all rows.

    Parameters
    ----------
    template_aligned : (N, 3) ndarray
        Template particles, nested order, aligned frame (mm).
    target_points_aligned : (T, 3) ndarray
        Points of the target surface, aligned frame (mm).

    Returns
    -------
    (N, 3) ndarray
        Deformed template, aligned frame (mm), rows in template order.
    """
    template_aligned = np.asarray(template_aligned, dtype=float)
    target = np.asarray(target_points_aligned, dtype=float)
    centre = target.mean(axis=0)
    scale = float(np.sqrt(((template_aligned - template_aligned.mean(axis=0)) ** 2)
                          .sum(axis=1).mean()))
    source = (template_aligned - centre) / scale
    target = (target - centre) / scale
    control = source[: min(control_points, len(source))]
    registration = _deformable_class()(X=target, Y=control, alpha=alpha, beta=beta,
                                       max_iterations=max_iterations, tolerance=tolerance)
    registration.register()
    squared = ((source[:, None, :] - control[None, :, :]) ** 2).sum(axis=2)
    kernel = np.exp(-squared / (2 * beta ** 2))
    deformed = source + kernel @ registration.W
    return deformed * scale + centre


def snap_to_surface(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Closest points on a triangle surface (libigl), and the distances moved (mm).

    Returns
    -------
    snapped : (N, 3) ndarray
        Closest surface points, in the surface's frame.
    distances : (N,) ndarray
        Distance from each input point to its closest surface point (mm).
    """
    import igl

    squared, _, closest = igl.point_mesh_squared_distance(
        np.ascontiguousarray(points, dtype=float), np.ascontiguousarray(vertices, dtype=float),
        np.ascontiguousarray(faces, dtype=np.int64))
    return np.asarray(closest), np.sqrt(np.asarray(squared))


def correspond_shape(template_aligned: np.ndarray, vertices_local: np.ndarray,
                     faces: np.ndarray, alignment: np.ndarray, *, target_points: int = 1500,
                     seed: int = 0, control_points: int = 512, alpha: float = 1.0,
                     beta: float = 1.0, max_iterations: int = 80,
                     relax_iterations: int = 10) -> dict:
    """Particles of one groomed shape, in its local frame, from the template.

    Parameters
    ----------
    template_aligned : (N, 3) ndarray
        Template particles in the aligned frame (mm), nested order.
    vertices_local, faces : (V, 3) ndarray, (F, 3) ndarray
        The groomed surface in its own (local) frame (mm).
    alignment : (4, 4) ndarray
        Forward transform local -> aligned frame.
    target_points : int, default: 1500
        Surface vertices sampled (seeded) as the CPD target.

    Returns
    -------
    dict
        ``particles_local`` (N, 3) on the groomed surface, ``particles_aligned``
        (N, 3) = alignment @ local, and ``snap_distance_mean`` / ``snap_distance_max``
        (mm, how far CPD's result was from the surface).
    """
    from .transforms import apply_transform

    vertices_local = np.asarray(vertices_local, dtype=float)
    vertices_aligned = apply_transform(vertices_local, alignment)
    rng = np.random.default_rng(seed)
    if len(vertices_aligned) > target_points:
        rows = np.sort(rng.choice(len(vertices_aligned), size=target_points, replace=False))
        target = vertices_aligned[rows]
    else:
        target = vertices_aligned
    deformed_aligned = deform_template(template_aligned, target, control_points=control_points,
                                       alpha=alpha, beta=beta, max_iterations=max_iterations)
    deformed_local = apply_transform(deformed_aligned, alignment, inverse=True)
    particles_local, moved = snap_to_surface(deformed_local, vertices_local, faces)
    if relax_iterations > 0:
        particles_local = relax_on_surface(particles_local, vertices_local, faces,
                                           iterations=relax_iterations)
    return {
        "particles_local": particles_local,
        "particles_aligned": apply_transform(particles_local, alignment),
        "snap_distance_mean": float(moved.mean()),
        "snap_distance_max": float(moved.max()),
    }


def rigid_fit(source: np.ndarray, target: np.ndarray, *, scaling: bool = False
              ) -> np.ndarray:
    """(4, 4) least-squares similarity/rigid transform mapping (N, 3) source onto target.

    Kabsch/Umeyama: rotation (no reflection) and translation, plus an isotropic scale
    when ``scaling`` is true.
    """
    source = np.asarray(source, dtype=float)
    target = np.asarray(target, dtype=float)
    source_centre = source.mean(axis=0)
    target_centre = target.mean(axis=0)
    a = source - source_centre
    b = target - target_centre
    u, singular, vt = np.linalg.svd(a.T @ b)
    sign = np.sign(np.linalg.det(u @ vt)) or 1.0
    correction = np.diag([1.0, 1.0, sign])
    rotation = (u @ correction @ vt).T
    scale = 1.0
    if scaling:
        scale = float((singular * np.diag(correction)).sum() / (a ** 2).sum())
    matrix = np.eye(4)
    matrix[:3, :3] = scale * rotation
    matrix[:3, 3] = target_centre - matrix[:3, :3] @ source_centre
    return matrix


def generalized_procrustes(particles_aligned: np.ndarray, *, scaling: bool = False,
                           iterations: int = 20, tolerance: float = 1e-6
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Generalized Procrustes analysis of corresponding particle sets.

    Parameters
    ----------
    particles_aligned : (S, N, 3) ndarray
        Every subject's particles in the aligned frame (mm), rows in correspondence.
    scaling : bool, default: False
        Also fit an isotropic scale (ShapeWorks' ``procrustes_scaling``).

    Returns
    -------
    procrustes : (S, 4, 4) ndarray
        Forward transforms aligned frame -> world frame.
    mean_world : (N, 3) ndarray
        The Procrustes mean shape (mm). Its centroid is kept at the aligned frame's
        mean centroid and its orientation at that of the first iteration's mean, so
        world stays close to the aligned frame.
    """
    from .transforms import apply_transform

    particles_aligned = np.asarray(particles_aligned, dtype=float)
    mean = particles_aligned.mean(axis=0)
    transforms = np.tile(np.eye(4), (len(particles_aligned), 1, 1))
    for _ in range(iterations):
        transforms = np.stack([rigid_fit(p, mean, scaling=scaling) for p in particles_aligned])
        moved = np.stack([apply_transform(p, t) for p, t in zip(particles_aligned, transforms)])
        new_mean = moved.mean(axis=0)
        if scaling:
            new_mean *= np.sqrt((mean ** 2).sum() / (new_mean ** 2).sum())
        change = float(np.abs(new_mean - mean).max())
        mean = new_mean
        if change < tolerance:
            break
    return transforms, mean


def relax_on_surface(particles: np.ndarray, vertices: np.ndarray, faces: np.ndarray, *,
                     iterations: int = 30, step: float = 0.3, neighbours: int = 8
                     ) -> np.ndarray:
    """Spread particles more evenly over a surface by tangential Gaussian repulsion.

    A light stand-in for the sampling term of ShapeWorks' optimizer: each particle is
    pushed away from its ``neighbours`` nearest particles (Gaussian weights, width the
    mean nearest-neighbour spacing), the push is projected onto the surface's tangent
    plane, limited to ``step`` times the spacing, and the particle is snapped back onto
    the surface. Correspondence is kept because particles move by less than their
    spacing.

    Parameters
    ----------
    particles : (N, 3) ndarray
        Particles on (or near) the surface, in the surface's frame (mm).
    vertices, faces : (V, 3) ndarray, (F, 3) ndarray
        The surface.

    Returns
    -------
    (N, 3) ndarray
        Relaxed particles, on the surface (mm).
    """
    import igl
    from scipy.spatial import cKDTree

    vertices = np.ascontiguousarray(vertices, dtype=float)
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    triangles = vertices[faces]
    face_normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    face_normals /= np.maximum(np.linalg.norm(face_normals, axis=1, keepdims=True), 1e-12)
    points = np.ascontiguousarray(particles, dtype=float)
    _, face_index, points = igl.point_mesh_squared_distance(points, vertices, faces)
    for _ in range(iterations):
        distances, rows = cKDTree(points).query(points, k=neighbours + 1)
        distances, rows = distances[:, 1:], rows[:, 1:]
        spacing = float(distances[:, 0].mean())
        weights = np.exp(-(distances / spacing) ** 2)
        offsets = points[:, None, :] - points[rows]
        # coincident particles (snapped onto one vertex) push apart along a fixed direction
        coincident = distances < 1e-6 * spacing
        if coincident.any():
            sign = np.where(rows > np.arange(len(points))[:, None], 1.0, -1.0)
            offsets[coincident] = (sign[coincident, None] * 0.5 * spacing
                                   * np.array([0.577, 0.577, 0.577]))
        push = (offsets * weights[..., None]).sum(axis=1)
        normal = face_normals[face_index]
        push -= (push * normal).sum(axis=1, keepdims=True) * normal
        length = np.linalg.norm(push, axis=1, keepdims=True)
        push *= np.minimum(1.0, step * spacing / np.maximum(length, 1e-12))
        _, face_index, points = igl.point_mesh_squared_distance(points + push, vertices,
                                                                faces)
    return np.asarray(points)
