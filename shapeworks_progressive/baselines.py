"""Training stages of the baselines: Base-DeepSSM (plus fine-tuning) and TL-DeepSSM.

Both baselines use the same prepared data (split, grid, normalization, registration),
the same particle loss and the same checkpoint format as the progressive model.

Base-DeepSSM (:func:`train_deepssm`)
    1. ``base``: the network is trained by :func:`training.train_model` (the progressive
       trainer, one scale) with the PCA decoder frozen; the loss is on world particles
       through that decoder, as in ShapeWorks' project-based trainer.
    2. ``fine_tune`` (optional): from the best base weights, the decoder is unfrozen and
       trained for a few more epochs at its own learning rate.
    The run's ``best.pt`` is the stage checkpoint with the lower validation RMSE (the
    epoch mean; ShapeWorks picked its fine-tuned "best" per validation sample).

TL-DeepSSM (:func:`train_tl_deepssm`)
    1. ``ae``: the correspondence autoencoder alone (particle loss on its reconstruction).
    2. ``t_flank``: the autoencoder frozen; the image encoder learns the autoencoder's
       latent codes (mean squared latent difference).
    3. ``joint``: everything, ``loss_ae + alpha * loss_latent``.
    Validation uses the inference path (image -> latent -> decoder) at every T-flank and
    joint epoch, and ``best.pt`` is the best such epoch (ShapeWorks looked at the joint
    stage only). Its epoch loop reuses the trainer's batching, intensity augmentation,
    seeding and learning-rate schedule.

Every stage writes into its own sub-folder of the run folder; ``baseline.json`` sums up
the stages (epochs, best epoch, validation RMSE, seconds).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoints import load_checkpoint, save_checkpoint
from .errors import ConfigError
from .fileio import atomic_path, atomic_write_text
from .models.deepssm import DeepSSM
from .models.tl_deepssm import TLDeepSSM
from .pca import ParticlePCA, fit_pca

__all__ = ["build_deepssm", "build_tl_deepssm", "train_deepssm", "train_tl_deepssm",
           "load_summary", "TLSettings", "BaselineResult", "BEST_NAME", "SUMMARY_NAME"]

logger = logging.getLogger(__name__)

BEST_NAME = "best.pt"
SUMMARY_NAME = "baseline.json"


@dataclass
class BaselineResult:
    """What a baseline run produced.

    Attributes
    ----------
    out_dir : Path
    best_path : Path
        ``out_dir/best.pt``, the checkpoint prediction should use.
    stages : list of dict
        Per stage: ``name``, ``epochs``, ``best_epoch``, ``best_val_rmse`` (mm),
        ``seconds``, ``seconds_per_epoch``, ``folder``.
    best_stage : str
    best_val_rmse : float or None
    """

    out_dir: Path
    best_path: Path
    stages: list[dict] = field(default_factory=list)
    best_stage: str = ""
    best_val_rmse: float | None = None

    def to_dict(self) -> dict:
        return {"out_dir": str(self.out_dir), "best_path": str(self.best_path),
                "stages": self.stages, "best_stage": self.best_stage,
                "best_val_rmse": self.best_val_rmse}


# -- building ---------------------------------------------------------------------------

def build_deepssm(data, *, variance_fraction: float = 0.95, num_modes: int | None = None,
                  pool_size: int | None = None, augmented=None, seed: int = 0
                  ) -> tuple[DeepSSM, ParticlePCA]:
    """Base-DeepSSM for prepared data, its PCA fitted to the training particles only.

    Parameters
    ----------
    data : PreparedData
    variance_fraction, num_modes
        PCA modes kept (see :func:`~shapeworks_progressive.pca.fit_pca`).
    pool_size : int, optional
        See :class:`~shapeworks_progressive.models.deepssm.ConvolutionalBackbone`.
    augmented : AugmentedSet, optional
        When the training set is augmented, the scores are whitened with the statistics
        of the real and augmented shapes together (as ShapeWorks does).
    seed : int, default: 0
        Seeds the network's initial weights.

    Returns
    -------
    (DeepSSM, ParticlePCA)
    """
    particles = np.asarray(data.split("train").particles_world, dtype=np.float64)
    pca = fit_pca(particles, variance_fraction=variance_fraction, num_modes=num_modes)
    if augmented is not None and len(augmented):
        everything = np.concatenate([particles, augmented.particles_world])
        pca = pca.with_whitening(pca.project(everything))
    torch.manual_seed(int(seed))
    model = DeepSSM.from_pca(pca, data.grid.size, pool_size=pool_size)
    return model, pca


def build_tl_deepssm(data, *, latent_dim: int | None = None, variance_fraction: float = 0.95,
                     pool_size: int | None = None, seed: int = 0) -> TLDeepSSM:
    """TL-DeepSSM for prepared data.

    ``latent_dim`` defaults to the number of PCA modes explaining ``variance_fraction`` of
    the training shapes' variance (ShapeWorks uses the PCA dimension). The autoencoder's
    coordinate scale is the training shapes' RMS deviation from the template (mm).
    """
    particles = np.asarray(data.split("train").particles_world, dtype=np.float64)
    template = np.asarray(data.template_world, dtype=np.float64)
    if latent_dim is None:
        latent_dim = fit_pca(particles, variance_fraction=variance_fraction).num_modes
    scale = float(np.sqrt(((particles - template) ** 2).sum(-1).mean()))
    torch.manual_seed(int(seed))
    return TLDeepSSM(data.grid.size, template, latent_dim,
                     coordinate_scale_mm=max(scale, 1e-3), pool_size=pool_size)


# -- shared helpers -----------------------------------------------------------------------

def _stage_config(config: dict, epochs: int, *, lr: float | None = None) -> dict:
    """A copy of ``config`` whose schedule is one stage of ``epochs`` epochs."""
    stage = copy.deepcopy(config)
    stage["schedule"].update(progressive=False, epochs_per_stage=0, final_epochs=int(epochs))
    if lr is not None:
        stage["optim"]["lr"] = float(lr)
    return stage


def _load_weights(model: torch.nn.Module, path: Path) -> None:
    model.load_state_dict(load_checkpoint(path)["model_state"])


def _copy_best(source: Path, out_dir: Path) -> Path:
    target = out_dir / BEST_NAME
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return target


def _finish(out_dir: Path, stages: list[dict], candidates: list[tuple[str, float | None, Path]]
            ) -> BaselineResult:
    """Pick the best stage checkpoint by validation RMSE (last candidate when none has one)."""
    scored = [c for c in candidates if c[1] is not None and math.isfinite(c[1])]
    name, value, path = min(scored, key=lambda c: c[1]) if scored else candidates[-1]
    best = _copy_best(path, out_dir)
    result = BaselineResult(out_dir=out_dir, best_path=best, stages=stages, best_stage=name,
                            best_val_rmse=value)
    atomic_write_text(out_dir / SUMMARY_NAME, json.dumps(result.to_dict(), indent=1))
    logger.info("baseline in %s: best stage %s (val RMSE %s mm)", out_dir, name,
                "n/a" if value is None else f"{value:.3f}")
    return result


# -- Base-DeepSSM -------------------------------------------------------------------------

def train_deepssm(model: DeepSSM, train_split, val_split, config: dict,
                  out_dir: str | os.PathLike, *, epochs: int, fine_tune_epochs: int = 2,
                  fine_tune_lr: float | None = None, prediction: dict | None = None,
                  device: torch.device | str | None = None, resume: bool = False,
                  progress: bool = True) -> BaselineResult:
    """Train Base-DeepSSM: frozen-decoder base stage, then optional fine-tuning.

    Parameters
    ----------
    model : DeepSSM
        From :func:`build_deepssm`; trained in place.
    train_split, val_split : SplitData
        As for :func:`training.train_model` (the training split may include augmented
        samples, see :func:`augmentation.with_augmented`).
    config : dict
        Complete config (loss, optim, augment, run sections are used; the schedule is
        replaced by ``epochs``).
    out_dir : path-like
        Run folder: ``base/``, ``fine_tune/``, ``best.pt`` and ``baseline.json``.
    epochs : int
        Epochs of the base stage.
    fine_tune_epochs : int, default: 2
        Epochs with the decoder unfrozen (ShapeWorks Studio's default); 0 skips the stage.
    fine_tune_lr : float, optional
        Learning rate of fine-tuning; default ``config["optim"]["lr"]``.
    prediction : dict, optional
        Stored in checkpoints (see :func:`training.prediction_metadata`).
    resume : bool, default: False
        Continue each stage from its ``last.pt`` when present; finished stages are kept.
    """
    from .training import train_model

    if epochs < 1 or fine_tune_epochs < 0:
        raise ConfigError(f"DeepSSM needs epochs >= 1 and fine_tune_epochs >= 0; got "
                          f"{epochs} and {fine_tune_epochs}")
    out_dir = Path(out_dir).resolve()
    stages, candidates = [], []

    def run_stage(name: str, stage_config: dict) -> None:
        folder = out_dir / name
        stage_resume = resume and (folder / "last.pt").is_file()
        started = time.perf_counter()
        result = train_model(model, train_split, val_split, stage_config, folder,
                             prediction=prediction, resume=stage_resume, device=device,
                             progress=progress)
        seconds = sum(float(row["seconds"]) for row in result.history)
        stage_epochs = len(result.history)
        stages.append({"name": name, "epochs": stage_epochs, "best_epoch": result.best_epoch,
                       "best_val_rmse": result.best_val_rmse, "seconds": round(seconds, 3),
                       "seconds_per_epoch": seconds / max(stage_epochs, 1),
                       "wall_seconds": round(time.perf_counter() - started, 3),
                       "folder": name})
        candidates.append((name, result.best_val_rmse, result.best_path))
        _load_weights(model, result.best_path)

    model.set_decoder_trainable(False)
    run_stage("base", _stage_config(config, epochs))
    if fine_tune_epochs > 0:
        model.set_decoder_trainable(True)
        run_stage("fine_tune", _stage_config(config, fine_tune_epochs, lr=fine_tune_lr))
        model.set_decoder_trainable(False)
    result = _finish(out_dir, stages, candidates)
    _load_weights(model, result.best_path)
    return result


# -- TL-DeepSSM ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TLSettings:
    """Epochs and weighting of TL-DeepSSM's stages (ShapeWorks: 100 / 100 / 25, alpha 1)."""

    ae_epochs: int = 100
    tf_epochs: int = 100
    joint_epochs: int = 25
    alpha: float = 1.0

    def __post_init__(self):
        problems = [f"{name} must be >= 0, got {getattr(self, name)!r}"
                    for name in ("ae_epochs", "tf_epochs", "joint_epochs")
                    if int(getattr(self, name)) < 0]
        if not self.alpha >= 0:
            problems.append(f"alpha must be >= 0, got {self.alpha!r}")
        if int(self.tf_epochs) + int(self.joint_epochs) < 1:
            problems.append("tf_epochs + joint_epochs must be >= 1 (the image encoder must train)")
        if problems:
            raise ConfigError(problems)


_TL_COLUMNS = ["epoch", "stage", "epoch_in_stage", "lr", "train_loss", "train_ae_rmse",
               "train_latent_mse", "val_rmse", "seconds"]


def _tl_epoch(model: TLDeepSSM, stage: str, train_split, config: dict, optimizer, *,
              epoch: int, alpha: float, device: torch.device) -> dict[str, float]:
    """One training epoch of a TL stage; returns summed losses."""
    from .losses import particle_loss, point_rmse
    from .training import _augment, _batch, _epoch_seed

    seed = int(config["run"]["seed"])
    batch_size = int(config["optim"]["batch_size"])
    torch.manual_seed(_epoch_seed(seed, epoch))
    generator = torch.Generator().manual_seed(_epoch_seed(seed + 1, epoch))
    order = torch.randperm(len(train_split.images), generator=generator).tolist()
    model.train()
    sums = {"loss": 0.0, "batches": 0, "ae_sq": 0.0, "ae_n": 0, "latent": 0.0}
    for start in range(0, len(order), batch_size):
        images, particles, _ = _batch(train_split, order[start:start + batch_size], False)
        particles = particles.to(device)
        if stage == "ae":
            recon, _ = model.autoencode(particles)
            loss = particle_loss(recon, particles)
            latent_loss = None
        else:
            images = _augment(images, config, generator).to(device)
            predicted = model.encode_image(images)
            if stage == "t_flank":
                with torch.no_grad():
                    target = model.encode_particles(particles)
                recon = None
                latent_loss = ((predicted - target) ** 2).mean()
                loss = latent_loss
            else:
                recon, target = model.autoencode(particles)
                latent_loss = ((predicted - target) ** 2).mean()
                loss = particle_loss(recon, particles) + alpha * latent_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config["optim"]["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(config["optim"]["grad_clip"]))
        optimizer.step()
        sums["loss"] += float(loss.detach())
        sums["batches"] += 1
        if recon is not None:
            sq, count = point_rmse(recon.detach().float().cpu(), particles.cpu())
            sums["ae_sq"] += sq
            sums["ae_n"] += count
        if latent_loss is not None:
            sums["latent"] += float(latent_loss.detach())
    return sums


def _write_tl_log(path: Path, history: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_TL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def train_tl_deepssm(model: TLDeepSSM, train_split, val_split, config: dict,
                     out_dir: str | os.PathLike, settings: TLSettings = TLSettings(), *,
                     prediction: dict | None = None, device: torch.device | str | None = None,
                     resume: bool = False, progress: bool = True) -> BaselineResult:
    """Train TL-DeepSSM in its three stages.

    Parameters
    ----------
    model : TLDeepSSM
        From :func:`build_tl_deepssm`; trained in place.
    train_split, val_split : SplitData
    config : dict
        Complete config: ``optim`` (lr, weight decay, batch size, schedule, clipping),
        ``augment`` (intensity augmentation of image batches) and ``run`` (seed, device,
        threads) are used.
    out_dir : path-like
        Run folder: ``train_log.csv``, ``stage_<name>.pt`` after each stage (resume
        points), ``best.pt`` and ``baseline.json``.
    settings : TLSettings
    resume : bool, default: False
        Skip stages whose ``stage_<name>.pt`` exists, loading its weights.
    progress : bool, default: True
        Log one line per epoch at INFO level (otherwise DEBUG).
    """
    from .training import _stage_lr, evaluate_rmse, select_device

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if config["run"]["num_threads"]:
        torch.set_num_threads(int(config["run"]["num_threads"]))
    device = torch.device(device) if device is not None else select_device(
        config["run"]["device"])
    model.to(device)
    has_val = val_split is not None and len(val_split.images) > 0
    plan = [("ae", settings.ae_epochs), ("t_flank", settings.tf_epochs),
            ("joint", settings.joint_epochs)]
    final_stage = [name for name, epochs in plan if epochs > 0][-1]
    history: list[dict] = []
    stages: list[dict] = []
    best = {"value": None, "epoch": None, "stage": None}
    best_stage_path = out_dir / "best_inference.pt"
    log_level = logging.INFO if progress else logging.DEBUG
    epoch = 0

    def save(path: Path, kind: str) -> None:
        save_checkpoint(path, model=model, config=config, prediction=prediction or {},
                        kind=kind, train_state={"history": history, "epochs_done": epoch,
                                                "tl_settings": asdict(settings)})

    for name, stage_epochs in plan:
        stage_path = out_dir / f"stage_{name}.pt"
        if stage_epochs == 0:
            continue
        if resume and stage_path.is_file():
            checkpoint = load_checkpoint(stage_path)
            model.load_state_dict(checkpoint["model_state"])
            history = list(checkpoint["train_state"]["history"])
            epoch = int(checkpoint["train_state"]["epochs_done"])
            stages.append(dict(checkpoint["train_state"]["stage"]))
            best.update(checkpoint["train_state"]["best"])
            logger.info("TL-DeepSSM: stage %s already done in %s", name, stage_path)
            continue
        model.set_autoencoder_trainable(name != "t_flank")
        if name == "ae":
            parameters = model.autoencoder_parameters()
        else:
            parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=float(config["optim"]["lr"]),
                                      weight_decay=float(config["optim"]["weight_decay"]))
        stage_seconds = 0.0
        stage_best = None
        for epoch_in_stage in range(stage_epochs):
            epoch += 1
            started = time.perf_counter()
            lr = _stage_lr(config, epoch_in_stage, stage_epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            sums = _tl_epoch(model, name, train_split, config, optimizer, epoch=epoch,
                             alpha=float(settings.alpha), device=device)
            seconds = time.perf_counter() - started
            stage_seconds += seconds
            val_rmse = None
            if has_val and name != "ae":
                (sq, count), = evaluate_rmse(model, val_split, device=device,
                                             batch_size=int(config["optim"]["batch_size"]))
                val_rmse = math.sqrt(sq / count) if count else None
            row = {"epoch": epoch, "stage": name, "epoch_in_stage": epoch_in_stage + 1,
                   "lr": lr, "train_loss": sums["loss"] / max(sums["batches"], 1),
                   "train_ae_rmse": (math.sqrt(sums["ae_sq"] / sums["ae_n"])
                                     if sums["ae_n"] else None),
                   "train_latent_mse": (sums["latent"] / sums["batches"]
                                        if name != "ae" else None),
                   "val_rmse": val_rmse, "seconds": round(seconds, 3)}
            history.append(row)
            logger.log(log_level, "TL-DeepSSM %s epoch %d/%d: loss %.4g, val RMSE %s", name,
                       epoch_in_stage + 1, stage_epochs, row["train_loss"],
                       "-" if val_rmse is None else f"{val_rmse:.3f} mm")
            improved = val_rmse is not None and (best["value"] is None
                                                 or val_rmse < best["value"])
            if not has_val:  # the last epoch of the last stage counts as best
                improved = name == final_stage and epoch_in_stage == stage_epochs - 1
            if improved:
                best.update(value=val_rmse, epoch=epoch, stage=name)
                save(best_stage_path, "best")
            if val_rmse is not None:
                stage_best = val_rmse if stage_best is None else min(stage_best, val_rmse)
            _write_tl_log(out_dir / "train_log.csv", history)
        stage = {"name": name, "epochs": stage_epochs,
                 "best_epoch": best["epoch"] if best["stage"] == name else None,
                 "best_val_rmse": stage_best, "seconds": round(stage_seconds, 3),
                 "seconds_per_epoch": stage_seconds / stage_epochs, "folder": "."}
        stages.append(stage)
        save_checkpoint(stage_path, model=model, config=config, prediction=prediction or {},
                        kind="last", train_state={"history": history, "epochs_done": epoch,
                                                  "stage": stage, "best": dict(best),
                                                  "tl_settings": asdict(settings)})
    model.set_autoencoder_trainable(True)
    if not best_stage_path.is_file():  # e.g. resumed with every stage done and no best
        save(best_stage_path, "best")
    result = _finish(out_dir, stages, [(best["stage"] or plan[-1][0], best["value"],
                                        best_stage_path)])
    _load_weights(model, result.best_path)
    return result


def load_summary(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The ``baseline.json`` of a finished baseline run, or None when there is none."""
    path = Path(out_dir) / SUMMARY_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
