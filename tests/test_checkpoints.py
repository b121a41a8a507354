"""Checkpoints round trip through torch.load(weights_only=True)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shapeworks_progressive.checkpoints import load_checkpoint, load_model, save_checkpoint
from shapeworks_progressive.models.progressive import ProgressiveDeepSSM

from synthetic_ellipsoids import farthest_point_directions


# plain model; PCA-score + pose global head with segmentation features (arrays in kwargs)
@pytest.mark.parametrize("options", [{}, {"basis_modes": 3, "pose": True, "seg_features": True}])
def test_checkpoint_rebuilds_the_same_predictions(tmp_path, options):
    torch.manual_seed(0)
    template = farthest_point_directions(8) * 5 + 10
    options = dict(options)
    if options.pop("basis_modes", 0):
        options["shape_basis"] = np.random.default_rng(0).normal(size=(3, 8, 3))
    model = ProgressiveDeepSSM([4, 8], template, [1, 2, 3], [2.0] * 3, (7, 9, 8), channels=2,
                               levels=2, head_hidden=8, global_hidden=8, **options)
    with torch.no_grad():  # non-zero heads, so a wrong reload would change the output
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    prediction = {"grid": {"origin": [1, 2, 3], "spacing": [2.0] * 3, "size": [7, 9, 8]},
                  "particle_order": np.arange(8)[::-1], "template_world": template,
                  "reference": {"image": np.zeros((7, 9, 8), np.float32), "name": "s0"}}
    path = save_checkpoint(tmp_path / "best.pt", model=model, config={"run": {"seed": 0}},
                           prediction=prediction, kind="best", train_state={"epochs_done": 2})
    raw = torch.load(path, weights_only=True)
    assert raw["kind"] == "best" and raw["model_init_kwargs"]["scale_sizes"] == [4, 8]
    assert not list(tmp_path.glob(".*tmp*"))  # atomic: no temporary file left behind

    loaded, meta = load_model(path)
    images = torch.randn(2, 1, 7, 9, 8)
    model.eval()
    for a, b in zip(model(images).particles, loaded(images).particles):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert meta["prediction"]["particle_order"].tolist() == list(range(7, -1, -1))
    assert meta["prediction"]["reference"]["image"].shape == (7, 9, 8)
    assert meta["train_state"]["epochs_done"] == 2 and meta["config"]["run"]["seed"] == 0


def test_not_a_checkpoint_is_named(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="other.pt: not a shapeworks_progressive checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
