"""Exception classes raised for bad user input.

Each message names the subject, the file and the offending value, so that a user can
find and fix the problem without reading a traceback.
"""

from __future__ import annotations

__all__ = [
    "ShapeWorksInputError",
    "ProjectError",
    "ParticleFileError",
    "ParticleCountError",
    "ImageError",
    "ConfigError",
    "ProjectValidationError",
    "MeshWarpError",
    "DeviceError",
]


class ShapeWorksInputError(ValueError):
    """Base class for problems with the user's files or settings."""


class ProjectError(ShapeWorksInputError):
    """A project file (``.swproj`` or ``.xlsx``) cannot be read or is malformed."""


class ParticleFileError(ShapeWorksInputError):
    """A particle file is missing, empty, malformed or holds NaN/Inf values."""


class ParticleCountError(ParticleFileError):
    """Particle files disagree on the number of particles."""


class ImageError(ShapeWorksInputError):
    """An image cannot be read or cannot be used (e.g. constant, all NaN)."""


class ConfigError(ShapeWorksInputError):
    """A training or prediction configuration is invalid.

    ``problems`` lists every problem found, not only the first.
    """

    def __init__(self, problems: list[str] | str):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(self.problems))


class ProjectValidationError(ShapeWorksInputError):
    """A project failed validation; ``problems`` lists every problem found at once."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} problem(s) in the project:\n  - "
            + "\n  - ".join(self.problems)
        )


class MeshWarpError(ShapeWorksInputError):
    """A template mesh and its particles cannot give a mesh warp (or a warp gave NaN)."""


class DeviceError(ShapeWorksInputError):
    """The requested compute device (e.g. a CUDA GPU) is missing or unusable."""
