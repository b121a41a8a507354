"""TL-DeepSSM: a correspondence autoencoder plus an image encoder to its latent space.

Architecture (ShapeWorks ``DeepSSMNet_TLNet``)
----------------------------------------------
* **Correspondence encoder**: ``3N -> 1024 -> 512 -> L`` (``fc-en1..3``), PReLU between.
* **Correspondence decoder**: ``L -> 512 -> 1024 -> 3N`` (``fc-de1..3``), PReLU between.
* **Image encoder**: the DeepSSM convolutional backbone plus ``Linear(96 -> L)``.

Training has three stages (:mod:`shapeworks_progressive.baselines`): the autoencoder
alone; the image encoder matched to the frozen autoencoder's latent codes ("T-flank");
then both jointly with ``loss_ae + alpha * loss_latent``. At inference the image encoder
feeds the decoder: image -> latent -> particles.

Differences from ShapeWorks
---------------------------
* The autoencoder works on particles centred on the mean training shape and divided by
  one scale (mm), both buffers of the model; the decoder output is mapped back to world
  mm. ShapeWorks feeds raw world coordinates, which makes the first layer's input depend
  on where the world origin is.
* The image encoder does not need (or read) PCA whitening files.
* Inference is :meth:`forward` (``ParticleModel``), not a dummy-tensor mode switch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .base import ModelOutput, ParticleModel
from .deepssm import ConvolutionalBackbone, xavier_init

__all__ = ["TLDeepSSM"]


class _CorrespondenceEncoder(nn.Module):
    def __init__(self, num_particles: int, latent_dim: int):
        super().__init__()
        self.fc = nn.Sequential(OrderedDict([
            ("fc-en1", nn.Linear(3 * num_particles, 1024)), ("relu1", nn.PReLU()),
            ("fc-en2", nn.Linear(1024, 512)), ("relu2", nn.PReLU()),
            ("fc-en3", nn.Linear(512, latent_dim))]))

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        return self.fc(flat)


class _CorrespondenceDecoder(nn.Module):
    def __init__(self, num_particles: int, latent_dim: int):
        super().__init__()
        self.fc = nn.Sequential(OrderedDict([
            ("fc-de1", nn.Linear(latent_dim, 512)), ("relu1", nn.PReLU()),
            ("fc-de2", nn.Linear(512, 1024)), ("relu2", nn.PReLU()),
            ("fc-de3", nn.Linear(1024, 3 * num_particles))]))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.fc(latent)


class _ImageEncoder(nn.Module):
    def __init__(self, grid_size: Sequence[int], latent_dim: int, pool_size: int | None):
        super().__init__()
        self.ConvolutionalBackbone = ConvolutionalBackbone(grid_size, pool_size=pool_size)
        self.latent = nn.Linear(96, latent_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.latent(self.ConvolutionalBackbone(images))


class TLDeepSSM(ParticleModel):
    """TL-DeepSSM for one particle scale, no segmentation output.

    Parameters
    ----------
    grid_size : sequence of 3 int
        Voxels per axis (X, Y, Z) of the common image grid.
    template_world : (N, 3) array-like
        Mean training shape, world mm, model order: the autoencoder's centre.
    latent_dim : int
        Size L of the shared latent space (ShapeWorks uses the PCA dimension).
    coordinate_scale_mm : float, default: 10.0
        Particles are divided by this (after centring) before the autoencoder; use the
        training shapes' RMS deviation from the template.
    pool_size : int, optional
        See :class:`~shapeworks_progressive.models.deepssm.ConvolutionalBackbone`.
    """

    has_segmentation = False

    def __init__(self, grid_size: Sequence[int], template_world: Any, latent_dim: int, *,
                 coordinate_scale_mm: float = 10.0, pool_size: int | None = None):
        super().__init__()
        template = np.asarray(template_world, dtype=np.float32)
        if template.ndim != 2 or template.shape[1] != 3:
            raise ValueError(f"template_world must be (N, 3); got shape {template.shape}")
        if int(latent_dim) < 1 or not coordinate_scale_mm > 0:
            raise ValueError(f"latent_dim must be >= 1 and coordinate_scale_mm > 0; got "
                             f"{latent_dim!r}, {coordinate_scale_mm!r}")
        num_particles = template.shape[0]
        self.scale_sizes = [num_particles]
        self.latent_dim = int(latent_dim)
        self._kwargs = dict(grid_size=[int(v) for v in grid_size], latent_dim=int(latent_dim),
                            coordinate_scale_mm=float(coordinate_scale_mm),
                            pool_size=None if pool_size is None else int(pool_size))
        self.register_buffer("template_world", torch.from_numpy(template.copy()))
        self.register_buffer("coordinate_scale_mm",
                             torch.tensor(float(coordinate_scale_mm), dtype=torch.float32))
        self.correspondence_encoder = _CorrespondenceEncoder(num_particles, self.latent_dim)
        self.correspondence_decoder = _CorrespondenceDecoder(num_particles, self.latent_dim)
        self.image_encoder = _ImageEncoder(grid_size, self.latent_dim, pool_size)
        xavier_init(self)

    @property
    def init_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self._kwargs)
        kwargs["template_world"] = self.template_world.detach().cpu().numpy()
        return kwargs

    # Parts --------------------------------------------------------------------------
    def autoencoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the correspondence encoder and decoder."""
        return (list(self.correspondence_encoder.parameters())
                + list(self.correspondence_decoder.parameters()))

    def set_autoencoder_trainable(self, trainable: bool) -> None:
        """Freeze (T-flank stage) or unfreeze the correspondence autoencoder."""
        for parameter in self.autoencoder_parameters():
            parameter.requires_grad_(bool(trainable))

    def encode_particles(self, particles_world: torch.Tensor) -> torch.Tensor:
        """Latent codes ``(B, L)`` of world particles ``(B, N, 3)`` (mm)."""
        centred = (particles_world - self.template_world) / self.coordinate_scale_mm
        return self.correspondence_encoder(centred.reshape(len(particles_world), -1))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """World particles ``(B, N, 3)`` (mm) from latent codes ``(B, L)``."""
        flat = self.correspondence_decoder(latent)
        offsets = flat.reshape(len(latent), -1, 3) * self.coordinate_scale_mm
        return offsets + self.template_world

    def autoencode(self, particles_world: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction (B, N, 3) mm, latent (B, L))`` of world particles."""
        latent = self.encode_particles(particles_world)
        return self.decode(latent), latent

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Latent codes ``(B, L)`` predicted from images ``(B, 1, X, Y, Z)``."""
        return self.image_encoder(images)

    def forward(self, images: torch.Tensor, active_scales: int | None = None) -> ModelOutput:
        """Inference: image -> latent -> decoder particles (world mm)."""
        if active_scales not in (None, 1):
            raise ValueError(
                f"TLDeepSSM has one output scale; got active_scales={active_scales}")
        return ModelOutput(particles=[self.decode(self.encode_image(images))])
