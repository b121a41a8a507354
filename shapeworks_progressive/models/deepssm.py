"""Base-DeepSSM (Bhalodia et al. 2018) as ShapeWorks implements it, without its defects.

Architecture (ShapeWorks ``DeepSSMUtils/model.py``)
---------------------------------------------------
* **Backbone**: five valid ``Conv3d(k=5)`` layers, ``1 -> 12 -> 24 -> 48 -> 96 -> 192``
  channels, each followed by ``BatchNorm3d`` and ``PReLU``, with ``MaxPool3d(2)`` after
  conv1, conv3 and conv5; then ``Linear(192 * s_x s_y s_z -> 384)``, PReLU,
  ``Linear(384 -> 96)``, PReLU.
* **Score head**: ``Linear(96 -> K)`` predicting *whitened* PCA scores.
* **Decoder**: the scores are un-whitened (``z * std + mean``) and a linear layer
  ``K -> 3N`` turns them into particles. It starts as the PCA basis (weights) and mean
  shape (bias) and is frozen until optional fine-tuning unfreezes it.

State-dict keys follow ShapeWorks (``encoder.ConvolutionalBackbone.features.conv1.weight``,
``encoder.pca_pred.linear.weight``, ``decoder.fc_fine.weight`` ...).

Defects of the original avoided here
------------------------------------
* Whitening statistics are buffers of the model (saved in its state dict), not
  ``mean_PCA.npy``/``std_PCA.npy`` read from disk on every forward pass.
* The model is built from arguments (grid size, PCA arrays), not by unpickling a
  validation loader.
* Valid convolutions need at least 60 voxels per axis. Smaller inputs are padded here
  (edge-replicate, symmetric) up to 60 inside :meth:`forward`, so small grids work;
  ``pool_size`` optionally bounds the size of ``fc1`` on large grids (as ShapeWorks' newest
  ``pool_size``).
* Xavier initialisation is applied to the 3-D convolutions (the legacy trainer passed
  ``nn.Conv2d`` and never initialised them).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import ModelOutput, ParticleModel

__all__ = ["ConvolutionalBackbone", "DeepSSM", "MIN_VALID_SIZE", "backbone_output_size"]

#: Smallest number of voxels per axis for which the five valid convolutions and three
#: poolings leave at least one voxel.
MIN_VALID_SIZE = 60


def backbone_output_size(size: int) -> int:
    """Voxels left on one axis after the backbone's convolutions and poolings.

    ``s1 = (d - 4) // 2``, ``s2 = (s1 - 8) // 2``, ``s3 = (s2 - 8) // 2``, as in
    ShapeWorks (60 -> 1, 64 -> 1, 100 -> 6, 128 -> 9).
    """
    s1 = (int(size) - 4) // 2
    s2 = (s1 - 8) // 2
    return (s2 - 8) // 2


class ConvolutionalBackbone(nn.Module):
    """The DeepSSM 3-D convolutional encoder: ``(B, 1, X, Y, Z)`` -> ``(B, 96)`` features.

    Parameters
    ----------
    grid_size : sequence of 3 int
        Voxels per axis (X, Y, Z) of the input images. Axes under ``MIN_VALID_SIZE`` are
        padded by edge replication (half before, half after) up to that size.
    pool_size : int, optional
        When given, the conv5 features are average-pooled to ``pool_size`` voxels per axis
        before ``fc1`` (bounds fc1 on large grids). None keeps the published layout.
    """

    def __init__(self, grid_size: Sequence[int], *, pool_size: int | None = None):
        super().__init__()
        self.grid_size = tuple(int(v) for v in grid_size)
        if len(self.grid_size) != 3 or min(self.grid_size) < 1:
            raise ValueError(f"grid_size must be 3 positive ints; got {grid_size!r}")
        padded = [max(size, MIN_VALID_SIZE) for size in self.grid_size]
        self.padding = tuple(p - s for p, s in zip(padded, self.grid_size))
        if pool_size is not None and pool_size < 1:
            raise ValueError(f"pool_size must be >= 1 or None; got {pool_size!r}")
        out = [backbone_output_size(p) for p in padded]
        if pool_size is not None:
            out = [min(o, int(pool_size)) for o in out]

        layers: list[tuple[str, nn.Module]] = []
        channels = [1, 12, 24, 48, 96, 192]
        pools_after = {1: "mp1", 3: "mp2", 5: "mp3"}
        for i in range(1, 6):
            layers += [(f"conv{i}", nn.Conv3d(channels[i - 1], channels[i], kernel_size=5)),
                       (f"bn{i}", nn.BatchNorm3d(channels[i])),
                       (f"relu{i}", nn.PReLU())]
            if i in pools_after:
                layers.append((pools_after[i], nn.MaxPool3d(2)))
        if pool_size is not None:
            layers.append(("avgpool", nn.AdaptiveAvgPool3d(tuple(out))))
        layers += [("flatten", nn.Flatten()),
                   ("fc1", nn.Linear(192 * out[0] * out[1] * out[2], 384)),
                   ("relu6", nn.PReLU()),
                   ("fc2", nn.Linear(384, 96)),
                   ("relu7", nn.PReLU())]
        self.features = nn.Sequential(OrderedDict(layers))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 5 or images.shape[1] != 1 or tuple(images.shape[2:]) != self.grid_size:
            message = (f"expected images of shape (B, 1, {', '.join(map(str, self.grid_size))}),"
                       f" got {tuple(images.shape)}; the network was built for that grid")
            raise ValueError(message)
        if any(self.padding):
            pad: list[int] = []
            for extra in reversed(self.padding):  # F.pad lists the last axis first
                pad += [extra // 2, extra - extra // 2]
            images = F.pad(images, pad, mode="replicate")
        return self.features(images)


def xavier_init(module: nn.Module) -> None:
    """Xavier-normal weights for every Conv3d and Linear (biases keep their defaults)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv3d, nn.Linear)):
            nn.init.xavier_normal_(layer.weight)


