"""Losses of Progressive DeepSSM: per-scale particle loss, deep supervision, segmentation.

All particle losses work on point distances in world mm. Target points that are not
finite (NaN/Inf) are left out of every mean, so one bad particle cannot poison a batch;
a batch with no finite target contributes zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

__all__ = ["particle_loss", "surface_loss", "deep_supervision_loss", "dice_loss",
           "segmentation_loss", "point_rmse", "LossTerms", "compute_loss", "scale_loss_weights"]


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    count = mask.sum()
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / count.clamp_min(1)


def particle_loss(pred_world: torch.Tensor, target_world: torch.Tensor, *, kind: str = "mse",
                  focal_a: float = 1.32, focal_c: float = 2.0) -> torch.Tensor:
    """Mean particle loss over batch and points.

    Parameters
    ----------
    pred_world, target_world : (B, n, 3) Tensor
        Predicted and true particles, world mm.
    kind : {"mse", "focal"}
        ``"mse"``: squared Euclidean point distance ``d^2`` (mm^2). ``"focal"``:
        ``d^2 / (1 + exp(a (c - d)))``, ShapeWorks' focal form applied to point distances,
        which down-weights points already closer than ``c`` mm.
    focal_a : float
        Steepness (1/mm) of the focal weight.
    focal_c : float
        Distance (mm) where the focal weight is one half.

    Returns
    -------
    Tensor
        Scalar loss (mm^2).
    """
    if pred_world.shape != target_world.shape:
        raise ValueError(f"prediction {tuple(pred_world.shape)} and target "
                         f"{tuple(target_world.shape)} differ in shape")
    pred_world = pred_world.float()
    target_world = target_world.float()
    mask = torch.isfinite(target_world).all(dim=-1)
    diff = pred_world - torch.nan_to_num(target_world, nan=0.0, posinf=0.0, neginf=0.0)
    squared = (diff ** 2).sum(dim=-1)
    if kind == "mse":
        values = squared
    elif kind == "focal":
        distance = torch.sqrt(squared + 1e-12)
        values = squared * torch.sigmoid(focal_a * (distance - focal_c))
    else:
        raise ValueError(f"unknown particle loss {kind!r}; use 'mse' or 'focal'")
    return _masked_mean(values, mask)


def surface_loss(pred_world: torch.Tensor, target_world: torch.Tensor,
                 target_subset: int | None = None) -> torch.Tensor:
    """Correspondence-free surface term: a symmetric squared Chamfer distance (mm^2).

    The particle loss asks every particle to land on its own true particle; its optimum
    under uncertainty is the conditional mean, which lies *inside* a curved surface (a
    shrunken shape). This term only asks that the predicted particles lie on the true
    surface and cover it: each predicted particle's squared distance to the nearest true
    particle (all ``N`` true particles sample the surface), plus each of the first
    ``target_subset`` true particles' squared distance to the nearest predicted one.

    Parameters
    ----------
    pred_world : (B, n, 3) Tensor
        Predicted particles of one scale, world mm.
    target_world : (B, N, 3) Tensor
        All true particles (model order), world mm; non-finite rows are left out.
    target_subset : int, optional
        True particles used for the coverage term (default ``n``, the scale's own).
    """
    pred = pred_world.float()
    target = target_world.float()
    finite = torch.isfinite(target).all(dim=-1)  # (B, N)
    target = torch.nan_to_num(target, nan=0.0, posinf=0.0, neginf=0.0)
    # |p - t|^2 = |p|^2 + |t|^2 - 2 p.t: matrix products, cheaper than cdist backward
    squared = ((pred * pred).sum(-1)[:, :, None] + (target * target).sum(-1)[:, None, :]
               - 2 * pred @ target.transpose(1, 2)).clamp_min(0)  # (B, n, N)
    if not bool(finite.all()):
        far = torch.finfo(squared.dtype).max / 4
        squared = torch.where(finite[:, None, :], squared, torch.full_like(squared, far))
    to_surface = squared.min(dim=2).values  # (B, n)
    has_target = finite.any(dim=1, keepdim=True).expand_as(to_surface)
    k = pred.shape[1] if target_subset is None else int(target_subset)
    coverage = squared[:, :, :k].min(dim=1).values  # (B, k)
    return (_masked_mean(to_surface, has_target) + _masked_mean(coverage, finite[:, :k]))


def point_rmse(pred_world: torch.Tensor, target_world: torch.Tensor) -> tuple[float, int]:
    """Sum of squared point distances (mm^2) and the number of finite target points.

    Summed, not averaged, so epochs and processes can be combined exactly:
    ``RMSE = sqrt(sum / count)``.
    """
    mask = torch.isfinite(target_world).all(dim=-1)
    diff = pred_world.float() - torch.nan_to_num(target_world.float())
    squared = (diff ** 2).sum(dim=-1)
    return float(torch.where(mask, squared, torch.zeros_like(squared)).sum()), int(mask.sum())


def scale_loss_weights(num_active: int, *, mode: str = "all",
                       scale_weights: Sequence[float] | None = None,
                       fade: float = 1.0) -> list[float]:
    """Weights of the particle losses of the active scales.

    Parameters
    ----------
    num_active : int
        Active scales (coarse first).
    mode : {"all", "shallow"}
        ``"all"``: deep supervision on every active scale. ``"shallow"``: only the newest.
    scale_weights : sequence of float, optional
        Per-scale weights (at least ``num_active``); ones when None.
    fade : float, default: 1.0
        Factor in [0, 1] on the newest scale's weight (fade-in of a new stage). Ignored
        when only one scale is active.
    """
    base = [1.0] * num_active if scale_weights is None else [float(w) for w in scale_weights]
    if len(base) < num_active:
        raise ValueError(f"{len(base)} scale weights for {num_active} active scales")
    weights = base[:num_active]
    if mode == "shallow":
        weights = [0.0] * (num_active - 1) + [weights[-1]]
    elif mode != "all":
        raise ValueError(f"unknown deep supervision mode {mode!r}; use 'all' or 'shallow'")
    if num_active > 1:
        weights[-1] *= float(fade)
    return weights


def deep_supervision_loss(preds_world: Sequence[torch.Tensor], target_world: torch.Tensor,
                          weights: Sequence[float], **kwargs) -> tuple[torch.Tensor,
                                                                       list[torch.Tensor]]:
    """Weighted sum of the per-scale particle losses.

    Parameters
    ----------
    preds_world : sequence of (B, n_s, 3) Tensor
        Predictions of the active scales, coarse to fine, model order.
    target_world : (B, N, 3) Tensor
        True particles in model order; scale ``s`` is compared with its first ``n_s`` rows.
    weights : sequence of float
        One weight per prediction (see :func:`scale_loss_weights`).
    **kwargs
        Passed to :func:`particle_loss` (``kind``, ``focal_a``, ``focal_c``).

    Returns
    -------
    total : Tensor
        ``sum_s weights[s] * loss_s``; scales of weight 0 are not computed into it.
    per_scale : list of Tensor
        Every scale's unweighted loss (detached).
    """
    if len(weights) != len(preds_world):
        raise ValueError(f"{len(weights)} weights for {len(preds_world)} predictions")
    total = preds_world[0].new_zeros(()).float()
    per_scale = []
    for pred, weight in zip(preds_world, weights):
        loss = particle_loss(pred, target_world[:, :pred.shape[1]], **kwargs)
        per_scale.append(loss.detach())
        if weight:
            total = total + weight * loss
    return total, per_scale


def dice_loss(logits: torch.Tensor, target: torch.Tensor, *, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss ``1 - (2|P.T| + eps) / (|P| + |T| + eps)``, averaged over the batch.

    Parameters
    ----------
    logits : (B, 1, X, Y, Z) Tensor
        Foreground logits.
    target : (B, 1, X, Y, Z) Tensor
        Foreground mask in {0, 1}.
    eps : float, default: 1.0
        Smoothing; makes an empty prediction of an empty target a perfect score.
    """
    prob = torch.sigmoid(logits.float()).flatten(1)
    target = target.float().flatten(1)
    intersection = (prob * target).sum(1)
    dice = (2 * intersection + eps) / (prob.sum(1) + target.sum(1) + eps)
    return (1 - dice).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice loss plus binary cross-entropy (mean over voxels)."""
    target = target.float()
    bce = F.binary_cross_entropy_with_logits(logits.float(), target)
    return dice_loss(logits, target) + bce


@dataclass
class LossTerms:
    """The total loss and its parts (parts detached, for logging)."""

    total: torch.Tensor
    particle: list[torch.Tensor] = field(default_factory=list)
    segmentation: torch.Tensor | None = None
    weights: list[float] = field(default_factory=list)


def compute_loss(output, target_world: torch.Tensor, target_seg: torch.Tensor | None,
                 loss_config: dict, *, fade: float = 1.0) -> LossTerms:
    """The full training loss of one batch from a ``loss`` config section.

    Parameters
    ----------
    output : ModelOutput
        The model's output for the batch.
    target_world : (B, N, 3) Tensor
        True particles, model order, mm.
    target_seg : (B, 1, X, Y, Z) Tensor or None
        Segmentation target; the segmentation term is skipped when this, the model's
        logits or ``seg_weight`` is missing/zero.
    loss_config : dict
        ``particle``, ``focal_a``, ``focal_c``, ``seg_weight``, ``deep_supervision``,
        ``scale_weights``.
    fade : float, default: 1.0
        Fade-in factor of the newest scale.
    """
    weights = scale_loss_weights(len(output.particles), mode=loss_config["deep_supervision"],
                                 scale_weights=loss_config["scale_weights"], fade=fade)
    total, per_scale = deep_supervision_loss(
        output.particles, target_world, weights, kind=loss_config["particle"],
        focal_a=loss_config["focal_a"], focal_c=loss_config["focal_c"])
    surface_weight = float(loss_config.get("surface_weight", 0.0))
    if surface_weight > 0:
        for pred, weight in zip(output.particles, weights):
            if weight:
                total = total + surface_weight * weight * surface_loss(pred, target_world)
    seg = None
    lam = float(loss_config["seg_weight"])
    if lam > 0 and target_seg is not None and output.segmentation_logits is not None:
        seg_term = segmentation_loss(output.segmentation_logits, target_seg)
        total = total + lam * seg_term
        seg = seg_term.detach()
    return LossTerms(total=total, particle=per_scale, segmentation=seg, weights=weights)
