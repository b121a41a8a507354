"""Correspondence quality figures for a particle model on its surfaces.

- *surface distance*: how far each local particle lies from its groomed surface (mm);
- *prefix coverage*: for each nested prefix of the particle rows (e.g. the first 128,
  256, 512, 1024), the largest distance from a surface vertex to the nearest particle
  of the prefix (mm; small = the prefix covers the whole surface);
- *compactness*: number of PCA modes of the world particles needed for a fraction
  (default 95%) of the total variance.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "surface_distances",
    "prefix_coverage",
    "pca_compactness",
    "coincident_particles",
]


def surface_distances(particles: np.ndarray, vertices: np.ndarray, faces: np.ndarray
                      ) -> np.ndarray:
    """(N,) distances (mm) from particles to a triangle surface, both in one frame."""
    from .correspondence import snap_to_surface

    return snap_to_surface(particles, vertices, faces)[1]


def prefix_coverage(particles: np.ndarray, surface_points: np.ndarray,
                    sizes: list[int]) -> dict[int, float]:
    """Covering radius (mm) of each nested prefix of the particle rows.

    Parameters
    ----------
    particles : (N, 3) ndarray
        Particles, rows in nested order (mm).
    surface_points : (V, 3) ndarray
        Surface vertices in the particles' frame (mm).
    sizes : list of int
        Prefix lengths, each at most N.

    Returns
    -------
    dict
        ``{size: max over surface points of the distance to the nearest of the first
        size particles}``.
    """
    from scipy.spatial import cKDTree

    particles = np.asarray(particles, dtype=float)
    coverage = {}
    for size in sizes:
        if size > len(particles):
            raise ValueError(f"prefix of {size} rows asked of {len(particles)} particles")
        coverage[int(size)] = float(cKDTree(particles[:size]).query(surface_points)[0].max())
    return coverage


def pca_compactness(particles_world: np.ndarray, *, fraction: float = 0.95) -> dict:
    """PCA of (S, N, 3) world particles: modes for ``fraction`` of the variance.

    Returns
    -------
    dict
        ``modes`` (int), ``fraction`` (float), ``explained`` (list of the cumulative
        variance fractions of the first 20 modes).
    """
    shapes = np.asarray(particles_world, dtype=float).reshape(len(particles_world), -1)
    if len(shapes) < 2:
        return {"modes": 0, "fraction": fraction, "explained": []}
    centred = shapes - shapes.mean(axis=0)
    variances = np.linalg.svd(centred, compute_uv=False) ** 2
    cumulative = np.cumsum(variances) / variances.sum()
    modes = int(np.searchsorted(cumulative, fraction - 1e-12) + 1)
    return {"modes": modes, "fraction": fraction,
            "explained": [float(v) for v in cumulative[:20]]}


def coincident_particles(particles: np.ndarray, *, tolerance: float = 1e-3) -> int:
    """Number of particles closer than ``tolerance`` mm to another particle."""
    from scipy.spatial import cKDTree

    distances = cKDTree(particles).query(particles, k=2)[0][:, 1]
    return int((distances < tolerance).sum())
