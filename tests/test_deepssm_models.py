"""Tests of the Base-DeepSSM and TL-DeepSSM baselines on tiny synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shapeworks_progressive.models.base import ModelOutput, ParticleModel
from shapeworks_progressive.models.deepssm import (
    ConvolutionalBackbone, DeepSSM, backbone_output_size)
from shapeworks_progressive.models.tl_deepssm import TLDeepSSM
from shapeworks_progressive.pca import fit_pca

GRID = (20, 24, 16)  # under the 60-voxel limit of valid convolutions: padded inside


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _shapes(num_shapes=12, num_particles=16, seed=0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(num_particles, 3)) * 10.0 + 50.0
    return mean + rng.normal(size=(num_shapes, num_particles, 3)) * 2.0


def test_backbone_size_bookkeeping_matches_shapeworks():
    assert [backbone_output_size(d) for d in (60, 64, 100, 128, 160)] == [1, 1, 6, 9, 13]
    assert backbone_output_size(59) == 0
    backbone = ConvolutionalBackbone(GRID)
    assert backbone.padding == (40, 36, 44)
    assert backbone.features.fc1.in_features == 192  # 60^3 padded -> 1^3 voxels
    assert backbone(torch.zeros(2, 1, *GRID)).shape == (2, 96)
    with pytest.raises(ValueError, match=r"\(B, 1, 20, 24, 16\)"):
        backbone(torch.zeros(2, 1, 20, 24, 17))
    pooled = ConvolutionalBackbone((100, 64, 64), pool_size=2)
    assert pooled.features.fc1.in_features == 192 * 2 * 1 * 1


def test_deepssm_shapes_and_shapeworks_state_dict_keys():
    shapes = _shapes()
    pca = fit_pca(shapes, variance_fraction=0.9)
    model = DeepSSM.from_pca(pca, GRID)
    assert isinstance(model, ParticleModel)
    assert model.scale_sizes == [16] and not model.has_segmentation
    output = model.eval()(torch.randn(3, 1, *GRID))
    assert isinstance(output, ModelOutput)
    assert len(output.particles) == 1 and output.particles[0].shape == (3, 16, 3)
    assert output.segmentation_logits is None
    keys = set(model.state_dict())
    for key in ("encoder.ConvolutionalBackbone.features.conv5.weight",
                "encoder.ConvolutionalBackbone.features.fc2.bias",
                "encoder.pca_pred.linear.weight", "decoder.fc_fine.weight",
                "score_mean", "score_std"):
        assert key in keys
    with pytest.raises(ValueError, match="one output scale"):
        model(torch.zeros(1, 1, *GRID), active_scales=2)


def test_pca_decoder_reproduces_mean_and_training_shapes():
    shapes = _shapes()
    pca = fit_pca(shapes, variance_fraction=None)  # all modes: shapes are in the span
    model = DeepSSM.from_pca(pca, GRID)
    # Zero *un-whitened* scores give the mean: whitened scores = -mean/std.
    zero_scores = torch.from_numpy((-pca.score_mean / pca.score_std)[None]).float()
    mean = model.decode(zero_scores)[0].detach().numpy()
    np.testing.assert_allclose(mean, pca.mean_world, atol=1e-4)
    whitened = torch.from_numpy(pca.whiten(pca.project(shapes[3]))[None]).float()
    np.testing.assert_allclose(model.decode(whitened)[0].detach().numpy(), shapes[3],
                               atol=1e-3)


def test_frozen_decoder_gets_no_gradient_until_fine_tuning():
    pca = fit_pca(_shapes(), variance_fraction=0.9)
    model = DeepSSM.from_pca(pca, GRID)
    target = torch.from_numpy(_shapes(num_shapes=2, seed=1)).float()
    images = torch.randn(2, 1, *GRID)
    loss = ((model(images).particles[0] - target) ** 2).mean()
    loss.backward()
    assert model.decoder.fc_fine.weight.grad is None
    assert not model.decoder.fc_fine.weight.requires_grad
    assert model.encoder.pca_pred.linear.weight.grad.abs().sum() > 0
    model.set_decoder_trainable(True)
    model.zero_grad()
    ((model(images).particles[0] - target) ** 2).mean().backward()
    assert model.decoder.fc_fine.weight.grad.abs().sum() > 0


def test_deepssm_rebuilds_from_init_kwargs_and_state_dict():
    pca = fit_pca(_shapes(), variance_fraction=0.9)
    model = DeepSSM.from_pca(pca, GRID).eval()
    kwargs = model.init_kwargs
    assert kwargs["grid_size"] == list(GRID) and kwargs["pca_modes"].shape == pca.modes.shape
    with torch.no_grad():
        model.decoder.fc_fine.bias.add_(1.0)  # as after fine-tuning
    rebuilt = DeepSSM(**kwargs)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    images = torch.randn(1, 1, *GRID)
    torch.testing.assert_close(rebuilt(images).particles[0], model(images).particles[0])


def test_tl_deepssm_shapes_and_autoencoder_round_trip():
    shapes = _shapes()
    template = shapes.mean(0)
    model = TLDeepSSM(GRID, template, latent_dim=4, coordinate_scale_mm=2.0)
    assert model.scale_sizes == [16]
    particles = torch.from_numpy(shapes[:3]).float()
    recon, latent = model.autoencode(particles)
    assert recon.shape == (3, 16, 3) and latent.shape == (3, 4)
    zt = model.encode_image(torch.randn(3, 1, *GRID))
    assert zt.shape == (3, 4)
    output = model.eval()(torch.randn(2, 1, *GRID))
    assert output.particles[0].shape == (2, 16, 3) and output.segmentation_logits is None
    # Rebuilt from init kwargs plus state dict, the inference path is identical.
    rebuilt = TLDeepSSM(**model.init_kwargs)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    images = torch.randn(1, 1, *GRID)
    torch.testing.assert_close(rebuilt(images).particles[0], model(images).particles[0])


def test_tl_autoencoder_freeze_blocks_its_gradients():
    shapes = _shapes()
    model = TLDeepSSM(GRID, shapes.mean(0), latent_dim=4)
    model.set_autoencoder_trainable(False)
    particles = torch.from_numpy(shapes[:2]).float()
    with torch.no_grad():
        target_latent = model.encode_particles(particles)
    zt = model.encode_image(torch.randn(2, 1, *GRID))
    ((zt - target_latent) ** 2).mean().backward()
    assert all(p.grad is None for p in model.autoencoder_parameters())
    assert model.image_encoder.latent.weight.grad.abs().sum() > 0


# -- stage logic (baselines.py) on a tiny prepared data set ------------------------------

def _prepared(num_train=6, num_val=2, grid_size=(12, 12, 12)):
    """A PreparedData whose image intensity encodes the shape's size (learnable)."""
    from shapeworks_progressive.dataset import PreparedData, SplitData
    from shapeworks_progressive.grid import Grid
    from shapeworks_progressive.normalization import IntensityNormalization

    rng = np.random.default_rng(0)
    base = rng.normal(size=(16, 3))
    grid = Grid((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), grid_size)

    def split(count):
        sizes = rng.uniform(0.5, 1.5, size=count)
        particles = (base[None] * 3.0 * sizes[:, None, None] + 6.0
                     + 0.2 * rng.normal(size=(count, 16, 3))).astype(np.float32)
        images = (np.ones((count, *grid_size)) * (sizes[:, None, None, None] - 1.0)
                  + 0.01 * rng.normal(size=(count, *grid_size))).astype(np.float32)
        return SplitData(names=[f"s{i}" for i in range(count)],
                         subject_indices=list(range(count)), images=images,
                         segmentations=np.zeros((count, *grid_size), np.uint8),
                         particles_world=particles,
                         image_to_world=np.tile(np.eye(4), (count, 1, 1)),
                         registrations=[{} for _ in range(count)])

    train = split(num_train)
    return PreparedData(grid=grid, normalization=IntensityNormalization(),
                        scale_sizes=[16], particle_order=np.arange(16),
                        template_world=train.particles_world.mean(0), reference={},
                        splits={"train": train, "val": split(num_val)})