class _Encoder(nn.Module):
    """Backbone plus the whitened-score head (``encoder.*`` keys of ShapeWorks)."""

    def __init__(self, grid_size: Sequence[int], num_modes: int, pool_size: int | None):
        super().__init__()
        self.ConvolutionalBackbone = ConvolutionalBackbone(grid_size, pool_size=pool_size)
        self.pca_pred = nn.Sequential(OrderedDict([("linear", nn.Linear(96, num_modes))]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pca_pred(self.ConvolutionalBackbone(images))


class _LinearDecoder(nn.Module):
    """``fc_fine``: un-whitened scores (B, K) -> particles (B, N, 3)."""

    def __init__(self, num_modes: int, num_particles: int):
        super().__init__()
        self.num_particles = num_particles
        self.fc_fine = nn.Linear(num_modes, 3 * num_particles)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return self.fc_fine(scores).reshape(len(scores), self.num_particles, 3)


class DeepSSM(ParticleModel):
    """Base-DeepSSM: image -> whitened PCA scores -> particles through a PCA decoder.

    Parameters
    ----------
    grid_size : sequence of 3 int
        Voxels per axis (X, Y, Z) of the common image grid.
    pca_mean_world : (N, 3) array-like
        Mean training shape, world mm, model particle order (:class:`ParticlePCA`
        ``mean_world``); the decoder bias starts here.
    pca_modes : (K, 3N) array-like
        Orthonormal PCA modes, flattened ``x, y, z`` per particle; the decoder weight
        starts as their transpose.
    score_mean, score_std : (K,) array-like
        Whitening statistics of the scores (mm); stored as buffers.
    pool_size : int, optional
        See :class:`ConvolutionalBackbone`.

    Notes
    -----
    One output scale (``scale_sizes == [N]``) and no segmentation output. The decoder is
    frozen after construction; :meth:`set_decoder_trainable` unfreezes it for
    fine-tuning. Build one from a fitted PCA with :meth:`from_pca`.
    """

    has_segmentation = False

    def __init__(self, grid_size: Sequence[int], pca_mean_world: Any, pca_modes: Any,
                 score_mean: Any, score_std: Any, *, pool_size: int | None = None):
        super().__init__()
        mean = np.asarray(pca_mean_world, dtype=np.float32)
        modes = np.asarray(pca_modes, dtype=np.float32)
        score_mean = np.asarray(score_mean, dtype=np.float32).reshape(-1)
        score_std = np.asarray(score_std, dtype=np.float32).reshape(-1)
        if mean.ndim != 2 or mean.shape[1] != 3:
            raise ValueError(f"pca_mean_world must be (N, 3); got shape {mean.shape}")
        num_particles = mean.shape[0]
        if modes.ndim != 2 or modes.shape[1] != 3 * num_particles:
            raise ValueError(f"pca_modes must be (K, {3 * num_particles}); got {modes.shape}")
        num_modes = modes.shape[0]
        if score_mean.shape != (num_modes,) or score_std.shape != (num_modes,):
            raise ValueError(f"score_mean/score_std must have {num_modes} values; got "
                             f"{score_mean.shape} and {score_std.shape}")
        if np.any(score_std <= 0):
            raise ValueError("score_std must be positive")
        self.scale_sizes = [num_particles]
        self._kwargs = dict(grid_size=[int(v) for v in grid_size],
                            pool_size=None if pool_size is None else int(pool_size))
        self._pca = dict(pca_mean_world=mean, pca_modes=modes, score_mean=score_mean,
                         score_std=score_std)

        self.register_buffer("score_mean", torch.from_numpy(score_mean.copy()))
        self.register_buffer("score_std", torch.from_numpy(score_std.copy()))
        self.encoder = _Encoder(grid_size, num_modes, pool_size)
        self.decoder = _LinearDecoder(num_modes, num_particles)
        xavier_init(self)
        self.reset_decoder_to_pca()
        self.set_decoder_trainable(False)

    @classmethod
    def from_pca(cls, pca, grid_size: Sequence[int], *,
                 pool_size: int | None = None) -> DeepSSM:
        """Build from a :class:`~shapeworks_progressive.pca.ParticlePCA` of the training set."""
        return cls(grid_size, pca.mean_world, pca.modes, pca.score_mean, pca.score_std,
                   pool_size=pool_size)

    @property
    def init_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self._kwargs)
        kwargs.update({key: value.copy() for key, value in self._pca.items()})
        return kwargs

    @property
    def num_modes(self) -> int:
        return self.decoder.fc_fine.in_features

    @torch.no_grad()
    def reset_decoder_to_pca(self) -> None:
        """Set the decoder to the PCA basis (weight ``modes.T``) and mean shape (bias)."""
        fc = self.decoder.fc_fine
        fc.weight.copy_(torch.from_numpy(self._pca["pca_modes"].T.copy()))
        fc.bias.copy_(torch.from_numpy(self._pca["pca_mean_world"].reshape(-1).copy()))

    def set_decoder_trainable(self, trainable: bool) -> None:
        """Freeze (base training) or unfreeze (fine-tuning) the linear decoder."""
        for parameter in self.decoder.parameters():
            parameter.requires_grad_(bool(trainable))

    def predict_scores(self, images: torch.Tensor) -> torch.Tensor:
        """Whitened PCA scores ``(B, K)`` of images ``(B, 1, X, Y, Z)``."""
        return self.encoder(images)

    def decode(self, scores_whitened: torch.Tensor) -> torch.Tensor:
        """Particles ``(B, N, 3)`` (world mm) from whitened scores ``(B, K)``."""
        return self.decoder(scores_whitened * self.score_std + self.score_mean)

    def forward(self, images: torch.Tensor, active_scales: int | None = None) -> ModelOutput:
        """Predict world particles; ``active_scales`` may be None or 1 (one scale)."""
        if active_scales not in (None, 1):
            raise ValueError(f"DeepSSM has one output scale; got active_scales={active_scales}")
        return ModelOutput(particles=[self.decode(self.predict_scores(images))])
