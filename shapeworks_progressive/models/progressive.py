"""Progressive DeepSSM: coarse-to-fine particle heads on a shared 3-D image encoder.

Architecture
------------
* **Encoder**: ``levels`` stages of two padded 3x3x3 convolutions (GroupNorm, LeakyReLU);
  each later stage starts with a stride-2 convolution. Padding keeps small grids
  (~30-64 voxels per axis, any parity) usable; the deepest features are pooled to a
  global vector and to a ``2x2x2`` block.
* **Global shape** (from the pooled deepest features): either a free offset of the first
  ``n_1`` template rows (``shape_basis`` None), or, DeepSSM-like, whitened scores of
  ``K`` PCA modes of the training shapes (``shape_basis``), which give the whole
  ``N``-particle base shape ``template + sum_k z_k basis_k``. With ``pose`` the head also
  predicts a rigid motion (rotation vector, translation) of the base shape about the
  template centroid: images placed by registration are off by a few mm and degrees, and
  a pose keeps that apart from the shape.
* **Scale 1** is the first ``n_1`` rows of the base shape, then a point-wise refinement.
* **Scale s > 1** carries the scale ``s - 1`` prediction up to ``n_s`` particles: the
  first ``n_{s-1}`` rows are the same particles (nested order); each new row starts at
  its parent (the nearest of the coarse template particles) plus the base-shape offset
  between the two. A point-wise head then predicts a refinement of every row.
* **Point-wise refinement**: features of every encoder level (and, with
  ``seg_features``, the segmentation decoder's features and foreground probability) are
  sampled at each particle's current position (trilinear ``grid_sample``), concatenated
  with the global vector, the particle's current and template position (normalized to
  the grid box), and mapped by a shared MLP (1x1 convolutions over particles) to an
  offset in mm. The last layer starts at zero, so a new scale starts exactly at the
  carried-up prediction.
* **Segmentation decoder** (optional): a U-Net decoder on the encoder's skip features
  down to half resolution, whose logits are upsampled (trilinear) to the input grid; the
  shape prior of the multi-task loss.

Coordinates: world mm, identity-direction grid with ``origin`` (centre of voxel 0),
``spacing`` and ``size`` in (X, Y, Z) order; image tensors are ``(B, 1, X, Y, Z)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import ModelOutput, ParticleModel

__all__ = ["ProgressiveDeepSSM", "carry_up_parents", "shape_basis_from_training"]

# Rotation (radians) per unit output of the pose head: ~5.7 degrees
_ROTATION_STEP_RAD = 0.1


def carry_up_parents(template_world: np.ndarray, scale_sizes: Sequence[int]) -> list[np.ndarray]:
    """Parent of every new row of each finer scale: its nearest coarser template particle.

    Parameters
    ----------
    template_world : (N, 3) ndarray
        Mean training shape in model order, mm.
    scale_sizes : sequence of int
        Nested prefix sizes, coarse to fine, the last at most ``N``.

    Returns
    -------
    list of (n_s - n_{s-1},) int64 ndarray
        One array per scale after the first: indices into the first ``n_{s-1}`` rows.
    """
    template_world = np.asarray(template_world, dtype=np.float64)
    parents = []
    for coarse, fine in zip(scale_sizes[:-1], scale_sizes[1:]):
        new_rows = template_world[coarse:fine]
        old_rows = template_world[:coarse]
        dist = ((new_rows[:, None, :] - old_rows[None, :, :]) ** 2).sum(-1)
        parents.append(dist.argmin(axis=1).astype(np.int64))
    return parents


def shape_basis_from_training(particles_world: np.ndarray, num_modes: int) -> np.ndarray:
    """PCA basis of the training shapes for the global head, mm per whitened score.

    Parameters
    ----------
    particles_world : (M, N, 3) ndarray
        Training world particles (mm), model order; never validation or test shapes.
    num_modes : int
        Modes to keep; fewer when the shapes have fewer non-zero modes (at most ``M - 1``).

    Returns
    -------
    (K, N, 3) ndarray of float32
        Mode ``k`` times its standard deviation, so a score of 1 is one standard
        deviation of the training shapes along that mode.
    """
    from ..pca import fit_pca

    pca = fit_pca(np.asarray(particles_world, dtype=np.float64), variance_fraction=None)
    pca = pca.truncate(min(int(num_modes), pca.num_modes))
    basis = pca.modes * pca.score_std[:, None]
    return basis.reshape(pca.num_modes, -1, 3).astype(np.float32)


def _groups(channels: int) -> int:
    for groups in (8, 4, 2):
        if channels % groups == 0 and channels // groups >= 2:
            return groups
    return 1


class _ConvBlock(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(
            nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.GroupNorm(_groups(out_channels), out_channels),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.GroupNorm(_groups(out_channels), out_channels),
            nn.LeakyReLU(0.1, inplace=True),
        )


class _PointHead(nn.Module):
    """Shared MLP over particles: (B, C, n) features -> (B, n, 3) offsets."""

    def __init__(self, in_features: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv1d(in_features, hidden, 1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv1d(hidden, hidden, 1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv1d(hidden, 3, 1),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features).transpose(1, 2)


class ProgressiveDeepSSM(ParticleModel):
    """Coarse-to-fine particle regression with an optional segmentation decoder.

    Parameters
    ----------
    scale_sizes : sequence of int
        Particles per scale, coarse to fine, nested prefixes of the model order.
    template_world : (N, 3) array-like
        Mean training shape in model order, world mm; ``N == scale_sizes[-1]``.
    grid_origin, grid_spacing : sequence of 3 float
        World position (mm) of voxel (0, 0, 0) and voxel size (mm), (X, Y, Z) order.
    grid_size : sequence of 3 int
        Voxels per axis of the training grid (X, Y, Z); other input sizes also work, the
        grid box is then taken from the input shape and ``grid_spacing``.
    channels : int, default: 8
        Channels of the first encoder level; doubled at each deeper level.
    levels : int, default: 4
        Encoder resolution levels (``levels - 1`` stride-2 downsamplings).
    head_hidden : int, default: 64
        Hidden width of the point-wise heads.
    global_hidden : int, default: 256
        Hidden width of the scale-1 global offset head.
    segmentation : bool, default: True
        Build the segmentation decoder.
    offset_scale_mm : float, default: 5.0
        Head outputs are multiplied by this to give mm; sets the step size of learning.
    dropout : float, default: 0.0
        Dropout before the global head.
    shape_basis : (K, N, 3) array-like, optional
        PCA modes of the training shapes times their standard deviations (mm per unit
        whitened score), model order; the global head then predicts ``K`` scores instead
        of a free offset (see :func:`shape_basis_from_training`).
    pose : bool, default: False
        The global head also predicts a rigid motion of the base shape.
    seg_features : bool, default: False
        Point heads also sample the segmentation decoder (needs ``segmentation``).
    """

    def __init__(self, scale_sizes: Sequence[int], template_world: Any,
                 grid_origin: Sequence[float], grid_spacing: Sequence[float],
                 grid_size: Sequence[int], *, channels: int = 8, levels: int = 4,
                 head_hidden: int = 64, global_hidden: int = 256, segmentation: bool = True,
                 offset_scale_mm: float = 5.0, dropout: float = 0.0,
                 shape_basis: Any = None, pose: bool = False, seg_features: bool = False):
        super().__init__()
        template = np.asarray(template_world, dtype=np.float32)
        scale_sizes = [int(n) for n in scale_sizes]
        if template.ndim != 2 or template.shape[1] != 3:
            raise ValueError(f"template_world must be (N, 3); got shape {template.shape}")
        if not scale_sizes or any(b <= a for a, b in zip(scale_sizes, scale_sizes[1:])):
            raise ValueError(f"scale_sizes must increase strictly; got {scale_sizes}")
        if scale_sizes[-1] != template.shape[0] or scale_sizes[0] < 1:
            raise ValueError(f"the finest scale ({scale_sizes[-1]}) must equal the template's "
                             f"particle count ({template.shape[0]})")
        if levels < 1 or channels < 1:
            raise ValueError(f"levels and channels must be >= 1; got {levels}, {channels}")
        basis = None if shape_basis is None else np.asarray(shape_basis, dtype=np.float32)
        if basis is not None and (basis.ndim != 3 or basis.shape[1:] != template.shape
                                  or basis.shape[0] < 1):
            raise ValueError(f"shape_basis must be (K, {template.shape[0]}, 3); got shape "
                             f"{basis.shape}")
        if seg_features and not segmentation:
            raise ValueError("seg_features needs the segmentation decoder (segmentation=True)")
        self.scale_sizes = scale_sizes
        self.has_segmentation = bool(segmentation)
        self._kwargs = dict(
            scale_sizes=scale_sizes, grid_origin=[float(v) for v in grid_origin],
            grid_spacing=[float(v) for v in grid_spacing], grid_size=[int(v) for v in grid_size],
            channels=int(channels), levels=int(levels), head_hidden=int(head_hidden),
            global_hidden=int(global_hidden), segmentation=bool(segmentation),
            offset_scale_mm=float(offset_scale_mm), dropout=float(dropout),
            pose=bool(pose), seg_features=bool(seg_features))
        self.offset_scale_mm = float(offset_scale_mm)
        self.pose = bool(pose)
        self.seg_features = bool(seg_features)
        self.num_modes = 0 if basis is None else int(basis.shape[0])

        # Geometry buffers: template, grid box, parents of new rows per finer scale
        self.register_buffer("template_world", torch.from_numpy(template))
        self.register_buffer("grid_origin", torch.tensor(grid_origin, dtype=torch.float32))
        self.register_buffer("grid_spacing", torch.tensor(grid_spacing, dtype=torch.float32))
        for s, parents in enumerate(carry_up_parents(template, scale_sizes), start=1):
            self.register_buffer(f"parents_{s}", torch.from_numpy(parents))
        if basis is not None:
            self.register_buffer("shape_basis", torch.from_numpy(basis))
        else:
            self.shape_basis = None

        # Encoder
        widths = [channels * 2 ** level for level in range(levels)]
        self.encoder = nn.ModuleList(
            [_ConvBlock(1 if level == 0 else widths[level - 1], widths[level],
                        stride=1 if level == 0 else 2) for level in range(levels)])
        deep = widths[-1]

        # Global head: free scale-1 offset or PCA scores, plus pose (rotation, translation)
        shape_outputs = self.num_modes if basis is not None else scale_sizes[0] * 3
        self.global_head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(deep * 8, global_hidden),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Linear(global_hidden, shape_outputs + (6 if pose else 0)))
        nn.init.zeros_(self.global_head[-1].weight)
        nn.init.zeros_(self.global_head[-1].bias)

        # Point-wise refinement heads, one per scale
        point_features = sum(widths) + deep + 6
        self._seg_level = min(1, levels - 1)
        if seg_features:
            point_features += widths[self._seg_level] + 1
        self.point_heads = nn.ModuleList(
            [_PointHead(point_features, head_hidden) for _ in scale_sizes])

        # Segmentation decoder (U-Net style)
        # (decoding stops at level 1, half resolution, and the logits are upsampled: a
        # full-resolution decoder block would cost ~3x the whole full-resolution encoder)
        if self.has_segmentation:
            self.decoder = nn.ModuleDict(
                {str(level): _ConvBlock(widths[level + 1] + widths[level], widths[level])
                 for level in range(self._seg_level, levels - 1)})
            self.seg_out = nn.Conv3d(widths[self._seg_level], 1, 1)

    @property
    def init_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self._kwargs)
        kwargs["template_world"] = self.template_world.detach().cpu().numpy()
        if self.shape_basis is not None:
            kwargs["shape_basis"] = self.shape_basis.detach().cpu().numpy()
        return kwargs

    def scale_parameters(self, scale: int) -> list[nn.Parameter]:
        params = list(self.point_heads[scale].parameters())
        if scale == 0:
            params += list(self.global_head.parameters())
        return params

    # -- geometry ---------------------------------------------------------------------

    def _normalize(self, points_world: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        """World mm (B, n, 3) -> grid_sample coordinates in [-1, 1], (X, Y, Z) order."""
        size = torch.tensor(list(shape), dtype=points_world.dtype, device=points_world.device)
        half = (self.grid_spacing.to(points_world.dtype) * (size - 1) / 2).clamp_min(1e-6)
        centre = self.grid_origin.to(points_world.dtype) + half
        return (points_world - centre) / half

    @staticmethod
    def _sample(volume: torch.Tensor, points_norm: torch.Tensor) -> torch.Tensor:
        """Trilinear features (B, C, n) of ``volume`` (B, C, X, Y, Z) at normalized points."""
        grid = points_norm.flip(-1)[:, :, None, None, :].to(volume.dtype)  # (B, n, 1, 1, 3)
        sampled = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border",
                                align_corners=True)
        return sampled[:, :, :, 0, 0]

    def _refine(self, scale: int, points_world: torch.Tensor, features: list[torch.Tensor],
                global_vector: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        n = points_world.shape[1]
        points_norm = self._normalize(points_world, shape)
        template_norm = self._normalize(self.template_world[:n][None], shape)
        sampled = [self._sample(f, points_norm.detach()) for f in features]
        if len(sampled) > 1:
            sampled = [s.to(sampled[0].dtype) for s in sampled]
        inputs = torch.cat(
            sampled + [global_vector[:, :, None].expand(-1, -1, n).to(sampled[0].dtype),
                       points_norm.transpose(1, 2).to(sampled[0].dtype),
                       template_norm.expand(points_world.shape[0], -1, -1)
                       .transpose(1, 2).to(sampled[0].dtype)], dim=1)
        offset = self.point_heads[scale](inputs).float() * self.offset_scale_mm
        return points_world + offset

    # -- forward ----------------------------------------------------------------------

    def forward(self, images: torch.Tensor, active_scales: int | None = None) -> ModelOutput:
        if images.ndim != 5 or images.shape[1] != 1:
            raise ValueError(f"images must be (B, 1, X, Y, Z); got {tuple(images.shape)}")
        active = self.num_scales if active_scales is None else int(active_scales)
        if not 1 <= active <= self.num_scales:
            raise ValueError(f"active_scales must be in 1..{self.num_scales}; got {active}")
        shape = images.shape[2:]
        batch = images.shape[0]

        # Encoder features, fine to coarse
        features = []
        x = images
        for block in self.encoder:
            x = block(x)
            features.append(x)
        deep = features[-1]
        global_vector = deep.mean(dim=(2, 3, 4))

        # Segmentation decoder (its features can guide the point heads)
        logits = None
        point_features = list(features)
        if self.has_segmentation:
            x = features[-1]
            for level in range(len(features) - 2, self._seg_level - 1, -1):
                skip = features[level]
                x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
                x = self.decoder[str(level)](torch.cat([x, skip], dim=1))
            half_logits = self.seg_out(x)
            if self.seg_features:
                point_features += [x, torch.sigmoid(half_logits)]
            logits = half_logits
            if logits.shape[2:] != shape:
                logits = F.interpolate(logits, size=shape, mode="trilinear", align_corners=False)

        # Global base shape of all N rows; scale 1 is its first n_1 rows, refined
        code = self.global_head(F.adaptive_avg_pool3d(deep, 2)).float()
        start, base = self._base_shape(code, batch)
        points = self._refine(0, start, point_features, global_vector, shape)
        outputs = [points]

        # Finer scales: carry the coarser prediction up, then refine
        for s in range(1, active):
            coarse_n, fine_n = self.scale_sizes[s - 1], self.scale_sizes[s]
            parents = getattr(self, f"parents_{s}")
            step = base[:, coarse_n:fine_n] - base[:, parents]
            new_rows = points[:, parents] + step
            points = torch.cat([points, new_rows], dim=1)
            points = self._refine(s, points, point_features, global_vector, shape)
            outputs.append(points)
        return ModelOutput(particles=outputs, segmentation_logits=logits)

    def _base_shape(self, code: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale-1 start (B, n_1, 3) and base shape (B, N, 3), world mm, from ``code``.

        New rows of finer scales are placed by the base shape's offsets from their
        parents; without ``shape_basis`` the base is the (posed) template.
        """
        template = self.template_world[None].expand(batch, -1, -1)
        n1 = self.scale_sizes[0]
        if self.shape_basis is not None:
            scores = code[:, :self.num_modes]
            base = template + torch.einsum("bk,knc->bnc", scores, self.shape_basis)
            offset = None
            rest = code[:, self.num_modes:]
        else:
            base = template
            offset = code[:, :n1 * 3].view(batch, n1, 3) * self.offset_scale_mm
            rest = code[:, n1 * 3:]
        start = base[:, :n1] if offset is None else base[:, :n1] + offset
        if self.pose:
            rotation_vector = rest[:, :3] * _ROTATION_STEP_RAD
            translation = rest[:, 3:6] * self.offset_scale_mm
            skew = torch.zeros(batch, 3, 3, dtype=code.dtype, device=code.device)
            skew[:, 0, 1], skew[:, 0, 2] = -rotation_vector[:, 2], rotation_vector[:, 1]
            skew[:, 1, 0], skew[:, 1, 2] = rotation_vector[:, 2], -rotation_vector[:, 0]
            skew[:, 2, 0], skew[:, 2, 1] = -rotation_vector[:, 1], rotation_vector[:, 0]
            rotation = torch.linalg.matrix_exp(skew)
            centre = self.template_world.mean(dim=0)

            def move(points):
                return ((points - centre) @ rotation.transpose(1, 2) + centre
                        + translation[:, None, :])

            start, base = move(start), move(base)
        return start, base
