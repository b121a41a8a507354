"""DistributedDataParallel training with 2 CPU processes (gloo) on a tiny case."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from shapeworks_progressive.checkpoints import load_model
from shapeworks_progressive.config import load_config
from shapeworks_progressive.training import build_model, evaluate_rmse, train_model

from synthetic_ellipsoids import make_split

SCALES = [4, 8, 16]
CONFIG = {
    "data": {"scales": SCALES},
    "model": {"channels": 2, "levels": 2, "head_hidden": 8, "global_hidden": 8},
    "schedule": {"epochs_per_stage": 1, "final_epochs": 1},
    "optim": {"batch_size": 2},
    "run": {"device": "cpu", "num_threads": 1},
}


def _data():
    train, grid = make_split(6, seed=0)
    val, _ = make_split(3, seed=1)  # odd: the two processes get 2 and 1 subjects
    data = SimpleNamespace(scale_sizes=SCALES, grid=grid,
                           template_world=train.particles_world.mean(axis=0))
    return train, val, data


def _worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank,
                            world_size=2)
    try:
        train, val, data = _data()
        config = load_config(overrides=CONFIG)
        model = build_model(config, data)
        train_model(model, train, val, config, f"{folder}/run", progress=False)
        torch.save(model.state_dict(), f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_cpu_processes_train_in_step(tmp_path):
    mp.start_processes(_worker, args=(str(tmp_path),), nprocs=2, join=True,
                       start_method="spawn")
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key, value in rank0.items():  # DDP kept the replicas identical
        torch.testing.assert_close(rank1[key], value, rtol=0, atol=0, msg=key)
    trained = [k for k in rank0 if k.startswith("point_heads.2.")]
    assert trained and any(rank0[k].abs().sum() > 0 for k in trained)

    # rank 0 wrote the files; the logged val RMSE is over both processes' subjects
    model, meta = load_model(tmp_path / "run" / "last.pt")
    assert meta["train_state"]["epochs_done"] == 3
    _, val, _ = _data()
    sums = evaluate_rmse(model, val, batch_size=2)
    history = meta["train_state"]["history"]
    for k, (sq, count) in enumerate(sums, start=1):
        assert count == 3 * SCALES[k - 1]
        assert history[-1][f"val_rmse_s{k}"] == pytest.approx(math.sqrt(sq / count), rel=1e-5)
