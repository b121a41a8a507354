"""Registering an unsegmented image to the reference image in the world frame.

Validation, test and new images have no particles, so the transform that brings them into
the world frame comes from image registration alone (never from their own segmentation).
The stages follow ShapeWorks DeepSSM: translation, then rigid, then similarity, each
starting from the previous result. The metric is Mattes mutual information, so MRI
intensity scales (which differ by orders of magnitude between scans) do not matter.

Start: the centre of the moving image's physical box is placed on the centre of the
reference's valid region (its mask, i.e. where the reference subject's own image lies on
the grid), as ShapeWorks places image centres on the reference centre.

A registration that fails or ends in an implausible place is a normal outcome, returned
as a :class:`RegistrationResult` with ``converged=False``, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["RegistrationResult", "register_to_reference", "STAGES"]

logger = logging.getLogger(__name__)

STAGES = ("translation", "rigid", "similarity")


@dataclass
class RegistrationResult:
    """Outcome of :func:`register_to_reference`.

    Attributes
    ----------
    image_to_world : (4, 4) ndarray
        Forward transform from the moving image's physical points (mm) to the world frame.
        On failure, the best transform reached (at worst the centre initialisation).
    metric : float
        Final Mattes mutual information value (lower is better; NaN when none).
    converged : bool
        False when a stage raised, the metric is not finite or the result is implausible
        (scale outside [0.67, 1.5]).
    message : str
        What happened, for logs and reports.
    stage_metrics : dict
        Final metric per stage that ran.
    """

    image_to_world: np.ndarray
    metric: float
    converged: bool
    message: str
    stage_metrics: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain JSON-able values (the matrix as 16 row-major numbers)."""
        return {"image_to_world": [float(v) for v in np.asarray(self.image_to_world).ravel()],
                "metric": float(self.metric), "converged": bool(self.converged),
                "message": str(self.message),
                "stage_metrics": {k: float(v) for k, v in self.stage_metrics.items()}}


def _transform_to_matrix(transform) -> np.ndarray:
    """(4, 4) forward point map of a SimpleITK matrix-offset transform (fixed -> moving)."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(transform.GetMatrix(), dtype=float).reshape(3, 3)
    center = np.asarray(transform.GetCenter(), dtype=float)
    translation = np.asarray(transform.GetTranslation(), dtype=float)
    matrix[:3, 3] = translation + center - matrix[:3, :3] @ center
    return matrix


def _region_centre(image, mask) -> np.ndarray:
    """Physical centre (mm) of the mask's voxels, or of the image box without a mask."""
    import SimpleITK as sitk

    if mask is not None:
        indices = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)
        if len(indices):
            centre_index = indices.mean(axis=0)[::-1]  # (z, y, x) -> (x, y, z)
            return np.asarray(image.TransformContinuousIndexToPhysicalPoint(
                centre_index.tolist()))
    centre_index = 0.5 * (np.asarray(image.GetSize(), dtype=float) - 1)
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint(centre_index.tolist()))


