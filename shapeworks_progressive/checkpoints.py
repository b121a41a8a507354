"""Checkpoints: plain dicts of tensors and JSON-able values, saved atomically.

A checkpoint holds everything prediction needs, so no other file of the run is required:

``format``                 ``"shapeworks_progressive.checkpoint"``, with ``version``
``kind``                   ``"best"`` or ``"last"``
``model_class``            ``"module:Class"`` path (see :func:`models.model_class`)
``model_init_kwargs``      keyword arguments that rebuild the model (arrays as tensors)
``model_state``            the model's state dict
``config``                 the complete training config
``prediction``             grid, normalization, scale sizes, particle order, template,
                           reference image and any other data description
``train_state``            stage, epochs done, best value, history, RNG states
``optimizer``, ``scaler``  state dicts for resuming

Everything loads with ``torch.load(path, weights_only=True)``: NumPy arrays become
tensors on save and come back as arrays from :func:`to_numpy_tree`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .fileio import atomic_path
from .models import ParticleModel, model_class, model_class_path

__all__ = ["save_checkpoint", "load_checkpoint", "load_model", "to_storable", "to_numpy_tree",
           "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]

CHECKPOINT_FORMAT = "shapeworks_progressive.checkpoint"
CHECKPOINT_VERSION = 1


def to_storable(value: Any) -> Any:
    """Convert ``value`` to what ``torch.load(weights_only=True)`` reads back.

    NumPy arrays become tensors, NumPy scalars Python numbers, paths strings, tuples
    lists; objects with ``to_dict()`` are stored as that dict. Dict keys become strings.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value).copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): to_storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_storable(v) for v in value]
    if hasattr(value, "to_dict"):
        return to_storable(value.to_dict())
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint: {value!r:.80}")


def to_numpy_tree(value: Any) -> Any:
    """Inverse of :func:`to_storable` for tensors: tensors become NumPy arrays."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, dict):
        return {k: to_numpy_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_numpy_tree(v) for v in value]
    return value


def save_checkpoint(path: str | os.PathLike, *, model: ParticleModel, config: dict,
                    prediction: dict, kind: str = "last", train_state: dict | None = None,
                    optimizer: torch.optim.Optimizer | None = None,
                    scaler: Any = None) -> Path:
    """Write a checkpoint atomically (a killed save leaves the old file intact).

    Parameters
    ----------
    path : path-like
        Target file (``.pt``).
    model : ParticleModel
        The model (unwrapped, not DistributedDataParallel).
    config : dict
        The complete training config.
    prediction : dict
        What prediction needs: ``grid``, ``normalization``, ``scale_sizes``,
        ``particle_order``, ``template_world``, ``reference``, ... (arrays allowed).
    kind : {"best", "last"}
    train_state : dict, optional
        Resume state (stage, epoch, history, RNG states).
    optimizer, scaler : optional
        Their state dicts are stored for resuming.
    """
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "kind": kind,
        "model_class": model_class_path(model),
        "model_init_kwargs": to_storable(model.init_kwargs),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": to_storable(config),
        "prediction": to_storable(prediction),
        "train_state": to_storable(train_state or {}),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check its format.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file is not a shapeworks_progressive checkpoint.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt files
        raise ValueError(f"{path}: cannot read the checkpoint: {err}") from err
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a shapeworks_progressive checkpoint")
    if checkpoint.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {checkpoint['version']} is newer than "
                         f"this package reads ({CHECKPOINT_VERSION}); update the package")
    return checkpoint


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu"
               ) -> tuple[ParticleModel, dict[str, Any]]:
    """Rebuild the model of a checkpoint in eval mode.

    Returns
    -------
    model : ParticleModel
        On ``device``, eval mode.
    meta : dict
        ``config``, ``prediction`` (tensors turned into NumPy arrays), ``train_state``,
        ``kind``, ``model_class``, ``path``.
    """
    checkpoint = load_checkpoint(path)
    cls = model_class(checkpoint["model_class"])
    model = cls(**to_numpy_tree(checkpoint["model_init_kwargs"]))
    model.load_state_dict(checkpoint["model_state"])
    model.to(device).eval()
    meta = {
        "path": str(Path(path).resolve()),
        "kind": checkpoint["kind"],
        "model_class": checkpoint["model_class"],
        "config": checkpoint["config"],
        "prediction": to_numpy_tree(checkpoint["prediction"]),
        "train_state": to_numpy_tree(checkpoint["train_state"]),
    }
    return model, meta
