"""Tiny synthetic training data for the training tests: ellipsoid images with particles.

Each subject is an axis-aligned ellipsoid with random semi-axes centred in a small grid.
Its particles are fixed directions on the unit sphere, in a nested farthest-point order,
scaled by the semi-axes, so every prefix is a coarser scale of the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Split:
    """The fields of ``dataset.SplitData`` the trainer reads."""

    names: list
    images: np.ndarray           # (S, X, Y, Z) float32
    segmentations: np.ndarray    # (S, X, Y, Z) uint8
    particles_world: np.ndarray  # (S, N, 3) float32, mm


@dataclass
class Grid:
    origin: tuple
    spacing: tuple
    size: tuple


def farthest_point_directions(num_points: int, seed: int = 0) -> np.ndarray:
    """(N, 3) unit vectors in farthest-point order (each prefix spreads evenly)."""
    rng = np.random.default_rng(seed)
    candidates = rng.normal(size=(40 * num_points, 3))
    candidates /= np.linalg.norm(candidates, axis=1, keepdims=True)
    chosen = [0]
    distance = np.linalg.norm(candidates - candidates[0], axis=1)
    for _ in range(num_points - 1):
        chosen.append(int(distance.argmax()))
        distance = np.minimum(distance, np.linalg.norm(candidates - candidates[chosen[-1]], axis=1))
    return candidates[chosen]


def make_split(num_subjects: int, *, size=(12, 14, 10), spacing=2.0, num_points=16,
               seed: int = 0) -> tuple[Split, Grid]:
    """Ellipsoids with semi-axes 5-9 mm on a grid of ``size`` voxels of ``spacing`` mm."""
    rng = np.random.default_rng(seed)
    grid = Grid(origin=(0.0, 0.0, 0.0), spacing=(spacing,) * 3, size=tuple(size))
    centre = np.array([(n - 1) * spacing / 2 for n in size])
    axes_x, axes_y, axes_z = np.meshgrid(*[np.arange(n) * spacing for n in size], indexing="ij")
    coords = np.stack([axes_x, axes_y, axes_z], axis=-1) - centre
    directions = farthest_point_directions(num_points)
    images, segs, particles = [], [], []
    for _ in range(num_subjects):
        semi_axes = rng.uniform(5.0, 9.0, size=3)
        radius = np.sqrt(((coords / semi_axes) ** 2).sum(-1))
        inside = radius <= 1.0
        images.append((1.0 / (1.0 + np.exp((radius - 1.0) * 8)) +
                       0.05 * rng.normal(size=radius.shape)).astype(np.float32))
        segs.append(inside.astype(np.uint8))
        particles.append((centre + directions * semi_axes).astype(np.float32))
    split = Split(names=[f"ell{i}" for i in range(num_subjects)], images=np.stack(images),
                  segmentations=np.stack(segs), particles_world=np.stack(particles))
    return split, grid
