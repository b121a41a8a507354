"""``shapeworks-progressive train PROJECT``: train Progressive DeepSSM on a project.

Trains on the project's ``train`` split and selects the best epoch on its ``val`` split.
Everything is checked (config, project files) before long work starts. The run folder
(default ``<project folder>/progressive_runs/<timestamp>``) receives ``config.json`` (the
complete config used), ``split.json`` (subject names per split), ``train_log.csv``,
``training_curves.png``, ``best.pt`` and ``last.pt``. Prepared arrays are cached in
``<project folder>/progressive_runs/cache`` and reused by later runs.

Several processes: ``torchrun --nproc_per_node=K -m shapeworks_progressive.cli train ...``
(DistributedDataParallel; gloo on CPU, NCCL on GPU; rank 0 writes the files).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

__all__ = ["add_parser", "run", "parse_scales", "default_run_dir"]

logger = logging.getLogger(__name__)

RUNS_FOLDER = "progressive_runs"


def parse_scales(text: str) -> list[int]:
    """``"128,256,512"`` -> ``[128, 256, 512]``."""
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"--scales must be comma-separated integers like 128,256,512,1024; got {text!r}"
        ) from err


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train Progressive DeepSSM on a project's train split",
        description=(
            "Train Progressive DeepSSM (coarse-to-fine particle scales, segmentation side "
            "task, deep supervision) on the project's 'train' subjects, selecting the best "
            "epoch by particle RMSE on its 'val' subjects."
        ),
    )
    parser.add_argument("project", type=Path, help="the .swproj or .xlsx project file")
    parser.add_argument("--config", type=Path, default=None,
                        help="JSON config; missing keys take the defaults")
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder (default: <project folder>/progressive_runs/"
                             "<timestamp>; with --resume: the newest run there)")
    parser.add_argument("--name", default=None,
                        help="run folder name under progressive_runs instead of a timestamp")
    parser.add_argument("--scales", type=parse_scales, default=None,
                        help="particles per scale, coarse to fine, e.g. 128,256,512,1024 "
                             "(overrides data.scales)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help="overrides run.device")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out (or the newest run) from last.pt")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bars")
    parser.set_defaults(func=run)
    return parser


def default_run_dir(project_folder: Path, name: str | None = None) -> Path:
    """``<project folder>/progressive_runs/<name or YYYYmmdd-HHMMSS>``."""
    return project_folder / RUNS_FOLDER / (name or time.strftime("%Y%m%d-%H%M%S"))


def _newest_run(project_folder: Path) -> Path:
    runs = sorted(p.parent for p in (project_folder / RUNS_FOLDER).glob("*/last.pt"))
    if not runs:
        raise FileNotFoundError(f"--resume: no run with a last.pt under "
                                f"{project_folder / RUNS_FOLDER}; pass --out RUN_FOLDER")
    return max(runs, key=lambda p: (p / "last.pt").stat().st_mtime)


def run(args) -> int:
    import torch

    from ..augmentation import augment_from_config, with_augmented
    from ..config import load_config, stage_plan
    from ..dataset import prepare_dataset
    from ..errors import ConfigError
    from ..fileio import atomic_write_text
    from ..project import Project
    from ..validation import warn_if_invalid
    from ..checkpoints import load_checkpoint
    from ..training import (build_model, check_resume_config, init_distributed,
                            prediction_metadata, select_device, train_model)

    # Project and run folder
    project_path = Path(args.project).resolve()
    if not project_path.is_file():
        raise FileNotFoundError(f"project file not found: {project_path}")
    project = Project.load(project_path)
    warn_if_invalid(project)
    if args.out is not None:
        out_dir = Path(args.out).resolve()
    elif args.resume:
        out_dir = _newest_run(project.folder)
    else:
        out_dir = default_run_dir(project.folder, args.name)

    # Config: file (or the run's own on --resume) plus command-line overrides
    overrides: dict = {}
    if args.scales is not None:
        overrides.setdefault("data", {})["scales"] = args.scales
    if args.device is not None:
        overrides.setdefault("run", {})["device"] = args.device
    config_path = args.config
    if config_path is None and args.resume and (out_dir / "config.json").is_file():
        config_path = out_dir / "config.json"
    config = load_config(config_path, overrides=overrides)
    if args.resume and not (out_dir / "last.pt").is_file():
        raise FileNotFoundError(f"--resume: no checkpoint {out_dir / 'last.pt'}")
    if not args.resume and (out_dir / "last.pt").is_file():
        raise ConfigError(f"{out_dir} already holds a run (last.pt); pass --resume to "
                          "continue it or choose another --out")
    if args.resume:
        # The config must match the run's before any data work (augmentation included)
        saved = load_checkpoint(out_dir / "last.pt")["config"]
        early = json.loads(json.dumps(config))
        if early["data"]["scales"] is None:  # filled in from the data below
            early["data"]["scales"] = saved.get("data", {}).get("scales")
        check_resume_config(saved, early, out_dir / "last.pt")

    # Splits must be usable before any image work
    train_subjects = project.subjects_in_split("train")
    val_subjects = project.subjects_in_split("val")
    if not train_subjects:
        raise ConfigError(f"{project_path}: no subject has split 'train'; add a 'split' "
                          "column with train/val/test values")
    if not val_subjects:
        logger.warning("%s: no subject has split 'val'; the last epoch is kept as best",
                       project_path)

    # Processes and device
    rank, world_size, local_rank = init_distributed(config["run"]["device"])
    device = select_device(config["run"]["device"], local_rank=local_rank)
    if config["run"]["num_threads"]:
        torch.set_num_threads(int(config["run"]["num_threads"]))

    # Data (rank 0 prepares the cache first, the others then read it)
    data_cfg = config["data"]
    spacing = data_cfg["spacing"]
    spacing = tuple(spacing) if isinstance(spacing, list) else (float(spacing),) * 3
    cache_dir = project.folder / RUNS_FOLDER / "cache"
    started = time.perf_counter()

    def prepare():
        return prepare_dataset(project, cache_dir, spacing=spacing,
                               padding_mm=float(data_cfg["padding_mm"]),
                               scales=data_cfg["scales"], seed=int(config["run"]["seed"]),
                               progress=args.progress and rank == 0)

    if world_size > 1:
        import torch.distributed as dist

        data = prepare() if rank == 0 else None
        dist.barrier()
        if rank != 0:
            data = prepare()
    else:
        data = prepare()
    train_split, val_split = data.split("train"), data.split("val")

    # PCA augmentation of the training split, when the config asks for it (cached)
    if world_size > 1:
        augmented = augment_from_config(data, config, cache_dir) if rank == 0 else None
        dist.barrier()
        if rank != 0:
            augmented = augment_from_config(data, config, cache_dir)
    else:
        augmented = augment_from_config(data, config, cache_dir)
    if augmented is not None:
        train_split = with_augmented(train_split, augmented)
    prepare_seconds = time.perf_counter() - started
    num_scales = len(data.scale_sizes)
    scale_weights = config["loss"]["scale_weights"]
    if scale_weights is not None and len(scale_weights) != num_scales:
        raise ConfigError(f"loss.scale_weights has {len(scale_weights)} weights but the data "
                          f"has {num_scales} scales {list(data.scale_sizes)}")
    config["data"]["scales"] = [int(n) for n in data.scale_sizes]

    # Run folder: config and split
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not args.resume:
            atomic_write_text(out_dir / "config.json", json.dumps(config, indent=2) + "\n")
        split = {name: data.split(name).names for name in ("train", "val", "test")}
        split["project"] = str(project_path)
        atomic_write_text(out_dir / "split.json", json.dumps(split, indent=2) + "\n")
        generated = len(augmented) if augmented is not None else 0
        logger.info("run folder %s: %d train subjects%s, %d val subjects, grid %s at %s mm, "
                    "scales %s, stages %s, device %s, %d training process(es)", out_dir,
                    len(data.split("train")),
                    f" + {generated} PCA-augmented samples" if generated else "",
                    len(val_split), list(data.grid.size), list(data.grid.spacing),
                    list(data.scale_sizes), stage_plan(config, num_scales), device, world_size)

    # Train
    model = build_model(config, data)
    result = train_model(model, train_split, val_split, config, out_dir,
                         prediction=prediction_metadata(data), resume=args.resume,
                         device=device, progress=args.progress)
    if rank != 0:
        return 0

    # Summary
    print(f"run folder: {out_dir}")
    print(f"data preparation{' and augmentation' if augmented is not None else ''}: "
          f"{prepare_seconds:.0f} s; training: {result.seconds:.0f} s")
    if result.best_epoch is not None:
        row = result.history[result.best_epoch - 1]
        per_scale = ", ".join(
            f"{n}: {row[f'val_rmse_s{k}']:.3f}" if row.get(f"val_rmse_s{k}") is not None
            else f"{n}: -" for k, n in enumerate(data.scale_sizes, start=1))
        print(f"best epoch {result.best_epoch}: val particle RMSE (mm) per scale {per_scale}")
    print(f"best checkpoint: {result.best_path}")
    return 0
