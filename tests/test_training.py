"""Tests of the progressive trainer on tiny synthetic ellipsoids (CPU, one thread)."""

from __future__ import annotations

import csv
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from shapeworks_progressive.checkpoints import load_checkpoint
from shapeworks_progressive.config import load_config, stage_plan, validate_config
from shapeworks_progressive.errors import ConfigError, DeviceError
from shapeworks_progressive.losses import compute_loss
from shapeworks_progressive.models import ModelOutput
from shapeworks_progressive.training import build_model, select_device, train_model

from synthetic_ellipsoids import make_split

SCALES = [4, 8, 16]
TINY = {
    "data": {"scales": SCALES},
    "model": {"channels": 2, "levels": 2, "head_hidden": 8, "global_hidden": 8,
              "shape_modes": 3},
    "schedule": {"epochs_per_stage": 2, "final_epochs": 2},
    "optim": {"batch_size": 4, "lr": 3e-3},
    "augment": {"rotation_deg": 3.0, "translation_mm": 1.0, "scale": 0.02},
    "run": {"device": "cpu", "num_threads": 1, "seed": 3},
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def splits():
    train, grid = make_split(8, seed=0)
    val, _ = make_split(4, seed=1)
    data = SimpleNamespace(scale_sizes=SCALES, grid=grid,
                           template_world=train.particles_world.mean(axis=0),
                           split={"train": train, "val": val}.__getitem__)
    return train, val, data


def _run(splits, out_dir, overrides=None, **kwargs):
    train, val, data = splits
    config = load_config(overrides={**TINY, **(overrides or {})})
    model = build_model(config, data)
    result = train_model(model, train, val, config, out_dir, progress=False,
                         prediction={"scale_sizes": SCALES}, **kwargs)
    return model, result


@pytest.fixture(scope="module")
def full_run(splits, tmp_path_factory):
    """An uninterrupted 3-stage run; captures the weights at every stage start."""
    captured = {}

    def on_stage_start(stage, model):
        captured[stage] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    out = tmp_path_factory.mktemp("full")
    model, result = _run(splits, out, on_stage_start=on_stage_start)
    return model, result, captured


def test_run_writes_log_curves_and_checkpoints(full_run):
    _, result, _ = full_run
    with open(result.log_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [int(r["active_scales"]) for r in rows] == [1, 1, 2, 2, 3, 3]
    # train RMSE only for active scales, val RMSE for every scale
    assert rows[0]["train_rmse_s2"] == "" and float(rows[0]["val_rmse_s3"]) > 0
    assert rows[-1]["train_rmse_s3"] != ""
    assert (result.out_dir / "training_curves.png").stat().st_size > 1000
    best = load_checkpoint(result.best_path)
    val_finest = [float(r["val_rmse_s3"]) for r in rows]
    assert best["train_state"]["best_epoch"] == int(np.argmin(val_finest)) + 1
    assert best["train_state"]["best_val_rmse"] == pytest.approx(min(val_finest))
    # training learned something: finest val RMSE drops below the first epoch's
    assert min(val_finest) < val_finest[0]


def test_new_stage_keeps_earlier_scales_weights(full_run, splits, tmp_path):
    _, _, captured = full_run
    assert sorted(captured) == [1, 2, 3]
    # the end of stage 1, from a run stopped there (same seed, so the same weights)
    _, stopped = _run(splits, tmp_path, max_epochs=2)
    assert not stopped.completed
    end_of_stage1 = load_checkpoint(stopped.last_path)["model_state"]
    for key, value in captured[2].items():
        torch.testing.assert_close(value, end_of_stage1[key], rtol=0, atol=0, msg=key)
    # stage 1 trained scale 1's head and left scale 2's head at its initial values
    head0 = "point_heads.0.mlp.0.weight"
    head1 = "point_heads.1.mlp.0.weight"
    assert not torch.equal(captured[1][head0], captured[2][head0])
    assert torch.equal(captured[1][head1], captured[2][head1])
    assert not torch.equal(captured[2][head1], captured[3][head1])


def test_resume_ends_where_uninterrupted_run_ends(full_run, splits, tmp_path):
    full_model, full_result, _ = full_run
    _, partial = _run(splits, tmp_path, max_epochs=3)  # killed in the middle of stage 2
    assert len(partial.history) == 3
    resumed_model, resumed = _run(splits, tmp_path, resume=True)
    assert resumed.completed and len(resumed.history) == 6
    for key, value in full_model.state_dict().items():
        torch.testing.assert_close(resumed_model.state_dict()[key], value, rtol=0, atol=1e-6,
                                   msg=key)
    for a, b in zip(full_result.history, resumed.history):
        assert a["val_rmse_s3"] == pytest.approx(b["val_rmse_s3"], abs=1e-6)


def test_resume_refuses_a_changed_config(full_run, splits, tmp_path):
    _, result, _ = full_run
    shutil.copy(result.last_path, tmp_path / "last.pt")
    with pytest.raises(ConfigError, match=r"optim\.lr was 0\.003 .* now 0\.01"):
        _run(splits, tmp_path, {"optim": {"batch_size": 4, "lr": 0.01}}, resume=True)


def test_switches_progression_and_segmentation_off(splits, tmp_path):
    overrides = {"schedule": {"progressive": False, "epochs_per_stage": 0, "final_epochs": 2},
                 "loss": {"seg_weight": 0.0, "deep_supervision": "shallow"}}
    _, result = _run(splits, tmp_path, overrides)
    assert [row["active_scales"] for row in result.history] == [3, 3]
    assert all(row["train_seg_loss"] is None for row in result.history)
    assert all(row["train_rmse_s1"] is not None for row in result.history)


def test_switches_change_which_loss_terms_are_active():
    config = load_config(overrides={"data": {"scales": SCALES}})
    assert stage_plan(config, 3) == [(1, 15), (2, 15), (3, 45)]
    off = load_config(overrides={"schedule": {"progressive": False}})
    assert stage_plan(off, 3) == [(3, 75)]
    target = torch.zeros(1, 16, 3)
    output = ModelOutput(particles=[torch.ones(1, n, 3) for n in SCALES],
                         segmentation_logits=torch.zeros(1, 1, 2, 2, 2))
    seg = torch.ones(1, 1, 2, 2, 2)
    terms = compute_loss(output, target, seg, config["loss"])
    assert terms.weights == [1.0, 1.0, 1.0] and terms.segmentation is not None
    # 3 scales x (3 mm^2 + surface 5 x (3 + 3) mm^2) + 5 x (dice 1 - (2*0.5*8+1)/(4+8+1)
    # + bce log 2)
    dice = 1 - 9 / 13
    assert float(terms.total) == pytest.approx(3 * (3 + 5 * 6) + 5 * (dice + np.log(2)),
                                               rel=1e-6)
    shallow = load_config(overrides={"loss": {"deep_supervision": "shallow", "seg_weight": 0}})
    terms = compute_loss(output, target, seg, shallow["loss"])
    assert terms.weights == [0.0, 0.0, 1.0] and terms.segmentation is None
    assert float(terms.total) == pytest.approx(3.0 + 5 * 6)
    plain = load_config(overrides={"loss": {"surface_weight": 0, "seg_weight": 0}})
    assert float(compute_loss(output, target, seg, plain["loss"]).total) == pytest.approx(9.0)


def test_config_errors_are_all_reported_with_hints():
    raw = {"data": {"spacng": 1.0}, "modle": {}, "loss": {"particle": "msee", "seg_weight": -1},
           "optim": {"batch_size": 0, "lr": "fast"}, "run": {"device": "gpu", "amp": 1}}
    with pytest.raises(ConfigError) as info:
        validate_config(raw, source="my.json")
    problems = info.value.problems
    assert len(problems) == 8
    text = "\n".join(problems)
    assert "unknown key data.spacng; did you mean 'spacing'?" in text
    assert "unknown section 'modle'; did you mean 'model'?" in text
    assert ("loss.particle must be one of 'mse', 'focal'; got str 'msee'; did you mean "
            "'mse'?") in text
    assert "optim.lr must be a number > 0; got str 'fast'" in text
    assert "run.amp must be true or false; got int 1" in text
    assert all(p.startswith("my.json: ") for p in problems)


def test_pca_augmentation_settings_are_checked_and_off_by_default():
    from shapeworks_progressive.augmentation import settings_from_config

    assert settings_from_config(validate_config({})) is None
    on = validate_config({"augment": {"pca_samples": 7, "pca_sampler": "gaussian"},
                          "run": {"seed": 3}})
    settings = settings_from_config(on)
    assert (settings.count, settings.sampler, settings.seed) == (7, "gaussian", 3)
    assert settings.variance_fraction == 0.95
    raw = {"augment": {"pca_samples": -1, "pca_sampler": "kd", "pca_variance": 0},
           "run": {"num_workers": 0}}
    with pytest.raises(ConfigError) as info:
        validate_config(raw, source="aug.json")
    text = "\n".join(info.value.problems)
    assert len(info.value.problems) == 4
    assert "augment.pca_samples must be an integer >= 0; got int -1" in text
    assert ("augment.pca_sampler must be one of 'kde', 'gaussian', 'mixture'; got str 'kd'; "
            "did you mean 'kde'?") in text
    with pytest.raises(ConfigError, match="got str 'KDE'; did you mean 'kde'"):
        validate_config({"augment": {"pca_sampler": "KDE"}})
    assert "augment.pca_variance must be a fraction in (0, 1]; got int 0" in text
    assert "run.num_workers must be null or a positive integer; got int 0" in text


def test_config_file_errors(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_config(tmp_path / "missing.json")
    path.write_text('{"schedule": {"epochs_per_stage": 3}}', encoding="utf-8")
    config = load_config(path)
    assert config["schedule"]["epochs_per_stage"] == 3 and config["optim"]["batch_size"] == 8


def test_device_selection_without_a_gpu():
    assert select_device("cpu").type == "cpu"
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert select_device("auto").type == "cpu"
    with pytest.raises(DeviceError, match=r"run.device \(or --device\) is 'cuda'"):
        select_device("cuda")


def _blob_batch(centres_world, origin, spacing, size, sigma_mm=2.0):
    """(B, 1, X, Y, Z) Gaussian blobs around ``centres_world`` (B, 3) and the voxel centres."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1)
    world = np.asarray(origin) + index * np.asarray(spacing)
    blobs = [np.exp(-((world - c) ** 2).sum(-1) / (2 * sigma_mm ** 2)) for c in centres_world]
    return torch.tensor(np.array(blobs), dtype=torch.float32)[:, None], world


def test_spatial_augmentation_moves_image_segmentation_and_particles_together():
    from shapeworks_progressive.training import _spatial_augment

    # anisotropic grid, so an axis-order or spacing mix-up would show
    origin, spacing, size = (-10.0, 5.0, 2.0), (1.0, 1.5, 2.0), (30, 24, 20)
    centres = np.array([[5.0, 20.0, 15.0], [-1.0, 18.0, 20.0], [8.0, 25.0, 12.0]])
    images, world = _blob_batch(centres, origin, spacing, size)
    particles = torch.tensor(centres, dtype=torch.float32)[:, None, :]
    seg = (images > 0.5).float()
    config = load_config(overrides={"augment": {"rotation_deg": 30.0, "translation_mm": 6.0,
                                                "scale": 0.1}})
    grid_box = (torch.tensor(origin, dtype=torch.float64),
                torch.tensor(spacing, dtype=torch.float64))
    generator = torch.Generator().manual_seed(1)
    moved_images, moved_particles, moved_seg = _spatial_augment(
        images, particles, seg, config, generator, grid_box)
    for b in range(len(centres)):
        weights = moved_images[b, 0].numpy()
        blob_centre = (world * weights[..., None]).sum((0, 1, 2)) / weights.sum()
        # the blob's centre lands where its particle goes (within a fifth of a voxel)...
        np.testing.assert_allclose(blob_centre, moved_particles[b, 0].numpy(), atol=0.2)
        # ...and the particle really moved (by more than a voxel)
        assert np.linalg.norm(moved_particles[b, 0].numpy() - centres[b]) > 2.0
        mask_centre = world[moved_seg[b, 0].numpy() > 0].mean(axis=0)
        np.testing.assert_allclose(mask_centre, moved_particles[b, 0].numpy(), atol=0.6)
        assert set(np.unique(moved_seg[b].numpy())) <= {0.0, 1.0}


def test_spatial_augmentation_off_leaves_batches_unchanged(splits):
    from shapeworks_progressive.training import _spatial_augment

    train, _, data = splits
    images = torch.from_numpy(train.images[:2])[:, None]
    particles = torch.from_numpy(train.particles_world[:2])
    config = load_config(overrides={"augment": {"rotation_deg": 0.0, "translation_mm": 0.0,
                                                "scale": 0.0}})
    grid_box = (torch.zeros(3, dtype=torch.float64), torch.full((3,), 2.0, dtype=torch.float64))
    out = _spatial_augment(images, particles, None, config, torch.Generator(), grid_box)
    assert out[0] is images and out[1] is particles and out[2] is None
    with pytest.raises(ConfigError, match=r"augment\.scale must be a number in \[0, 0\.5\)"):
        load_config(overrides={"augment": {"scale": 0.7}})
    with pytest.raises(ConfigError, match=r"augment\.rotation_deg must be a number >= 0"):
        load_config(overrides={"augment": {"rotation_deg": -1}})
