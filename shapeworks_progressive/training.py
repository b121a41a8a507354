"""Progressive training loop for any :class:`~shapeworks_progressive.models.ParticleModel`.

Schedule (see :func:`config.stage_plan`): stage ``k`` trains scales ``1..k`` and continues
from the model and optimizer of stage ``k - 1``; the last stage trains every scale. With
``schedule.progressive`` false a single stage trains all scales for the same total epochs.
A new scale can be faded in: its loss weight ramps linearly over ``fade_in_epochs``.

Augmentation (``augment`` config section): every training batch is moved by a random
rotation, translation and optional scale about the grid centre (image, segmentation and
particles together, :func:`_spatial_augment`), because validation, test and new images
are placed by registration and arrive off by a few mm and degrees; then its intensities
are scaled, shifted and noised.

Determinism and resume: everything random in an epoch (data order, augmentation, dropout)
is seeded from ``run.seed`` and the epoch number, and the learning rate is a function of
the stage and epoch. A run's ``last.pt`` after every epoch therefore holds all the state
needed (weights, optimizer, epochs done, best value, log history), and a resumed run ends
exactly where an uninterrupted one would.

Run folder written by rank 0:

``train_log.csv``        one row per epoch: stage, lr, losses, per-scale train and val
                         RMSE (per-point Euclidean, mm)
``training_curves.png``  RMSE and loss curves
``best.pt``              lowest validation RMSE at the finest scale
``last.pt``              after the latest epoch (resume point)

Distributed: under ``torchrun`` (``torch.distributed`` initialized by the caller, see
:func:`init_distributed`) the model is wrapped in DistributedDataParallel, each process
gets a :class:`~torch.utils.data.DistributedSampler` shard, and metrics are summed over
processes before logging.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from .checkpoints import load_checkpoint, save_checkpoint
from .config import stage_plan
from .errors import ConfigError, DeviceError
from .fileio import atomic_path, atomic_write_text
from .losses import compute_loss, point_rmse
from .models import ParticleModel

__all__ = ["select_device", "init_distributed", "build_model", "prediction_metadata",
           "train_model", "evaluate_rmse", "TrainResult", "LOG_NAME", "CURVES_NAME",
           "BEST_NAME", "LAST_NAME"]

logger = logging.getLogger(__name__)

LOG_NAME = "train_log.csv"
CURVES_NAME = "training_curves.png"
BEST_NAME = "best.pt"
LAST_NAME = "last.pt"


# -- devices and processes -------------------------------------------------------------

def select_device(name: str = "auto", *, local_rank: int = 0,
                  setting: str = "run.device (or --device)") -> torch.device:
    """The device to train on, after a tiny probe of any GPU.

    Parameters
    ----------
    name : {"auto", "cpu", "cuda"}
        ``"auto"`` uses CUDA when present and CPU otherwise; an unusable GPU is an error,
        never a silent fallback (ask for ``"cpu"`` to use the CPU).
    local_rank : int
        GPU index of this process (``LOCAL_RANK`` under torchrun).
    setting : str
        What the user set ``name`` with, as the messages name it.

    Raises
    ------
    DeviceError
        When CUDA is requested but missing, or the GPU fails the probe; names the GPU.
    """
    if name == "cpu":
        return torch.device("cpu")
    if name not in ("auto", "cuda"):
        raise ConfigError(f"{setting} must be 'auto', 'cpu' or 'cuda'; got {name!r}")
    if not torch.cuda.is_available():
        if name == "cuda":
            raise DeviceError(f"{setting} is 'cuda' but torch sees no usable CUDA GPU "
                              f"(torch {torch.__version__}, CUDA build "
                              f"{torch.version.cuda}); set it to 'cpu' or 'auto'")
        return torch.device("cpu")
    index = local_rank % torch.cuda.device_count()
    device = torch.device("cuda", index)
    try:
        gpu_name = torch.cuda.get_device_name(index)
    except Exception:  # the name itself can fail on a broken driver
        gpu_name = f"cuda:{index}"
    try:
        probe = torch.ones(8, 8, device=device)
        value = float((probe @ probe).sum().item())
        if value != 512.0:
            raise RuntimeError(f"probe matmul gave {value}, expected 512")
    except Exception as err:
        message = (f"the GPU {gpu_name!r} (cuda:{index}) is not usable with torch "
                   f"{torch.__version__} (CUDA {torch.version.cuda}): {err}. Install a torch "
                   f"build that supports this GPU, or set {setting} to 'cpu'")
        raise DeviceError(message) from err
    return device


def init_distributed(device_name: str = "auto") -> tuple[int, int, int]:
    """Join the process group when launched by ``torchrun``; no-op otherwise.

    Uses NCCL when this process gets a CUDA device and gloo on CPU.

    Returns
    -------
    (rank, world_size, local_rank)
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, 0
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        device = select_device(device_name, local_rank=local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, local_rank


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# -- model and metadata ----------------------------------------------------------------

def build_model(config: dict, data) -> ParticleModel:
    """Build the config's model for prepared data (seeded by ``run.seed``).

    Parameters
    ----------
    config : dict
        Complete config (see :mod:`shapeworks_progressive.config`).
    data : PreparedData
        Needs ``scale_sizes``, ``template_world`` and ``grid`` (``origin``, ``spacing``,
        ``size``); with ``model.shape_modes`` also ``split("train")`` (the PCA is fitted
        on the training particles only).
    """
    from .models import model_class

    settings = dict(config["model"])
    cls = model_class(settings.pop("name"))
    num_modes = int(settings.pop("shape_modes", 0) or 0)
    if num_modes > 0 and not hasattr(data, "split"):
        logger.warning("model.shape_modes is %d but the data has no training split to fit "
                       "the PCA to; building the free-offset head instead", num_modes)
        num_modes = 0
    if num_modes > 0:
        from .models.progressive import shape_basis_from_training

        train_particles = np.asarray(data.split("train").particles_world)
        settings["shape_basis"] = shape_basis_from_training(train_particles, num_modes)
        logger.info("global head: %d PCA modes of the %d training shapes",
                    len(settings["shape_basis"]), len(train_particles))
    torch.manual_seed(int(config["run"]["seed"]))
    grid = data.grid
    return cls(scale_sizes=list(data.scale_sizes), template_world=np.asarray(data.template_world),
               grid_origin=[float(v) for v in grid.origin],
               grid_spacing=[float(v) for v in grid.spacing],
               grid_size=[int(v) for v in grid.size], **settings)


def prediction_metadata(data) -> dict[str, Any]:
    """What prediction needs from prepared data, for checkpoints.

    Keys: ``grid``, ``normalization``, ``scale_sizes``, ``particle_order``,
    ``template_world``, ``reference`` and ``data`` (the data manifest).
    """
    meta: dict[str, Any] = {
        "grid": data.grid.to_dict(),
        "normalization": data.normalization.to_dict(),
        "scale_sizes": [int(n) for n in data.scale_sizes],
        "particle_order": np.asarray(data.particle_order, dtype=np.int64),
        "template_world": np.asarray(data.template_world, dtype=np.float32),
        "reference": data.reference,
    }
    if hasattr(data, "to_dict"):
        meta["data"] = data.to_dict()
    return meta


# -- helpers ---------------------------------------------------------------------------

def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919) % (2 ** 63 - 1)