def _config():
    from shapeworks_progressive.config import load_config

    return load_config(overrides={"run": {"device": "cpu", "amp": False, "num_threads": 1},
                                  "optim": {"batch_size": 3},
                                  "augment": {"intensity_scale": 0.0, "intensity_shift": 0.0,
                                              "noise_std": 0.0}})


def test_deepssm_stages_base_then_fine_tune(tmp_path):
    from shapeworks_progressive.baselines import build_deepssm, load_summary, train_deepssm
    from shapeworks_progressive.checkpoints import load_model

    data = _prepared()
    model, pca = build_deepssm(data, num_modes=2)
    decoder_before = model.decoder.fc_fine.weight.detach().clone()
    result = train_deepssm(model, data.split("train"), data.split("val"), _config(),
                           tmp_path, epochs=2, fine_tune_epochs=1, progress=False)
    assert [s["name"] for s in result.stages] == ["base", "fine_tune"]
    assert [s["epochs"] for s in result.stages] == [2, 1]
    summary = load_summary(tmp_path)
    assert summary["best_stage"] in ("base", "fine_tune")
    best = min(s["best_val_rmse"] for s in result.stages)
    assert summary["best_val_rmse"] == pytest.approx(best)
    # The base stage kept the PCA decoder; fine-tuning changed it.
    base_model, _ = load_model(tmp_path / "base" / "best.pt")
    torch.testing.assert_close(base_model.decoder.fc_fine.weight, decoder_before)
    tuned, _ = load_model(tmp_path / "fine_tune" / "best.pt")
    assert not torch.allclose(tuned.decoder.fc_fine.weight, decoder_before)
    loaded, meta = load_model(result.best_path)
    assert isinstance(loaded, DeepSSM) and meta["model_class"].endswith(":DeepSSM")


