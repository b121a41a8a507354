"""Robustness, particles: different counts, empty files, NaN values.

Each command checks the particle files before any long work and names every offending
subject and file in one error (status 2): ``info``, ``train`` (before image work: no
cache, no run folder), ``predict`` (model trained for another count: nothing written) and
``evaluate`` (ground truth unreadable or of another count: nothing written).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from shapeworks_progressive.cli import main
from shapeworks_progressive.particles import write_particles

from test_dataset import _make_project
from test_predict import TINY_CONFIG, make_consistent_project, train_tiny


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _break_particles(folder):
    """ell_1: 10 particles; ell_3: empty file; ell_4: a NaN value."""
    write_particles(folder / "ell_1_world.particles", np.ones((10, 3)))
    (folder / "ell_3_world.particles").write_text("", encoding="utf-8")
    text = (folder / "ell_4_world.particles").read_text(encoding="utf-8").splitlines()
    text[5] = "nan 1.0 2.0"
    (folder / "ell_4_world.particles").write_text("\n".join(text) + "\n", encoding="utf-8")


def test_info_names_every_bad_particle_file(tmp_path, capsys):
    path, _ = _make_project(tmp_path)
    _break_particles(tmp_path)
    assert main(["info", str(path)]) == 1
    out = capsys.readouterr()
    text = out.out + out.err
    for name in ("ell_1_world.particles", "ell_3_world.particles", "ell_4_world.particles"):
        assert name in text


def test_train_names_every_bad_particle_file_before_image_work(tmp_path, capsys):
    path, _ = _make_project(tmp_path)
    _break_particles(tmp_path)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    out = tmp_path / "run"
    code = main(["train", str(path), "--config", str(config), "--out", str(out),
                 "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "subject 'ell_1'" in err and "ell_1_world.particles has 10 particles" in err
    assert "subject 'ell_3'" in err and "ell_3_world.particles is empty" in err
    assert "subject 'ell_4'" in err and "ell_4_world.particles holds NaN or Inf" in err
    assert "3 problem(s)" in err
    assert not out.exists()
    assert not (tmp_path / "progressive_runs" / "cache").exists()


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """A tiny trained model and its predictions of the test and val subjects."""
    folder = tmp_path_factory.mktemp("particles")
    path, _ = make_consistent_project(folder)
    train_tiny(path, folder / "run")
    assert main(["predict", str(path), "--model", str(folder / "run"), "--subjects", "test",
                 "val", "--device", "cpu", "--no-progress", "--no-project"]) == 0
    return folder, path


def test_predict_refuses_a_model_for_another_count_before_writing(predicted, tmp_path,
                                                                  capsys):
    folder, path = predicted
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("run", "progressive_runs"))
    for subject in range(6):
        write_particles(copy / f"ell_{subject}_world.particles", np.ones((40, 3)))
    out = tmp_path / "predictions"
    code = main(["predict", str(copy / path.name), "--model", str(folder / "run"),
                 "--out", str(out), "--device", "cpu", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "predicts 64 particles" in err and "has 40" in err and "_world.particles" in err
    assert not out.exists()


def test_evaluate_names_every_bad_ground_truth_before_writing(predicted, tmp_path, capsys):
    folder, path = predicted
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("progressive_runs"))
    write_particles(copy / "ell_5_world.particles", np.ones((12, 3)))
    (copy / "ell_4_world.particles").write_text("1 2 3\nnan 0 0\n", encoding="utf-8")
    out = tmp_path / "evaluation"
    code = main(["evaluate", str(copy / path.name), "--predictions", str(copy / "run"),
                 "--out", str(out), "--no-report"])
    assert code == 2
    err = capsys.readouterr().err
    assert "subject 'ell_5'" in err and "has 12 particles but the prediction has 64" in err
    assert "subject 'ell_4'" in err and "ell_4_world.particles holds NaN or Inf" in err
    assert not out.exists()
