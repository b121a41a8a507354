"""Particle scales (coarse to fine) and the particle order that makes them nested.

Scale ``s`` predicts the first ``scale_sizes[s]`` particles of the *model order*; the
finest scale holds all of them. Two orders are possible:

- **The project's own order**, when it is nested. ShapeWorks' optimizer splits every
  particle into two and appends the children (index ``N + i`` is the child of ``i``), so
  the first ``2^k`` rows of a final particle file are the particles of an earlier scale,
  spread over the whole shape.
- **A farthest-point order** computed on the mean training shape, when the project's
  order is not nested (e.g. particles from registration-based initialisation, or rows
  sorted by position): every prefix of a farthest-point order is spread over the shape.

Rule for "nested" (:func:`prefix_coverage_ratios`): a prefix of ``n`` particles *covers*
the mean shape with the mean distance from every particle to its nearest prefix
particle. The project's order counts as nested when, at every scale below the finest,
this distance is at most ``NESTED_COVERAGE_RATIO`` (1.5) times the one of the
farthest-point prefix of the same size. On ShapeWorks' example projects (left atrium,
ellipsoid; 128 particles) the split order gives ratios 1.02-1.20, while rows sorted by
one coordinate give 2.2-3.2. A random order also passes (1.04-1.24): its prefixes are
spread as evenly, which is what a coarse scale needs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from .errors import ConfigError

__all__ = [
    "NESTED_COVERAGE_RATIO",
    "default_scale_sizes",
    "validate_scale_sizes",
    "farthest_point_order",
    "prefix_coverage_ratios",
    "choose_particle_order",
]

logger = logging.getLogger(__name__)

NESTED_COVERAGE_RATIO = 1.5


def default_scale_sizes(n_particles: int, n_scales: int = 4) -> list[int]:
    """Default scales: halving from the particle count, ``n_scales`` of them.

    ``1024 -> [128, 256, 512, 1024]``; ``100 -> [12, 25, 50, 100]`` (rounded). Fewer
    scales come back when the count is too small to halve that often (``4 -> [1, 2, 4]``).
    """
    n_particles, n_scales = int(n_particles), int(n_scales)
    if n_particles < 1 or n_scales < 1:
        raise ValueError(f"need n_particles >= 1 and n_scales >= 1, got {n_particles} "
                         f"and {n_scales}")
    sizes = {max(1, int(round(n_particles / 2 ** k))) for k in range(n_scales)}
    return sorted(sizes)


def validate_scale_sizes(scale_sizes: Sequence | None, n_particles: int) -> list[int]:
    """Check a user's ``--scales`` list; ``None`` gives :func:`default_scale_sizes`.

    Rules: positive integers, strictly increasing, the last equal to the project's
    particle count (the finest scale predicts every particle).

    Raises
    ------
    ConfigError
        Listing every problem at once.
    """
    if scale_sizes is None:
        return default_scale_sizes(n_particles)
    if isinstance(scale_sizes, str):
        scale_sizes = scale_sizes.replace(",", " ").split()
    problems = []
    sizes = []
    for value in scale_sizes:
        try:
            number = float(value)
        except (TypeError, ValueError):
            problems.append(f"scale {value!r} is not a number")
            continue
        if not number.is_integer() or number < 1:
            problems.append(f"scale {value!r} is not a positive whole number of particles")
            continue
        sizes.append(int(number))
    if not sizes and not problems:
        problems.append("scales list is empty; give e.g. 128 256 512 1024")
    if any(b <= a for a, b in zip(sizes, sizes[1:])):
        problems.append(f"scales {sizes} must be strictly increasing (coarse to fine)")
    if sizes and sizes[-1] != n_particles:
        problems.append(f"the last scale is {sizes[-1]} but the project has {n_particles} "
                        f"particles per shape; end the scales with {n_particles}")
    if problems:
        raise ConfigError(problems)
    return sizes


def farthest_point_order(points: np.ndarray, *, start: int | None = None) -> np.ndarray:
    """Farthest-point order of (N, 3) points; every prefix is spread over them.

    Parameters
    ----------
    points : (N, 3) ndarray
        E.g. the mean training shape in world mm.
    start : int, optional
        First point; default the point nearest the centroid (deterministic).

    Returns
    -------
    (N,) ndarray of int64
        A permutation of ``range(N)``.
    """
    points = np.asarray(points, dtype=float)
    n = len(points)
    if start is None:
        start = int(np.argmin(np.linalg.norm(points - points.mean(axis=0), axis=1)))
    order = np.empty(n, dtype=np.int64)
    order[0] = start
    distance = np.linalg.norm(points - points[start], axis=1)
    for i in range(1, n):
        nxt = int(np.argmax(distance))
        order[i] = nxt
        distance = np.minimum(distance, np.linalg.norm(points - points[nxt], axis=1))
    return order


def _mean_coverage(points: np.ndarray, prefix: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(points[prefix]).query(points)
    return float(np.mean(distances))


def prefix_coverage_ratios(points: np.ndarray, order: np.ndarray,
                           scale_sizes: Sequence[int]) -> dict[int, float]:
    """Coverage of each prefix of ``order`` relative to a farthest-point prefix.

    Returns ``{n: mean_nn(order[:n]) / mean_nn(fps[:n])}`` for each scale size below N,
    where ``mean_nn(P)`` is the mean distance (mm) from every point to its nearest point
    of ``P``. 1.0 means as even as farthest-point sampling.
    """
    points = np.asarray(points, dtype=float)
    order = np.asarray(order, dtype=np.int64)
    fps = farthest_point_order(points)
    ratios = {}
    for n in scale_sizes:
        if n >= len(points):
            continue
        reference = _mean_coverage(points, fps[:n])
        value = _mean_coverage(points, order[:n])
        ratios[int(n)] = value / reference if reference > 0 else 1.0
    return ratios


def choose_particle_order(mean_shape_world: np.ndarray, scale_sizes: Sequence[int], *,
                          max_ratio: float = NESTED_COVERAGE_RATIO
                          ) -> tuple[np.ndarray, bool, dict[int, float]]:
    """The model's particle order: the project's own if nested, else farthest-point.

    Parameters
    ----------
    mean_shape_world : (N, 3) ndarray
        Mean training world particles (mm), project order.
    scale_sizes : sequence of int
        Validated scales (see :func:`validate_scale_sizes`).

    Returns
    -------
    order : (N,) ndarray of int64
        Model row ``r`` is project row ``order[r]``.
    nested : bool
        Whether the project's own order was kept.
    ratios : dict
        The project order's coverage ratios per scale (see :func:`prefix_coverage_ratios`).
    """
    points = np.asarray(mean_shape_world, dtype=float)
    identity = np.arange(len(points), dtype=np.int64)
    ratios = prefix_coverage_ratios(points, identity, scale_sizes)
    nested = all(r <= max_ratio for r in ratios.values())
    summary = ", ".join(f"{n}: {r:.2f}" for n, r in ratios.items())
    if nested:
        logger.info("particle order is nested (coverage ratios %s); keeping it", summary)
        return identity, True, ratios
    logger.info("particle order is not nested (coverage ratios %s > %.2f); using a "
                "farthest-point order on the mean training shape", summary, max_ratio)
    return farthest_point_order(points), False, ratios