def _stage_lr(config: dict, epoch_in_stage: int, stage_epochs: int) -> float:
    base = float(config["optim"]["lr"])
    if config["optim"]["lr_schedule"] == "constant" or stage_epochs <= 1:
        return base
    floor = 0.05
    cosine = 0.5 * (1 + math.cos(math.pi * epoch_in_stage / stage_epochs))
    return base * (floor + (1 - floor) * cosine)


def _fade(config: dict, epoch_in_stage: int) -> float:
    fade_epochs = int(config["schedule"]["fade_in_epochs"])
    if fade_epochs <= 0:
        return 1.0
    return min(1.0, (epoch_in_stage + 1) / (fade_epochs + 1))


def _augment(images: torch.Tensor, config: dict, generator: torch.Generator) -> torch.Tensor:
    aug = config["augment"]
    batch = images.shape[0]
    shape = (batch, 1, 1, 1, 1)
    if aug["intensity_scale"] > 0:
        scale = 1 + aug["intensity_scale"] * (2 * torch.rand(shape, generator=generator) - 1)
        images = images * scale
    if aug["intensity_shift"] > 0:
        images = images + aug["intensity_shift"] * (2 * torch.rand(shape, generator=generator) - 1)
    if aug["noise_std"] > 0:
        images = images + aug["noise_std"] * torch.randn(images.shape, generator=generator)
    return images


