"""Progressive DeepSSM: coarse-to-fine particle heads on a shared 3-D image encoder.

Architecture
------------
* **Encoder**: ``levels`` stages of two padded 3x3x3 convolutions (GroupNorm, LeakyReLU);
  each later stage starts with a stride-2 convolution. Padding keeps small grids
  (~30-64 voxels per axis, any parity) usable; the deepest features are pooled to a
  global vector and to a ``2x2x2`` block.
* **Scale 1** starts from the template (mean training shape, first ``n_1`` rows), adds a
  global offset predicted from the pooled deepest features (a DeepSSM-like shape code),
  then a point-wise refinement.
* **Scale s > 1** carries the scale ``s - 1`` prediction up to ``n_s`` particles: the
  first ``n_{s-1}`` rows are the same particles (nested order); each new row starts at
  its parent (the nearest of the coarse template particles) plus the template offset
  between the two. A point-wise head then predicts a refinement of every row.
* **Point-wise refinement**: features of every encoder level are sampled at each
  particle's current position (trilinear ``grid_sample``), concatenated with the global
  vector, the particle's current and template position (normalized to the grid box), and
  mapped by a shared MLP (1x1 convolutions over particles) to an offset in mm. The last
  layer starts at zero, so a new scale starts exactly at the carried-up prediction.
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

__all__ = ["ProgressiveDeepSSM", "carry_up_parents"]


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
    """

    def __init__(self, scale_sizes: Sequence[int], template_world: Any,
                 grid_origin: Sequence[float], grid_spacing: Sequence[float],
                 grid_size: Sequence[int], *, channels: int = 8, levels: int = 4,
                 head_hidden: int = 64, global_hidden: int = 256, segmentation: bool = True,
                 offset_scale_mm: float = 5.0, dropout: float = 0.0):
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
        self.scale_sizes = scale_sizes
        self.has_segmentation = bool(segmentation)
        self._kwargs = dict(
            scale_sizes=scale_sizes, grid_origin=[float(v) for v in grid_origin],
            grid_spacing=[float(v) for v in grid_spacing], grid_size=[int(v) for v in grid_size],
            channels=int(channels), levels=int(levels), head_hidden=int(head_hidden),
            global_hidden=int(global_hidden), segmentation=bool(segmentation),
            offset_scale_mm=float(offset_scale_mm), dropout=float(dropout))
        self.offset_scale_mm = float(offset_scale_mm)

        # Geometry buffers: template, grid box, parents of new rows per finer scale
        self.register_buffer("template_world", torch.from_numpy(template))
        self.register_buffer("grid_origin", torch.tensor(grid_origin, dtype=torch.float32))
        self.register_buffer("grid_spacing", torch.tensor(grid_spacing, dtype=torch.float32))
        for s, parents in enumerate(carry_up_parents(template, scale_sizes), start=1):
            self.register_buffer(f"parents_{s}", torch.from_numpy(parents))

        # Encoder
        widths = [channels * 2 ** level for level in range(levels)]
        self.encoder = nn.ModuleList(
            [_ConvBlock(1 if level == 0 else widths[level - 1], widths[level],
                        stride=1 if level == 0 else 2) for level in range(levels)])
        deep = widths[-1]

        # Scale 1 global offset head
        self.global_head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(deep * 8, global_hidden),
            nn.LeakyReLU(0.1, inplace=True), nn.Linear(global_hidden, scale_sizes[0] * 3))
        nn.init.zeros_(self.global_head[-1].weight)
        nn.init.zeros_(self.global_head[-1].bias)

        # Point-wise refinement heads, one per scale
        point_features = sum(widths) + deep + 6
        self.point_heads = nn.ModuleList(
            [_PointHead(point_features, head_hidden) for _ in scale_sizes])

        # Segmentation decoder (U-Net style)
        # (decoding stops at level 1, half resolution, and the logits are upsampled: a
        # full-resolution decoder block would cost ~3x the whole full-resolution encoder)
        self._seg_level = min(1, levels - 1)
        if self.has_segmentation:
            self.decoder = nn.ModuleDict(
                {str(level): _ConvBlock(widths[level + 1] + widths[level], widths[level])
                 for level in range(self._seg_level, levels - 1)})
            self.seg_out = nn.Conv3d(widths[self._seg_level], 1, 1)

    @property
    def init_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self._kwargs)
        kwargs["template_world"] = self.template_world.detach().cpu().numpy()
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

        # Scale 1: template + global offset, then point-wise refinement
        n1 = self.scale_sizes[0]
        coarse_code = F.adaptive_avg_pool3d(deep, 2)
        offset = self.global_head(coarse_code).float().view(batch, n1, 3)
        points = self.template_world[:n1][None] + offset * self.offset_scale_mm
        points = self._refine(0, points, features, global_vector, shape)
        outputs = [points]

        # Finer scales: carry the coarser prediction up, then refine
        for s in range(1, active):
            coarse_n, fine_n = self.scale_sizes[s - 1], self.scale_sizes[s]
            parents = getattr(self, f"parents_{s}")
            template_step = self.template_world[coarse_n:fine_n] - self.template_world[parents]
            new_rows = points[:, parents] + template_step[None]
            points = torch.cat([points, new_rows], dim=1)
            points = self._refine(s, points, features, global_vector, shape)
            outputs.append(points)

        # Segmentation decoder
        logits = None
        if self.has_segmentation:
            x = features[-1]
            for level in range(len(features) - 2, self._seg_level - 1, -1):
                skip = features[level]
                x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
                x = self.decoder[str(level)](torch.cat([x, skip], dim=1))
            logits = self.seg_out(x)
            if logits.shape[2:] != shape:
                logits = F.interpolate(logits, size=shape, mode="trilinear", align_corners=False)
        return ModelOutput(particles=outputs, segmentation_logits=logits)
