"""Robustness, splits and sizes: too few subjects, empty splits, changed splits, leaks.

- no training subject, more particles per scale than the files hold, more PCA modes than
  the training shapes give: a clear error (status 2 from the commands), before data work;
- an empty validation split: a warning, the last epoch is kept (documented clamp);
  an empty test split asked for by ``predict``: an error naming the split;
- a split changed after preparation: the dataset cache notices and rebuilds;
- a test subject never enters training, normalization, the template or augmentation.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from shapeworks_progressive.augmentation import (AugmentationSettings, augment_prepared_data,
                                                 augment_training_split)
from shapeworks_progressive.cli import main
from shapeworks_progressive.dataset import prepare_dataset
from shapeworks_progressive.errors import ShapeWorksInputError
from shapeworks_progressive.pca import fit_pca
from shapeworks_progressive.project import Project

from test_dataset import _make_project
from test_predict import TINY_CONFIG, make_consistent_project, train_tiny


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _set_splits(path, splits: dict) -> None:
    project = Project.load(path)
    for subject in project.subjects:
        if subject.name in splits:
            subject.extra["split"] = splits[subject.name]
    project.save(overwrite=True)


def _prepare(path, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare_dataset(path, folder / "cache", spacing=2.0, padding_mm=4.0,
                               progress=False)


def _config(folder):
    config = folder / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    return config


def test_no_training_subject_is_an_error_before_data_work(tmp_path, capsys):
    path, _ = _make_project(tmp_path)
    _set_splits(path, {f"ell_{i}": "val" for i in range(4)})
    code = main(["train", str(path), "--config", str(_config(tmp_path)), "--out",
                 str(tmp_path / "run")])
    assert code == 2
    assert "no subject has split 'train'" in capsys.readouterr().err
    assert not (tmp_path / "progressive_runs").exists() and not (tmp_path / "run").exists()


def test_more_particles_per_scale_than_the_files_hold(tmp_path, capsys):
    path, _ = _make_project(tmp_path)
    code = main(["train", str(path), "--config", str(_config(tmp_path)), "--out",
                 str(tmp_path / "run"), "--scales", "16,32,128"])
    assert code == 2
    err = capsys.readouterr().err
    assert "128" in err and "64" in err
    assert not (tmp_path / "run").exists()


def test_more_pca_modes_than_training_shapes_give():
    shapes = np.random.default_rng(0).normal(size=(3, 10, 3))
    with pytest.raises(ShapeWorksInputError, match="asked for 5 PCA modes; 3 training "
                                                   "shapes give 2 non-zero modes"):
        fit_pca(shapes, num_modes=5)
    with pytest.raises(ShapeWorksInputError, match="at least 2 training shapes, got 1"):
        fit_pca(shapes[:1])


def test_compare_with_one_training_subject_is_an_error_naming_it(tmp_path, capsys):
    path, _ = make_consistent_project(tmp_path)
    _set_splits(path, {f"ell_{i}": "val" for i in range(1, 4)})
    code = main(["compare", str(path), "--config", str(_config(tmp_path)), "--models",
                 "deepssm", "--seeds", "1", "--epochs", "1", "--out", str(tmp_path / "cmp"),
                 "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "compare needs at least 2 subjects with split 'train'" in err
    assert "it has 1: ell_0" in err and "Traceback" not in err
    assert not (tmp_path / "cmp").exists()


def test_compare_lists_every_split_and_image_problem_at_once(tmp_path, capsys):
    from shapeworks_progressive.project import Project

    path, _ = make_consistent_project(tmp_path)
    _set_splits(path, {**{f"ell_{i}": "val" for i in range(1, 6)}})
    missing = next(s for s in Project.load(path).subjects if s.name == "ell_2").image
    Path(missing).unlink()
    code = main(["compare", str(path), "--config", str(_config(tmp_path)), "--models",
                 "deepssm", "--seeds", "1", "--epochs", "1", "--out", str(tmp_path / "cmp"),
                 "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no subject has split 'test'" in err
    assert "it has 1: ell_0" in err
    assert "subject 'ell_2' (val): image file not found" in err
    assert not (tmp_path / "cmp").exists()


def test_empty_validation_split_warns_and_keeps_the_last_epoch(tmp_path, caplog):
    path, _ = make_consistent_project(tmp_path)
    _set_splits(path, {"ell_4": "train"})
    with caplog.at_level(logging.WARNING):
        train_tiny(path, tmp_path / "run")
    assert "no subject has split 'val'" in caplog.text
    checkpoint = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert checkpoint["train_state"]["epochs_done"] == 2


def test_empty_test_split_is_named_by_predict(tmp_path, capsys):
    path, _ = make_consistent_project(tmp_path)
    train_tiny(path, tmp_path / "run")
    _set_splits(path, {"ell_5": "val"})
    capsys.readouterr()
    code = main(["predict", str(path), "--model", str(tmp_path / "run"), "--device", "cpu"])
    assert code == 2
    assert "split 'test'" in capsys.readouterr().err
    assert not (tmp_path / "run" / "predictions").exists()


def test_changed_split_after_preparation_rebuilds_the_cache(tmp_path):
    path, _ = _make_project(tmp_path)
    first = _prepare(path, tmp_path)
    assert first.split("val").names == ["ell_4"]
    _set_splits(path, {"ell_4": "train"})
    second = _prepare(path, tmp_path)
    assert second.split("train").names == ["ell_0", "ell_1", "ell_2", "ell_3", "ell_4"]
    assert len(second.split("val")) == 0
    assert second.manifest["key"] != first.manifest["key"]
    assert not np.allclose(second.template_world, first.template_world)
    _set_splits(path, {"ell_4": "val"})
    third = _prepare(path, tmp_path)
    assert third.split("val").names == ["ell_4"]
    np.testing.assert_array_equal(third.template_world, first.template_world)


def test_test_subject_never_enters_training_or_augmentation(tmp_path):
    path, _ = _make_project(tmp_path)
    data = _prepare(path, tmp_path)
    test_names = set(data.split("test").names)
    assert test_names == {"ell_5"} and not test_names & set(data.split("train").names)

    # the test image does not influence normalization, template, grid or training arrays
    image_path = tmp_path / "ell_5.nrrd"
    image = sitk.ReadImage(str(image_path), sitk.sitkFloat32)
    noise = np.random.default_rng(1).uniform(0, 1e4, sitk.GetArrayFromImage(image).shape)
    changed = sitk.GetImageFromArray(noise.astype(np.float32))
    changed.CopyInformation(image)
    sitk.WriteImage(changed, str(image_path))
    again = _prepare(path, tmp_path)
    assert again.manifest["key"] != data.manifest["key"]  # rebuilt, not read from cache
    assert again.normalization == data.normalization
    assert again.grid == data.grid
    np.testing.assert_array_equal(again.template_world, data.template_world)
    np.testing.assert_array_equal(again.split("train").images, data.split("train").images)

    # augmentation takes the training split only and draws from training subjects only
    settings = AugmentationSettings(count=3, sampler="gaussian", max_landmarks=16,
                                    field_stride=4)
    with pytest.raises(ShapeWorksInputError, match="training split only"):
        augment_training_split(data.split("test"), data.grid, tmp_path / "aug", settings)
    augmented = augment_prepared_data(data, tmp_path / "aug", settings)
    assert set(augmented.base_names) <= set(data.split("train").names)
    train_particles = data.split("train").particles_world.astype(float)
    np.testing.assert_allclose(augmented.pca.mean_world.reshape(train_particles.shape[1:]),
                               train_particles.mean(axis=0), atol=1e-4)
