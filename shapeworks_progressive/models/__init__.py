"""Networks that predict particles from images; all follow :class:`ParticleModel`.

Models are named by ``"module:Class"`` paths inside this package, so checkpoints can
rebuild them without pickling. Short names for the config live in ``MODEL_NAMES``.
"""

from __future__ import annotations

import importlib

from .base import ModelOutput, ParticleModel

__all__ = ["ModelOutput", "ParticleModel", "MODEL_NAMES", "model_class", "model_class_path"]

# Config name -> "module:Class" (module relative to this package's parent)
MODEL_NAMES = {
    "progressive": "shapeworks_progressive.models.progressive:ProgressiveDeepSSM",
}


def model_class(name: str) -> type[ParticleModel]:
    """Return the model class for a config name or a ``"module:Class"`` path.

    Only classes inside ``shapeworks_progressive`` that subclass :class:`ParticleModel`
    are accepted.
    """
    path = MODEL_NAMES.get(name, name)
    module_name, _, class_name = path.partition(":")
    if not class_name or not module_name.startswith("shapeworks_progressive."):
        message = (f"unknown model {name!r}; use one of {sorted(MODEL_NAMES)} or a "
                   f"'shapeworks_progressive.<module>:<Class>' path")
        raise ValueError(message)
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, ParticleModel)):
        raise ValueError(f"{path!r} is not a ParticleModel class")
    return cls


def model_class_path(model: ParticleModel) -> str:
    """The ``"module:Class"`` path that :func:`model_class` resolves back to ``model``'s class."""
    cls = type(model)
    return f"{cls.__module__}:{cls.__qualname__}"
