"""Principal component analysis of training world particles.

The PCA is the shape space of the original DeepSSM: the network predicts *whitened* PCA
scores, a linear decoder initialised from the mean and the modes maps them back to
particles, and the augmentation samplers draw new shapes in the same whitened space.

Everything here is plain numpy and JSON/npz-able, so a PCA can be stored beside a run
and rebuilt exactly. Compared with ShapeWorks' ``PCA_Embbeder``:

* the covariance is normalised by ``1 / (M - 1)`` (ShapeWorks uses ``1 / sqrt(M - 1)``,
  which distorts the eigenvalues);
* only modes with non-zero variance are kept (at most ``M - 1`` for ``M`` shapes);
* the sign of each mode is fixed (largest-magnitude coefficient positive), so two fits on
  the same data agree to the last bit regardless of the LAPACK build.

Flattening convention: an ``(N, 3)`` particle array becomes a ``3N`` vector row-major,
``x0 y0 z0 x1 y1 z1 ...``, as in ShapeWorks' ``pcamode{i}.particles``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import numpy as np

from .errors import ParticleFileError, ShapeWorksInputError
from .fileio import atomic_path

__all__ = ["ParticlePCA", "fit_pca", "num_modes_for_fraction"]

logger = logging.getLogger(__name__)


def num_modes_for_fraction(variances: np.ndarray, fraction: float) -> int:
    """Smallest number of leading modes whose variance reaches ``fraction`` of the total.

    Parameters
    ----------
    variances : (K,) ndarray
        Mode variances (mm^2), in descending order.
    fraction : float
        Wanted fraction of the total variance, in ``(0, 1]``.

    Returns
    -------
    int
        At least 1 and at most ``K``.
    """
    variances = np.asarray(variances, dtype=np.float64)
    if not 0.0 < fraction <= 1.0:
        raise ShapeWorksInputError(
            f"variance fraction must be in (0, 1], got {fraction!r}")
    if variances.size == 0:
        raise ShapeWorksInputError("no PCA modes: the training shapes are all identical")
    cumulative = np.cumsum(variances) / variances.sum()
    # A small tolerance so that fraction=1.0 is reached despite rounding.
    count = int(np.searchsorted(cumulative, fraction - 1e-12) + 1)
    return min(count, variances.size)


@dataclass(frozen=True)
class ParticlePCA:
    """A linear shape space fitted to training world particles.

    Attributes
    ----------
    mean_world : (N, 3) ndarray
        Mean training shape, world frame, mm.
    modes : (K, 3N) ndarray
        Orthonormal principal directions (rows), flattened row-major ``x, y, z`` per
        particle; descending variance.
    variances : (K,) ndarray
        Variance of the training shapes along each mode, mm^2 (eigenvalues of the
        ``1 / (M - 1)`` covariance).
    score_mean : (K,) ndarray
        Mean of the scores used for whitening (mm). Zero for the fitted training shapes;
        set by :meth:`with_whitening` when augmented shapes join the training set.
    score_std : (K,) ndarray
        Standard deviation used for whitening (mm); ``sqrt(variances)`` after a fit.
    total_variance : float
        Sum of the variances of all non-zero modes before truncation (mm^2), so that
        :meth:`explained_fraction` stays meaningful after :meth:`truncate`.
    num_shapes : int
        Number of training shapes the PCA was fitted to.
    """

    mean_world: np.ndarray
    modes: np.ndarray
    variances: np.ndarray
    score_mean: np.ndarray
    score_std: np.ndarray
    total_variance: float
    num_shapes: int

    def __post_init__(self):
        k, n3 = self.modes.shape
        if self.mean_world.shape != (n3 // 3, 3) or n3 % 3:
            raise ShapeWorksInputError(
                f"PCA mean shape {self.mean_world.shape} does not match modes of length {n3}")
        for name in ("variances", "score_mean", "score_std"):
            if getattr(self, name).shape != (k,):
                raise ShapeWorksInputError(
                    f"PCA {name} has shape {getattr(self, name).shape}, expected ({k},)")
        if np.any(self.score_std <= 0):
            raise ShapeWorksInputError("PCA whitening std must be positive for every mode")

    # Sizes ---------------------------------------------------------------------------
    @property
    def num_particles(self) -> int:
        return self.mean_world.shape[0]

    @property
    def num_modes(self) -> int:
        return self.modes.shape[0]

    def explained_fraction(self) -> np.ndarray:
        """Cumulative fraction of the total variance explained by the first k modes, (K,)."""
        return np.cumsum(self.variances) / self.total_variance

    # Projections ---------------------------------------------------------------------
    def project(self, particles_world: np.ndarray) -> np.ndarray:
        """PCA scores (mm) of shapes.

        Parameters
        ----------
        particles_world : (N, 3) or (M, N, 3) ndarray
            World particles, mm, in the PCA's particle order.

        Returns
        -------
        (K,) or (M, K) ndarray
        """
        particles_world = np.asarray(particles_world, dtype=np.float64)
        single = particles_world.ndim == 2
        batch = particles_world[None] if single else particles_world
        if batch.shape[1:] != self.mean_world.shape:
            raise ParticleFileError(
                f"particles of shape {particles_world.shape} do not match the PCA's "
                f"{self.num_particles} particles")
        centred = (batch - self.mean_world).reshape(len(batch), -1)
        scores = centred @ self.modes.T
        return scores[0] if single else scores

    def reconstruct(self, scores: np.ndarray) -> np.ndarray:
        """World particles (mm) from PCA scores (mm).

        Parameters
        ----------
        scores : (K,) or (M, K) ndarray

        Returns
        -------
        (N, 3) or (M, N, 3) ndarray
        """
        scores = np.asarray(scores, dtype=np.float64)
        single = scores.ndim == 1
        batch = scores[None] if single else scores
        if batch.shape[1] != self.num_modes:
            raise ShapeWorksInputError(
                f"got {batch.shape[1]} scores per shape, the PCA has {self.num_modes} modes")
        particles = (batch @ self.modes).reshape(len(batch), self.num_particles, 3)
        particles += self.mean_world
        return particles[0] if single else particles

    def whiten(self, scores: np.ndarray) -> np.ndarray:
        """``(scores - score_mean) / score_std``; any leading shape, last axis K."""
        return (np.asarray(scores, dtype=np.float64) - self.score_mean) / self.score_std

    def unwhiten(self, scores_whitened: np.ndarray) -> np.ndarray:
        """``scores_whitened * score_std + score_mean``; any leading shape, last axis K."""
        return np.asarray(scores_whitened, dtype=np.float64) * self.score_std + self.score_mean

    # Derived PCAs --------------------------------------------------------------------
    def truncate(self, num_modes: int) -> ParticlePCA:
        """The same PCA keeping only the first ``num_modes`` modes."""
        if not 1 <= num_modes <= self.num_modes:
            raise ShapeWorksInputError(
                f"cannot keep {num_modes} modes of a PCA with {self.num_modes}")
        return ParticlePCA(
            mean_world=self.mean_world, modes=self.modes[:num_modes],
            variances=self.variances[:num_modes], score_mean=self.score_mean[:num_modes],
            score_std=self.score_std[:num_modes], total_variance=self.total_variance,
            num_shapes=self.num_shapes)

    def with_whitening(self, scores: np.ndarray) -> ParticlePCA:
        """The same PCA whitened with the mean and std (ddof=1) of ``scores`` (M, K).

        ShapeWorks whitens with the statistics of all training rows, real and augmented;
        use this after augmentation to do the same.
        """
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 2 or scores.shape[1] != self.num_modes or len(scores) < 2:
            raise ShapeWorksInputError(
                f"whitening needs (M >= 2, {self.num_modes}) scores, got {scores.shape}")
        std = scores.std(axis=0, ddof=1)
        return ParticlePCA(
            mean_world=self.mean_world, modes=self.modes, variances=self.variances,
            score_mean=scores.mean(axis=0), score_std=np.where(std > 0, std, 1.0),
            total_variance=self.total_variance, num_shapes=self.num_shapes)

    # Storage -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-able description (nested lists of floats)."""
        return {
            "mean_world": self.mean_world.tolist(),
            "modes": self.modes.tolist(),
            "variances": self.variances.tolist(),
            "score_mean": self.score_mean.tolist(),
            "score_std": self.score_std.tolist(),
            "total_variance": float(self.total_variance),
            "num_shapes": int(self.num_shapes),
        }

    @classmethod
    def from_dict(cls, mapping: dict) -> ParticlePCA:
        """Inverse of :meth:`to_dict` (also accepts arrays instead of lists)."""
        arrays = {key: np.asarray(mapping[key], dtype=np.float64)
                  for key in ("mean_world", "modes", "variances", "score_mean", "score_std")}
        if arrays["modes"].ndim == 1:  # a single mode stored as a flat list
            arrays["modes"] = arrays["modes"][None]
        return cls(**arrays, total_variance=float(mapping["total_variance"]),
                   num_shapes=int(mapping["num_shapes"]))

    def save(self, path: str | os.PathLike) -> None:
        """Write an ``.npz`` (arrays only, no pickle), atomically."""
        mapping = self.to_dict()
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as stream:
                np.savez(stream, **{key: np.asarray(value) for key, value in mapping.items()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> ParticlePCA:
        """Read a PCA written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as stored:
            return cls.from_dict({key: stored[key] for key in stored.files})

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def fit_pca(particles_world: np.ndarray, *, variance_fraction: float | None = 0.95,
            num_modes: int | None = None) -> ParticlePCA:
    """Fit a PCA to training world particles.

    Parameters
    ----------
    particles_world : (M, N, 3) ndarray
        Training shapes, world frame, mm, all in the same particle order. Only training
        subjects should be passed: the PCA defines the model's shape space.
    variance_fraction : float or None, default: 0.95
        Keep the fewest modes explaining this fraction of the variance. Ignored when
        ``num_modes`` is given; None keeps every non-zero mode.
    num_modes : int, optional
        Keep exactly this many modes (at most the number of non-zero modes).

    Returns
    -------
    ParticlePCA
        Whitened with the training scores' own mean (zero) and std (``sqrt`` variance).

    Raises
    ------
    ShapeWorksInputError
        Fewer than two shapes, non-finite values, or all shapes identical.
    """
    particles_world = np.asarray(particles_world, dtype=np.float64)
    if particles_world.ndim != 3 or particles_world.shape[2] != 3:
        raise ParticleFileError(
            f"PCA needs particles of shape (M, N, 3), got {particles_world.shape}")
    num_shapes = len(particles_world)
    if num_shapes < 2:
        raise ShapeWorksInputError(f"PCA needs at least 2 training shapes, got {num_shapes}")
    if not np.all(np.isfinite(particles_world)):
        bad = sorted({int(i) for i in np.argwhere(~np.isfinite(particles_world))[:, 0]})
        raise ParticleFileError(f"training shapes {bad} hold NaN or Inf particles")

    # Thin SVD of the centred data matrix (M x 3N): the compact route, O(M^2 N).
    mean_world = particles_world.mean(axis=0)
    centred = (particles_world - mean_world).reshape(num_shapes, -1)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    variances = singular ** 2 / (num_shapes - 1)
    keep = variances > variances[0] * 1e-10 if variances[0] > 0 else variances > 0
    variances, vt = variances[keep], vt[keep]
    if variances.size == 0:
        raise ShapeWorksInputError("no PCA modes: the training shapes are all identical")
    total_variance = float(variances.sum())

    # Deterministic signs: the largest-magnitude coefficient of each mode is positive.
    pivots = np.argmax(np.abs(vt), axis=1)
    vt = vt * np.sign(vt[np.arange(len(vt)), pivots])[:, None]

    if num_modes is not None:
        if not 1 <= num_modes <= len(variances):
            raise ShapeWorksInputError(
                f"asked for {num_modes} PCA modes; {num_shapes} training shapes give "
                f"{len(variances)} non-zero modes")
        count = num_modes
    elif variance_fraction is not None:
        count = num_modes_for_fraction(variances, variance_fraction)
    else:
        count = len(variances)
    logger.info("PCA of %d shapes: %d of %d modes kept (%.1f%% of the variance)",
                num_shapes, count, len(variances),
                100.0 * variances[:count].sum() / total_variance)
    std = np.sqrt(variances[:count])
    return ParticlePCA(mean_world=mean_world, modes=vt[:count], variances=variances[:count],
                       score_mean=np.zeros(count), score_std=std,
                       total_variance=total_variance, num_shapes=num_shapes)
