"""Robust intensity normalization for MRI and CT, fitted on training images only.

The scheme has two steps:

1. **Per image, robust rescaling.** Voxels are clipped to the image's own
   ``[lower_percentile, upper_percentile]`` percentiles (default 0.5 and 99.5) and mapped
   linearly so that these percentiles become 0 and 1. This removes the arbitrary scale of
   MRI (the hippocampus crops range from 1e2 to 1e6, uint8 and float32 alike) and the
   outliers of CT (metal, air), whatever the pixel type.
2. **Global z-score fitted on the training images.** The mean and standard deviation of
   all rescaled training voxels are fitted once (:meth:`IntensityNormalization.fit`) and
   then applied to every image, so the network sees zero-mean, unit-variance input. The
   validation and test images never influence these numbers.

Why not a single global mean/std as the original DeepSSM? Because it is dominated by the
brightest scans when scales differ by orders of magnitude, and recomputed per split
upstream. Why not fixed HU windows for CT? They fail for MRI; percentiles work for both.

Everything stored is a plain number (:meth:`to_dict`). A constant image (or an empty
percentile range) is mapped to 0 before the z-score, and a constant training set gives a
standard deviation of 1, so the output is never NaN.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["IntensityNormalization"]

_MIN_STD = 1e-6


@dataclass(frozen=True)
class IntensityNormalization:
    """Per-image percentile rescaling followed by a training-fitted z-score.

    Attributes
    ----------
    lower_percentile, upper_percentile : float
        Per-image clip percentiles, in [0, 100].
    mean, std : float
        Mean and standard deviation of the rescaled training voxels.
    """

    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self):
        problems = []
        if not 0.0 <= self.lower_percentile < self.upper_percentile <= 100.0:
            problems.append("need 0 <= lower_percentile < upper_percentile <= 100, got "
                            f"{self.lower_percentile!r} and {self.upper_percentile!r}")
        if not np.isfinite(self.mean):
            problems.append(f"mean must be finite, got {self.mean!r}")
        if not (np.isfinite(self.std) and self.std > 0):
            problems.append(f"std must be finite and > 0, got {self.std!r}")
        if problems:
            raise ValueError("invalid intensity normalization: " + "; ".join(problems))

    # fitting ----------------------------------------------------------------------------

    @classmethod
    def fit(cls, training_arrays: Iterable[np.ndarray], *, lower_percentile: float = 0.5,
            upper_percentile: float = 99.5) -> IntensityNormalization:
        """Fit the global mean and std on training images (any shapes, raw intensities).

        Parameters
        ----------
        training_arrays : iterable of ndarray
            Raw training images, e.g. ``(X, Y, Z)`` arrays on the grid. Only these images
            determine the fitted numbers.
        lower_percentile, upper_percentile : float
            Per-image clip percentiles.
        """
        unfitted = cls(lower_percentile, upper_percentile)
        count, total, total_sq = 0, 0.0, 0.0
        for array in training_arrays:
            rescaled = unfitted.rescale(array).astype(np.float64)
            count += rescaled.size
            total += float(rescaled.sum())
            total_sq += float(np.square(rescaled).sum())
        if count == 0:
            raise ValueError("cannot fit intensity normalization on zero training voxels")
        mean = total / count
        variance = max(total_sq / count - mean * mean, 0.0)
        std = float(np.sqrt(variance))
        return cls(lower_percentile, upper_percentile, float(mean),
                   std if std > _MIN_STD else 1.0)

    # applying ---------------------------------------------------------------------------

    def rescale(self, array: np.ndarray) -> np.ndarray:
        """Step 1 only: clip to the image's own percentiles and map them to [0, 1].

        NaN/Inf voxels are ignored for the percentiles and set to 0.
        """
        array = np.asarray(array, dtype=np.float32)
        finite = np.isfinite(array)
        if not finite.any():
            return np.zeros(array.shape, dtype=np.float32)
        values = array[finite] if not finite.all() else array.ravel()
        low, high = np.percentile(values, [self.lower_percentile, self.upper_percentile])
        low, high = float(low), float(high)
        out = np.where(finite, array, np.float32(low))
        if not high > low:
            return np.zeros(array.shape, dtype=np.float32)
        out = (np.clip(out, low, high) - low) / (high - low)
        return out.astype(np.float32)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Normalize one raw image: rescale, then ``(x - mean) / std``; float32, never NaN."""
        out = (self.rescale(array) - np.float32(self.mean)) / np.float32(self.std)
        return out.astype(np.float32)

    # serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain JSON-able numbers (and the scheme's name)."""
        return {"method": "percentile_rescale_zscore",
                "lower_percentile": float(self.lower_percentile),
                "upper_percentile": float(self.upper_percentile),
                "mean": float(self.mean), "std": float(self.std)}

    @classmethod
    def from_dict(cls, mapping: dict) -> IntensityNormalization:
        """Inverse of :meth:`to_dict`."""
        method = mapping.get("method", "percentile_rescale_zscore")
        if method != "percentile_rescale_zscore":
            raise ValueError(f"unknown intensity normalization method {method!r}; "
                             "expected 'percentile_rescale_zscore'")
        try:
            return cls(float(mapping["lower_percentile"]), float(mapping["upper_percentile"]),
                       float(mapping["mean"]), float(mapping["std"]))
        except KeyError as err:
            raise ValueError(f"normalization dict lacks {err.args[0]!r}: {mapping!r}") from err
