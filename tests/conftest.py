"""Shared fixtures: paths to the read-only example data, and copies to break in tmp_path.

The shared data lives beside the repository (``<repo>/../shared``); it is never copied
into the repository. Tests that need to change files work on a copy in ``tmp_path``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"
EXAMPLES_DIR = SHARED_DIR / "data" / "shapeworks_examples"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``<repo>/../shared`` (read-only); tests using it skip when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared data folder not found: {SHARED_DIR}")
    return SHARED_DIR


@pytest.fixture(scope="session")
def examples_dir(shared_dir) -> Path:
    """Folder of the two ShapeWorks example projects."""
    return shared_dir / "data" / "shapeworks_examples"


@pytest.fixture(scope="session")
def left_atrium_project(examples_dir) -> Path:
    """Left atrium example: 4 subjects, domain ``1``, 128 particles, meshes."""
    return examples_dir / "left_atrium" / "left_atrium.swproj"


@pytest.fixture(scope="session")
def ellipsoid_project(examples_dir) -> Path:
    """Ellipsoid example: 3 subjects with distance-transform images, 128 particles."""
    return examples_dir / "ellipsoid" / "ellipsoid.swproj"


@pytest.fixture
def copy_project(tmp_path):
    """Factory: copy an example project's whole folder into ``tmp_path``.

    ``copy_project(project_path, folder_name=None)`` returns the path of the copied
    project file; everything it names is copied along, so it can be broken freely.
    """

    def _copy(project_path: Path, folder_name: str | None = None) -> Path:
        project_path = Path(project_path)
        destination = tmp_path / (folder_name or project_path.parent.name)
        shutil.copytree(project_path.parent, destination)
        return destination / project_path.name

    return _copy


@pytest.fixture
def left_atrium_copy(copy_project, left_atrium_project) -> Path:
    """A writable copy of the left atrium project in ``tmp_path``."""
    return copy_project(left_atrium_project)