def test_tl_deepssm_three_stages(tmp_path):
    from shapeworks_progressive.baselines import TLSettings, build_tl_deepssm, train_tl_deepssm
    from shapeworks_progressive.checkpoints import load_model

    data = _prepared()
    model = build_tl_deepssm(data, latent_dim=3)
    train = data.split("train")
    particles = torch.from_numpy(train.particles_world)
    with torch.no_grad():
        ae_error_before = float(((model.autoencode(particles)[0] - particles) ** 2).mean())
    settings = TLSettings(ae_epochs=3, tf_epochs=1, joint_epochs=1)
    config = _config()
    config["optim"]["lr"] = 3e-3
    result = train_tl_deepssm(model, train, data.split("val"), config, tmp_path, settings,
                              progress=False)
    assert [s["name"] for s in result.stages] == ["ae", "t_flank", "joint"]
    log = (tmp_path / "train_log.csv").read_text().splitlines()
    assert len(log) == 1 + 5 and log[1].split(",")[1] == "ae"
    # The autoencoder stage trained the autoencoder (reconstruction improved).
    ae_model, _ = load_model(tmp_path / "stage_ae.pt")
    with torch.no_grad():
        ae_error = float(((ae_model.autoencode(particles)[0] - particles) ** 2).mean())
    assert ae_error < ae_error_before
    # T-flank left the autoencoder exactly as the AE stage did.
    tf_model, _ = load_model(tmp_path / "stage_t_flank.pt")
    for a, b in zip(ae_model.autoencoder_parameters(), tf_model.autoencoder_parameters()):
        torch.testing.assert_close(a, b)
    assert result.best_stage in ("t_flank", "joint") and result.best_val_rmse > 0
    loaded, _ = load_model(result.best_path)
    assert isinstance(loaded, TLDeepSSM)
    # Resume: every stage is done, nothing is retrained and the same best is kept.
    again = train_tl_deepssm(build_tl_deepssm(data, latent_dim=3), train, data.split("val"),
                             config, tmp_path, settings, resume=True, progress=False)
    assert again.best_val_rmse == pytest.approx(result.best_val_rmse)