def _rotation_matrix(angles_rad: torch.Tensor) -> torch.Tensor:
    """(B, 3) angles about X, Y, Z (radians) -> (B, 3, 3) rotations ``Rz @ Ry @ Rx``."""
    cos, sin = torch.cos(angles_rad), torch.sin(angles_rad)
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])

    def matrix(rows):
        return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)

    rx = matrix([[one, zero, zero], [zero, cos[:, 0], -sin[:, 0]], [zero, sin[:, 0], cos[:, 0]]])
    ry = matrix([[cos[:, 1], zero, sin[:, 1]], [zero, one, zero], [-sin[:, 1], zero, cos[:, 1]]])
    rz = matrix([[cos[:, 2], -sin[:, 2], zero], [sin[:, 2], cos[:, 2], zero], [zero, zero, one]])
    return rz @ ry @ rx


def _grid_box(grid) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(origin, spacing) float64 tensors of a Grid, its dict, or None."""
    if grid is None:
        return None
    if isinstance(grid, dict):
        origin, spacing = grid.get("origin"), grid.get("spacing")
    else:
        origin, spacing = getattr(grid, "origin", None), getattr(grid, "spacing", None)
    if origin is None or spacing is None:
        return None
    return (torch.as_tensor(np.asarray(origin, dtype=np.float64)),
            torch.as_tensor(np.asarray(spacing, dtype=np.float64)))


def _spatial_augment(images: torch.Tensor, particles_world: torch.Tensor,
                     segmentations: torch.Tensor | None, config: dict,
                     generator: torch.Generator, grid_box: tuple[torch.Tensor, torch.Tensor]
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Move each training sample by a random similarity about the grid centre.

    The anatomy moves by ``p' = scale * R (p - c) + c + t`` (``c`` the grid centre,
    world mm); particles are mapped exactly, the image is resampled trilinearly (edge
    values replicate outside), the segmentation linearly and thresholded at 0.5. This
    mimics how validation, test and new images arrive: placed by registration to the
    reference image, off by a few mm and degrees.

    Parameters
    ----------
    images : (B, 1, X, Y, Z) Tensor
        Normalized images on the grid.
    particles_world : (B, N, 3) Tensor
        World particles, mm.
    segmentations : (B, 1, X, Y, Z) Tensor or None
    config : dict
        Uses ``augment.rotation_deg`` (uniform per axis in +-), ``translation_mm``
        (uniform per axis in +-) and ``scale`` (isotropic factor uniform in 1 +- scale).
    generator : torch.Generator
        Source of all randomness (seeded per epoch).
    grid_box : (origin (3,), spacing (3,)) Tensors
        World position of voxel (0, 0, 0) and voxel size, mm, (X, Y, Z) order.

    Returns
    -------
    images, particles_world, segmentations
        Transformed copies (same shapes and dtypes).
    """
    aug = config["augment"]
    batch = images.shape[0]
    rotation = float(aug["rotation_deg"])
    translation = float(aug["translation_mm"])
    scale_range = float(aug["scale"])
    if batch == 0 or (rotation <= 0 and translation <= 0 and scale_range <= 0):
        return images, particles_world, segmentations

    # Random similarity per sample (drawn in float64 so results do not depend on dtype)
    def uniform(shape, half_width):
        return half_width * (2 * torch.rand(shape, generator=generator,
                                            dtype=torch.float64) - 1)

    rot = _rotation_matrix(uniform((batch, 3), math.radians(rotation)))
    shift = uniform((batch, 3), translation)
    scale = 1 + uniform((batch, 1, 1), scale_range)

    # Particles: p' = scale R (p - c) + c + t
    origin, spacing = grid_box
    size = torch.tensor(images.shape[2:], dtype=torch.float64)
    half = (spacing * (size - 1) / 2).clamp_min(1e-6)
    centre = origin + half
    moved = ((particles_world.double() - centre) @ (scale * rot).transpose(1, 2)
             + centre + shift[:, None, :])
    particles_world = moved.to(particles_world.dtype)

    # Images: output voxel at normalized u (X, Y, Z) reads the source at
    # H^-1 R^T (H u - t) / scale, H = diag(half); grid_sample wants (Z, Y, X) order.
    h, h_inv = torch.diag(half), torch.diag(1 / half)
    matrix = h_inv @ rot.transpose(1, 2) @ h / scale
    offset = -(h_inv @ rot.transpose(1, 2) @ shift[:, :, None]) / scale
    theta = torch.cat([matrix, offset], dim=2).flip(1)        # rows to (Z, Y, X)
    theta = torch.cat([theta[:, :, :3].flip(2), theta[:, :, 3:]], dim=2)  # columns too
    sample_grid = F.affine_grid(theta.to(images.dtype), list(images.shape),
                                align_corners=True)
    images = F.grid_sample(images, sample_grid, mode="bilinear", padding_mode="border",
                           align_corners=True)
    if segmentations is not None:
        moved_seg = F.grid_sample(segmentations.float(), sample_grid.float(), mode="bilinear",
                                  padding_mode="zeros", align_corners=True)
        segmentations = (moved_seg > 0.5).to(segmentations.dtype)
    return images, particles_world, segmentations


