"""Tests of particles.py: ``.particles`` text and points-only ``.vtk`` files."""

from __future__ import annotations

import numpy as np
import pytest

from shapeworks_progressive.errors import ParticleFileError
from shapeworks_progressive.particles import read_particles, write_particles


@pytest.fixture
def particles_world():
    return np.random.default_rng(1).normal(size=(37, 3)) * 40.0


@pytest.mark.parametrize("suffix, atol", [(".particles", 5e-7), (".vtk", 1e-8)])
def test_round_trip(tmp_path, particles_world, suffix, atol):
    path = write_particles(tmp_path / f"subject_world{suffix}", particles_world)
    back = read_particles(path)
    assert back.shape == (37, 3)
    np.testing.assert_allclose(back, particles_world, atol=atol, rtol=0)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp file left


def test_reads_shapeworks_text_variants(tmp_path):
    path = tmp_path / "p.particles"
    # optimizer style (trailing space), Studio style (runs of spaces), savetxt %.18e
    path.write_text("1 2 3 \n4    5    6\n7.000000000000000000e+00 8 9\n")
    np.testing.assert_array_equal(read_particles(path), [[1, 2, 3], [4, 5, 6], [7, 8, 9]])


def test_real_left_atrium_file(left_atrium_project):
    path = left_atrium_project.parent / "particles" / "LA_01_groomed_world.particles"
    particles = read_particles(path)
    assert particles.shape == (128, 3)
    np.testing.assert_allclose(particles[0], [4.56685, 4.63742, 27.3011])


@pytest.mark.parametrize("text, match", [("", "is empty"), ("1 2 3 4", "not a multiple of 3"),
                                         ("1 2 x", "not a number")])
def test_bad_files(tmp_path, text, match):
    path = tmp_path / "bad.particles"
    path.write_text(text)
    with pytest.raises(ParticleFileError, match=match):
        read_particles(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.particles"):
        read_particles(tmp_path / "nothere.particles")


def test_write_refuses_nan_and_bad_shape(tmp_path):
    with pytest.raises(ParticleFileError, match="NaN or Inf"):
        write_particles(tmp_path / "a.particles", np.array([[np.nan, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        write_particles(tmp_path / "a.particles", np.zeros((4, 2)))
    assert not (tmp_path / "a.particles").exists()
