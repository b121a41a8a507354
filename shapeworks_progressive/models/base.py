"""The interface every particle-predicting network follows, so one trainer fits all.

A model maps a batch of images on the common grid, ``(B, 1, X, Y, Z)``, to one particle
set per active scale, coarse to fine, in world coordinates (mm) and model particle order
(scale ``s`` holds the first ``scale_sizes[s]`` rows of the finest set). It may also
return segmentation logits on the image grid.

A model also reports ``init_kwargs``: the keyword arguments that rebuild it, as plain
JSON-able values or arrays (checkpoints store arrays as tensors). Together with the
state dict this is all :mod:`shapeworks_progressive.checkpoints` needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["ModelOutput", "ParticleModel"]


@dataclass
class ModelOutput:
    """What a :class:`ParticleModel` returns.

    Attributes
    ----------
    particles : list of (B, n_s, 3) Tensor
        One prediction per active scale, coarse to fine; world coordinates in mm, rows in
        model particle order.
    segmentation_logits : (B, 1, X, Y, Z) Tensor or None
        Foreground logits on the input grid, or None when the model has no
        segmentation decoder.
    """

    particles: list[torch.Tensor]
    segmentation_logits: torch.Tensor | None = None


class ParticleModel(nn.Module):
    """Base class of the networks the trainer can fit.

    Subclasses set ``scale_sizes`` (particles per output scale, coarse to fine),
    ``has_segmentation`` and implement :meth:`forward` and :attr:`init_kwargs`.
    """

    scale_sizes: list[int]
    has_segmentation: bool = False

    @property
    def num_scales(self) -> int:
        return len(self.scale_sizes)

    @property
    def init_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this model (JSON-able values or arrays)."""
        raise NotImplementedError

    def scale_parameters(self, scale: int) -> list[nn.Parameter]:
        """Parameters used only by output scale ``scale`` (0-based); empty by default.

        The trainer uses this to report which weights a new stage adds.
        """
        return []

    def forward(self, images: torch.Tensor,
                active_scales: int | None = None) -> ModelOutput:  # pragma: no cover
        """Predict particles for the first ``active_scales`` scales (all when None).

        Parameters
        ----------
        images : (B, 1, X, Y, Z) Tensor
            Normalized images on the common grid.
        active_scales : int, optional
            Number of scales to compute, coarse first; None computes all.
        """
        raise NotImplementedError
