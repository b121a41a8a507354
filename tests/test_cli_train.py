"""The ``train`` command end to end on a tiny synthetic ShapeWorks project."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from shapeworks_progressive.cli import main
from shapeworks_progressive.particles import write_particles
from shapeworks_progressive.project import Project, Subject

from synthetic_ellipsoids import farthest_point_directions


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write_image(path, array_xyz, spacing):
    image = sitk.GetImageFromArray(np.transpose(array_xyz, (2, 1, 0)))
    image.SetSpacing((spacing,) * 3)
    sitk.WriteImage(image, str(path))


@pytest.fixture(scope="module")
def project_path(tmp_path_factory):
    """8 ellipsoid subjects (5 train, 2 val, 1 test), 32 nested particles, 2 mm images."""
    root = tmp_path_factory.mktemp("ellipsoids")
    rng = np.random.default_rng(0)
    directions = farthest_point_directions(32)
    size, spacing = (16, 16, 16), 2.0
    centre = np.full(3, (size[0] - 1) * spacing / 2)
    grid = np.stack(np.meshgrid(*[np.arange(n) * spacing for n in size], indexing="ij"), -1)
    project = Project.new(root / "ell.swproj")
    for i in range(8):
        semi_axes = rng.uniform(6, 10, 3)
        radius = np.sqrt((((grid - centre) / semi_axes) ** 2).sum(-1))
        _write_image(root / f"img{i}.nrrd",
                     (100 / (1 + np.exp((radius - 1) * 8))).astype(np.float32), spacing)
        _write_image(root / f"seg{i}.nrrd", (radius <= 1).astype(np.uint8), spacing)
        write_particles(root / f"p{i}.particles", centre + directions * semi_axes)
        split = "train" if i < 5 else ("val" if i < 7 else "test")
        project.add_subject(Subject(
            name=f"s{i}", shapes=[root / f"seg{i}.nrrd"], groomed=[root / f"seg{i}.nrrd"],
            local_particles=[root / f"p{i}.particles"],
            world_particles=[root / f"p{i}.particles"], alignments=[np.eye(4)],
            procrustes=[np.eye(4)], images={"mri": root / f"img{i}.nrrd"},
            extra={"split": split}))
    project.save(root / "ell.swproj")
    config = {"model": {"channels": 2, "levels": 2, "head_hidden": 8, "global_hidden": 8},
              "schedule": {"epochs_per_stage": 1, "final_epochs": 1},
              "data": {"spacing": 3.0}, "run": {"num_threads": 1}}
    (root / "tiny.json").write_text(json.dumps(config), encoding="utf-8")
    return root / "ell.swproj"


def test_train_writes_a_complete_run_folder(project_path, capsys):
    folder = project_path.parent
    code = main(["train", str(project_path), "--config", str(folder / "tiny.json"),
                 "--scales", "8,16,32", "--name", "r1", "--no-progress"])
    assert code == 0
    run = folder / "progressive_runs" / "r1"
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["scales"] == [8, 16, 32] and config["model"]["channels"] == 2
    split = json.loads((run / "split.json").read_text())
    assert split["train"] == ["s0", "s1", "s2", "s3", "s4"] and split["val"] == ["s5", "s6"]
    with open(run / "train_log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["active_scales"] for r in rows] == ["1", "2", "3"]
    checkpoint = torch.load(run / "best.pt", weights_only=True)
    assert checkpoint["prediction"]["scale_sizes"] == [8, 16, 32]
    assert checkpoint["prediction"]["template_world"].shape == (32, 3)
    assert "val particle RMSE (mm) per scale 8:" in capsys.readouterr().out

    # a second train into the same folder is refused; --resume of a finished run is a no-op
    assert main(["train", str(project_path), "--out", str(run), "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", str(project_path), "--out", str(run), "--resume",
                 "--no-progress"]) == 0


def test_train_with_pca_augmentation_generates_caches_and_reuses_samples(
        project_path, tmp_path, caplog, capsys):
    folder = project_path.parent
    config = json.loads((folder / "tiny.json").read_text())
    config["augment"] = {"pca_samples": 3, "pca_sampler": "gaussian"}
    config["run"]["num_workers"] = 1
    (tmp_path / "aug.json").write_text(json.dumps(config))
    argv = ["train", str(project_path), "--config", str(tmp_path / "aug.json"),
            "--scales", "8,16,32", "--no-progress"]
    caplog.set_level("INFO", logger="shapeworks_progressive")
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert "training on 5 subjects plus 3 PCA-augmented samples (gaussian sampler" in caplog.text
    caches = list((folder / "progressive_runs" / "cache").glob("augmentation-*/manifest.json"))
    assert len(caches) == 1
    manifest = json.loads(caches[0].read_text())
    assert [s["name"] for s in manifest["samples"]] == [
        "augmented_00000", "augmented_00001", "augmented_00002"]
    # only training subjects are warped
    assert {s["base_name"] for s in manifest["samples"]} <= {"s0", "s1", "s2", "s3", "s4"}
    stamp = caches[0].stat().st_mtime_ns

    # a second run with the same settings reuses the samples
    caplog.clear()
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert "reusing 3 cached samples" in caplog.text
    assert caches[0].stat().st_mtime_ns == stamp
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["augment"]["pca_samples"] == 3

    # --resume with another sample count is refused before any sample is generated
    config["augment"]["pca_samples"] = 4
    (tmp_path / "aug4.json").write_text(json.dumps(config))
    assert main(["train", str(project_path), "--config", str(tmp_path / "aug4.json"),
                 "--out", str(tmp_path / "b"), "--resume", "--no-progress"]) == 2
    assert "augment.pca_samples was 3" in capsys.readouterr().err
    assert len(list((folder / "progressive_runs" / "cache").glob("augmentation-*"))) == 1


def test_bad_config_is_reported_before_any_data_work(project_path, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"optim": {"batch_size": 0, "lr": -1}, "schedul": {}}', encoding="utf-8")
    out = tmp_path / "run"
    assert main(["train", str(project_path), "--config", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "optim.batch_size must be a positive integer" in err
    assert "optim.lr must be a number > 0" in err
    assert "unknown section 'schedul'; did you mean 'schedule'?" in err
    assert not out.exists()