def _batch(split, indices: list[int], with_seg: bool) -> tuple[torch.Tensor, torch.Tensor,
                                                              torch.Tensor | None]:
    images = torch.from_numpy(np.asarray(split.images[indices], dtype=np.float32))[:, None]
    particles = torch.from_numpy(np.asarray(split.particles_world[indices], dtype=np.float32))
    seg = None
    if with_seg and getattr(split, "segmentations", None) is not None:
        seg = torch.from_numpy(np.asarray(split.segmentations[indices], dtype=np.float32))[:, None]
    return images, particles, seg


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _all_reduce(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


@torch.no_grad()
def evaluate_rmse(model: ParticleModel, split, *, batch_size: int = 8,
                  device: torch.device | str = "cpu", amp: bool = False,
                  indices: list[int] | None = None) -> list[tuple[float, int]]:
    """Per-scale (sum of squared point distances in mm^2, point count) over a split.

    ``indices`` restricts to some subjects (a process's shard); RMSE per scale is
    ``sqrt(sum / count)``. Every scale of the model is evaluated.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    indices = list(range(len(split.images))) if indices is None else list(indices)
    sums = [[0.0, 0] for _ in model.scale_sizes]
    for start in range(0, len(indices), batch_size):
        images, particles, _ = _batch(split, indices[start:start + batch_size], False)
        with _autocast(device, amp):
            output = model(images.to(device), active_scales=None)
        for s, pred in enumerate(output.particles):
            sq, count = point_rmse(pred.float().cpu(), particles[:, :pred.shape[1]])
            sums[s][0] += sq
            sums[s][1] += count
    model.train(was_training)
    return [(a, b) for a, b in sums]


def _rmse(sq: float, count: float) -> float:
    return math.sqrt(sq / count) if count > 0 else float("nan")


# -- log and plot ----------------------------------------------------------------------

def _log_columns(num_scales: int) -> list[str]:
    columns = ["epoch", "stage", "active_scales", "epoch_in_stage", "lr", "fade",
               "train_loss", "train_seg_loss"]
    columns += [f"train_rmse_s{k}" for k in range(1, num_scales + 1)]
    columns += [f"val_rmse_s{k}" for k in range(1, num_scales + 1)]
    columns += ["seconds"]
    return columns


def _write_log(path: Path, history: list[dict], num_scales: int) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_log_columns(num_scales), lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v))
                             else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def _plot_curves(path: Path, history: list[dict], num_scales: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(10, 4))
    ax_rmse, ax_loss = figure.subplots(1, 2)
    for k in range(1, num_scales + 1):
        for kind, style in (("train", "--"), ("val", "-")):
            values = [row.get(f"{kind}_rmse_s{k}") for row in history]
            values = [np.nan if v is None else v for v in values]
            if not all(np.isnan(values)):
                ax_rmse.plot(epochs, values, style, color=f"C{k - 1}", label=f"{kind} scale {k}")
    ax_rmse.set_xlabel("epoch")
    ax_rmse.set_ylabel("particle RMSE (mm)")
    ax_rmse.set_yscale("log")
    ax_rmse.legend(fontsize=7)
    ax_loss.plot(epochs, [row["train_loss"] for row in history], label="total")
    seg = [row.get("train_seg_loss") for row in history]
    if any(v is not None for v in seg):
        ax_loss.plot(epochs, [np.nan if v is None else v for v in seg], label="segmentation")
    for row in history:
        if row["epoch_in_stage"] == 1 and row["stage"] > 1:
            for ax in (ax_rmse, ax_loss):
                ax.axvline(row["epoch"] - 0.5, color="grey", lw=0.5)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_yscale("log")
    ax_loss.legend(fontsize=7)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100)


# -- training --------------------------------------------------------------------------

@dataclass
class TrainResult:
    """Where a run's files are and how it went."""

    out_dir: Path
    best_path: Path | None
    last_path: Path | None
    log_path: Path | None
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_rmse: float | None = None
    seconds: float = 0.0
    completed: bool = True


def check_resume_config(saved: dict, config: dict, path: Path) -> None:
    """Raise :class:`ConfigError` when ``config`` differs from a run's ``saved`` config.

    Keys the saved config lacks (settings added since it was written) count as their
    defaults; device, thread and worker counts may change.
    """
    from .config import RUN_ONLY_SETTINGS, with_defaults

    saved = with_defaults(saved)
    problems = []
    for section, values in config.items():
        for key, value in values.items():
            if (section, key) in RUN_ONLY_SETTINGS:
                continue
            old = saved.get(section, {}).get(key)
            if old != value:
                problems.append(f"{section}.{key} was {old!r} in {path} but is now {value!r}")
    if problems:
        raise ConfigError(["cannot resume with a different config; use the run's "
                           "config.json or start a new run"] + problems)


def train_model(model: ParticleModel, train_split, val_split, config: dict,
                out_dir: str | os.PathLike, *, prediction: dict | None = None,
                resume: bool = False, device: torch.device | str | None = None,
                progress: bool = True, max_epochs: int | None = None,
                on_stage_start: Callable[[int, ParticleModel], None] | None = None,
                grid=None) -> TrainResult:
    """Train ``model`` with the progressive schedule of ``config``.

    Parameters
    ----------
    model : ParticleModel
        Freshly built (or any) model; trained in place.
    train_split, val_split : SplitData
        ``images`` (S, X, Y, Z) float32, ``particles_world`` (S, N, 3) mm in model order,
        ``segmentations`` (S, X, Y, Z) {0, 1} or None, ``names``. ``val_split`` may be
        None or empty; then the last epoch counts as best.
    config : dict
        Complete, validated config.
    out_dir : path-like
        Run folder for the log, curves and checkpoints.
    prediction : dict, optional
        Stored in checkpoints (see :func:`prediction_metadata`).
    resume : bool, default: False
        Continue from ``out_dir/last.pt``; the config must match the saved one.
    device : torch.device or str, optional
        Overrides ``run.device`` (already probed devices are used as given).
    progress : bool, default: True
        Show tqdm bars (rank 0 only).
    max_epochs : int, optional
        Stop after this many epochs in total (counting resumed ones) as if killed; for
        tests and time-boxed runs.
    on_stage_start : callable, optional
        Called as ``on_stage_start(stage, model)`` (stage 1-based) before a stage's
        first epoch.
    grid : Grid or dict, optional
        The images' grid (``origin``, ``spacing`` in mm), needed by spatial augmentation
        (``augment.rotation_deg``, ``translation_mm``, ``scale``); default
        ``prediction["grid"]``, else the model's ``grid_origin`` and ``grid_spacing``.
        Without any, spatial augmentation is skipped with a warning.

    Returns
    -------
    TrainResult
    """
    from torch.nn.parallel import DistributedDataParallel
    from tqdm.auto import tqdm

    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    rank, world_size = _dist_info()
    is_main = rank == 0
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    run_cfg = config["run"]
    if run_cfg["num_threads"]:
        torch.set_num_threads(int(run_cfg["num_threads"]))
    if device is None:
        device = select_device(run_cfg["device"],
                               local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    device = torch.device(device)
    use_amp = bool(run_cfg["amp"]) and device.type == "cuda"
    use_fp16_scaler = use_amp and not torch.cuda.is_bf16_supported()
    seed = int(run_cfg["seed"])
    num_scales = model.num_scales
    plan = stage_plan(config, num_scales)
    total = sum(epochs for _, epochs in plan)
    with_seg = bool(model.has_segmentation and config["loss"]["seg_weight"] > 0)
    has_val = val_split is not None and len(val_split.images) > 0
    batch_size = int(config["optim"]["batch_size"])
    n_train = len(train_split.images)
    if n_train == 0:
        raise ConfigError("the train split is empty; mark subjects with split 'train'")
    if not has_val and is_main:
        logger.warning("no validation subjects: the best checkpoint is the last epoch")
    grid_box = _grid_box(grid if grid is not None else (prediction or {}).get("grid"))
    if grid_box is None and hasattr(model, "grid_origin") and hasattr(model, "grid_spacing"):
        grid_box = (model.grid_origin.detach().double().cpu(),
                    model.grid_spacing.detach().double().cpu())
    spatial = any(float(config["augment"][key]) > 0
                  for key in ("rotation_deg", "translation_mm", "scale"))
    if spatial and grid_box is None:
        spatial = False
        if is_main:
            logger.warning("spatial augmentation is off: the grid is unknown (pass grid= or "
                           "prediction=prediction_metadata(data))")

    # Model, optimizer, scaler
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(config["optim"]["lr"]),
                                  weight_decay=float(config["optim"]["weight_decay"]))
    scaler = torch.amp.GradScaler("cuda", enabled=use_fp16_scaler)
    state = {"epochs_done": 0, "best_val_rmse": None, "best_epoch": None, "history": []}

    # Resume
    last_path, best_path = out_dir / LAST_NAME, out_dir / BEST_NAME
    if resume:
        checkpoint = load_checkpoint(last_path)
        check_resume_config(checkpoint["config"], config, last_path)
        model.load_state_dict(checkpoint["model_state"])
        if checkpoint["optimizer"] is not None:
            optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint["scaler"] is not None and use_fp16_scaler:
            scaler.load_state_dict(checkpoint["scaler"])
        saved = checkpoint["train_state"]
        state.update(epochs_done=int(saved["epochs_done"]),
                     best_val_rmse=saved.get("best_val_rmse"),
                     best_epoch=saved.get("best_epoch"), history=list(saved["history"]))
        if "torch_rng" in saved:
            torch.set_rng_state(saved["torch_rng"])
        if is_main:
            logger.info("resuming %s after epoch %d of %d", out_dir, state["epochs_done"], total)

    net = model
    if world_size > 1:
        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)

    def checkpoint_state() -> dict:
        saved = {k: v for k, v in state.items()}
        saved["torch_rng"] = torch.get_rng_state()
        saved["total_epochs"] = total
        saved["stage_plan"] = [list(p) for p in plan]
        return saved

    sampler = DistributedSampler(range(n_train), num_replicas=world_size, rank=rank,
                                 shuffle=True, seed=seed, drop_last=False)
    val_indices = list(range(rank, len(val_split.images), world_size)) if has_val else []

    # Stages
    epoch = 0
    for stage, (active, stage_epochs) in enumerate(plan, start=1):
        if epoch + stage_epochs <= state["epochs_done"]:
            epoch += stage_epochs
            continue
        if state["epochs_done"] <= epoch and on_stage_start is not None:
            on_stage_start(stage, model)
        if is_main:
            logger.info("stage %d/%d: scales 1-%d (%s particles), %d epoch%s", stage,
                        len(plan), active, model.scale_sizes[active - 1], stage_epochs,
                        "" if stage_epochs == 1 else "s")
        bar = tqdm(total=stage_epochs, desc=f"stage {stage}/{len(plan)}", unit="epoch",
                   disable=not (progress and is_main), leave=True)
        for epoch_in_stage in range(stage_epochs):
            epoch += 1
            if epoch <= state["epochs_done"]:
                bar.update(1)
                continue
            if max_epochs is not None and epoch > max_epochs:
                bar.close()
                return _result(out_dir, state, started, completed=False, is_main=is_main)
            epoch_started = time.perf_counter()

            # Seeds and learning rate of this epoch
            torch.manual_seed(_epoch_seed(seed, epoch))
            generator = torch.Generator().manual_seed(_epoch_seed(seed + 1, epoch))
            sampler.set_epoch(epoch)
            lr = _stage_lr(config, epoch_in_stage, stage_epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            fade = _fade(config, epoch_in_stage) if stage > 1 else 1.0

            # Train
            net.train()
            order = list(sampler)
            sums = [0.0, 0.0, 0.0] + [0.0] * (2 * num_scales)  # loss, seg, batches, (sq, n)/s
            batches = tqdm(range(0, len(order), batch_size), desc=f"epoch {epoch}/{total}",
                           unit="batch", leave=False, disable=not (progress and is_main))
            for start in batches:
                images, particles, seg = _batch(train_split, order[start:start + batch_size],
                                                with_seg)
                if spatial:
                    images, particles, seg = _spatial_augment(images, particles, seg, config,
                                                              generator, grid_box)
                images = _augment(images, config, generator)
                images, particles = images.to(device), particles.to(device)
                seg = seg.to(device) if seg is not None else None
                with _autocast(device, use_amp):
                    output = net(images, active_scales=active)
                terms = compute_loss(output, particles, seg, config["loss"], fade=fade)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(terms.total).backward()
                if config["optim"]["grad_clip"] > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                   float(config["optim"]["grad_clip"]))
                scaler.step(optimizer)
                scaler.update()
                sums[0] += float(terms.total.detach())
                sums[1] += float(terms.segmentation) if terms.segmentation is not None else 0.0
                sums[2] += 1
                for s, pred in enumerate(output.particles):
                    sq, count = point_rmse(pred.detach().float().cpu(),
                                           particles[:, :pred.shape[1]].cpu())
                    sums[3 + 2 * s] += sq
                    sums[4 + 2 * s] += count
            batches.close()
            sums = _all_reduce(sums, device)

            # Validate every scale
            val = [(0.0, 0)] * num_scales
            validate = has_val and (epoch % int(run_cfg["val_every"]) == 0 or epoch == total)
            if validate:
                val = evaluate_rmse(model, val_split, batch_size=batch_size, device=device,
                                    amp=use_amp, indices=val_indices)
                flat = _all_reduce([v for pair in val for v in pair], device)
                val = [(flat[2 * s], flat[2 * s + 1]) for s in range(num_scales)]

            # Log row
            row: dict[str, Any] = {
                "epoch": epoch, "stage": stage, "active_scales": active,
                "epoch_in_stage": epoch_in_stage + 1, "lr": lr, "fade": fade,
                "train_loss": sums[0] / max(sums[2], 1),
                "train_seg_loss": sums[1] / max(sums[2], 1) if with_seg else None,
            }
            for s in range(num_scales):
                row[f"train_rmse_s{s + 1}"] = (_rmse(sums[3 + 2 * s], sums[4 + 2 * s])
                                               if s < active else None)
                row[f"val_rmse_s{s + 1}"] = _rmse(*val[s]) if validate else None
            row["seconds"] = round(time.perf_counter() - epoch_started, 3)
            state["history"].append(row)
            state["epochs_done"] = epoch

            # Best by validation RMSE at the finest scale (last epoch without validation)
            finest = row[f"val_rmse_s{num_scales}"]
            improved = (finest is not None and not math.isnan(finest)
                        and (state["best_val_rmse"] is None or finest < state["best_val_rmse"]))
            if not has_val and epoch == total:
                improved = True
            if improved:
                state["best_val_rmse"] = finest
                state["best_epoch"] = epoch

            # Files (rank 0)
            if is_main:
                if improved:
                    save_checkpoint(best_path, model=model, config=config,
                                    prediction=prediction or {}, kind="best",
                                    train_state=checkpoint_state(), optimizer=optimizer,
                                    scaler=scaler if use_fp16_scaler else None)
                    if finest is not None:
                        logger.info("epoch %d: new best val RMSE %.3f mm at scale %d",
                                    epoch, finest, num_scales)
                save_checkpoint(last_path, model=model, config=config,
                                prediction=prediction or {}, kind="last",
                                train_state=checkpoint_state(), optimizer=optimizer,
                                scaler=scaler if use_fp16_scaler else None)
                _write_log(out_dir / LOG_NAME, state["history"], num_scales)
                try:
                    _plot_curves(out_dir / CURVES_NAME, state["history"], num_scales)
                except Exception as err:  # a plot must never stop training
                    logger.warning("could not draw %s: %s", CURVES_NAME, err)
            bar.set_postfix(loss=f"{row['train_loss']:.3g}",
                            val=f"{finest:.3f}" if finest is not None else "-")
            bar.update(1)
        bar.close()
    if world_size > 1:
        dist.barrier()
    return _result(out_dir, state, started, completed=True, is_main=is_main)


def _result(out_dir: Path, state: dict, started: float, *, completed: bool,
            is_main: bool) -> TrainResult:
    best = out_dir / BEST_NAME
    last = out_dir / LAST_NAME
    log = out_dir / LOG_NAME
    return TrainResult(
        out_dir=out_dir, best_path=best if best.is_file() else None,
        last_path=last if last.is_file() else None, log_path=log if log.is_file() else None,
        history=list(state["history"]), best_epoch=state["best_epoch"],
        best_val_rmse=state["best_val_rmse"], seconds=time.perf_counter() - started,
        completed=completed)