def _make_method(fixed_mask, *, bins: int, iterations: int, sampling: float, seed: int,
                 shrink: Sequence[int], smooth: Sequence[float], learning_rate: float):
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    if sampling < 1.0:
        method.SetMetricSamplingStrategy(method.RANDOM)
        # SimpleITK reads seed 0 as "seed from the wall clock": shift to stay reproducible
        method.SetMetricSamplingPercentage(sampling, int(seed) + 1)
    else:
        method.SetMetricSamplingStrategy(method.NONE)
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=learning_rate, minStep=1e-3, numberOfIterations=iterations,
        relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink))
    method.SetSmoothingSigmasPerLevel(list(smooth))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def register_to_reference(image, reference_image, *, reference_mask=None,
                          stages: Sequence[str] = STAGES, iterations: int = 100,
                          bins: int = 32, sampling: float = 0.5, seed: int = 0,
                          max_scale_change: float = 1.5) -> RegistrationResult:
    """Register an image to the world-frame reference image.

    Parameters
    ----------
    image : SimpleITK.Image
        The moving image, float32, in its own physical frame (any direction, spacing).
    reference_image : SimpleITK.Image
        Fixed image in the world frame (the reference subject's image on the grid).
    reference_mask : SimpleITK.Image, optional
        uint8 mask on ``reference_image``'s grid of voxels where the reference holds
        image data (not padding); the metric and the start use only these voxels.
    stages : sequence of {"translation", "rigid", "similarity"}, default: all three
        Run in this order, each starting from the previous one.
    iterations : int, default: 100
        Optimizer iterations per stage and resolution level.
    bins : int, default: 32
        Mattes histogram bins.
    sampling : float, default: 0.5
        Fraction of fixed voxels sampled for the metric (1.0: all).
    seed : int, default: 0
        Seed (>= 0) of the sampling; the same seed gives the same result.
    max_scale_change : float, default: 1.5
        A similarity scale outside ``[1 / max_scale_change, max_scale_change]`` is
        implausible: the rigid result is kept and ``converged`` is False.

    Returns
    -------
    RegistrationResult
        ``image_to_world`` maps the moving image's physical points into the world frame.
    """
    import SimpleITK as sitk

    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ValueError(f"registration stages must be a non-empty subset of {STAGES}, "
                         f"got {list(stages)!r}")
    if reference_mask is not None:
        reference_mask = sitk.Cast(reference_mask > 0, sitk.sitkUInt8)

    # start: moving image centre onto the reference region centre (fixed -> moving map)
    fixed_centre = _region_centre(reference_image, reference_mask)
    moving_centre = _region_centre(image, None)
    current = sitk.Euler3DTransform()
    current.SetCenter(fixed_centre.tolist())
    current.SetTranslation((moving_centre - fixed_centre).tolist())
    fixed_to_moving = _transform_to_matrix(current)

    def result(converged: bool, metric: float, message: str, metrics: dict):
        return RegistrationResult(np.linalg.inv(fixed_to_moving), float(metric), converged,
                                  message, dict(metrics))

    stage_metrics: dict[str, float] = {}
    metric = float("nan")
    for stage in stages:
        if stage == "translation":
            transform = sitk.TranslationTransform(3)
            transform.SetOffset(fixed_to_moving[:3, 3].tolist())
            shrink, smooth, rate = (2, 1), (1.0, 0.0), 2.0
        else:
            transform = sitk.VersorRigid3DTransform() if stage == "rigid" else \
                sitk.Similarity3DTransform()
            transform.SetCenter(fixed_centre.tolist())
            rotation = fixed_to_moving[:3, :3]
            if stage == "similarity":
                scale = float(np.cbrt(np.linalg.det(rotation)))
                transform.SetMatrix((rotation / scale).ravel().tolist())
                transform.SetScale(scale)
            else:
                transform.SetMatrix(rotation.ravel().tolist())
            offset = fixed_to_moving[:3, 3] + rotation @ fixed_centre - fixed_centre
            transform.SetTranslation(offset.tolist())
            # rigid: coarse-to-fine widens the capture range; similarity refines only
            shrink, smooth, rate = ((2, 1), (1.0, 0.0), 1.0) if stage == "rigid" else \
                ((1,), (0.0,), 1.0)
        method = _make_method(reference_mask, bins=bins, iterations=iterations,
                              sampling=sampling, seed=seed, shrink=shrink, smooth=smooth,
                              learning_rate=rate)
        method.SetInitialTransform(transform, inPlace=True)
        try:
            method.Execute(reference_image, image)
        except RuntimeError as err:
            message = f"{stage} stage failed: {str(err).strip().splitlines()[-1]}"
            logger.warning("registration: %s", message)
            return result(False, metric, message, stage_metrics)
        metric = float(method.GetMetricValue())
        stage_metrics[stage] = metric
        if not np.isfinite(metric):
            return result(False, metric, f"{stage} stage ended with metric {metric}",
                          stage_metrics)
        if stage == "translation":
            candidate = np.eye(4)
            candidate[:3, 3] = np.asarray(transform.GetOffset(), dtype=float)
        else:
            candidate = _transform_to_matrix(transform)
        if stage == "similarity":
            scale = float(transform.GetScale())
            if not 1.0 / max_scale_change <= scale <= max_scale_change:
                message = (f"similarity scale {scale:.3f} is implausible; kept the rigid "
                           "result")
                logger.warning("registration: %s", message)
                return result(False, metric, message, stage_metrics)
        fixed_to_moving = candidate
    stop = method.GetOptimizerStopConditionDescription()
    return result(True, metric, f"{'+'.join(stages)} done; last stop: {stop}", stage_metrics)
