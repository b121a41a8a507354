"""``shapeworks-progressive run PROJECT``: train, predict the test split, evaluate, report.

The whole job in one command, in one run folder (default ``<project folder>/
progressive_runs/<timestamp>``):

1. ``train`` (config, checkpoints, ``train_log.csv``, curves);
2. ``predict`` the test split (``predictions/``, ``<project>_predicted.swproj`` beside the
   project, which is never changed);
3. ``evaluate`` (``evaluation/evaluation.csv``, ``summary.json``, meshes with
   ``deepssm_error``) and ``evaluation/report.md`` with figures;
4. ``run_summary.json`` (seconds per step, paths, finest-scale numbers next to the floor)
   and a summary table on the terminal.

The test split and the config are checked before training starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

__all__ = ["add_parser", "run", "format_closing_note"]

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "run",
        help="train, predict the test split, evaluate and write the report",
        description=(
            "The whole job: train Progressive DeepSSM on the project's train split (best "
            "epoch on val), predict its test split, evaluate against the ground truth "
            "(particle RMSE, surface distances and their floor, Dice) and write the "
            "report; prints the summary table."
        ),
    )
    parser.add_argument("project", type=Path, help="the .swproj or .xlsx project file")
    parser.add_argument("--config", type=Path, default=None,
                        help="training JSON config; missing keys take the defaults")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="run folder (default: <project folder>/progressive_runs/"
                             "<timestamp>)")
    parser.add_argument("--subjects", nargs="+", default=["test"], metavar="test|val|NAME",
                        help="what to predict and evaluate (default: test)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help="overrides the config's run.device")
    parser.add_argument("--resume", action="store_true",
                        help="continue (or reuse) the training run in --out")
    parser.add_argument("--studio", action="store_true",
                        help="also write the layout of Studio's DeepSSM tab under "
                             "<project folder>/deepssm")
    parser.add_argument("--warp-method", choices=("displacement", "shapeworks"),
                        default="displacement", help="mesh warp used for surface distances")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bars")
    parser.set_defaults(func=run)
    return parser


def _train_args(argv: list[str]) -> argparse.Namespace:
    from . import train

    parser = argparse.ArgumentParser(prog="shapeworks-progressive")
    train.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["train", *argv])


def _finest(summary: dict) -> dict:
    def mean(name):
        stats = summary.get("finest", {}).get(name) or {}
        return stats.get("mean") if stats.get("n") else None

    return {name: mean(name) for name in ("particle_rmse_mm", "surface_mean_mm",
                                          "surface_p95_mm", "hausdorff_mm",
                                          "floor_surface_mean_mm", "floor_surface_p95_mm",
                                          "dice")}


def format_closing_note(summary: dict) -> str:
    """One sentence: finest-scale test numbers next to the floor (mm)."""
    finest = _finest(summary)

    def text(value, unit=" mm"):
        if value is None or not math.isfinite(value):
            return "n/a"
        return f"{value:.3f}{unit}"

    return (f"{summary.get('n_subjects', 0)} subject(s), finest scale: particle RMSE "
            f"{text(finest['particle_rmse_mm'])}, surface distance "
            f"{text(finest['surface_mean_mm'])} (floor {text(finest['floor_surface_mean_mm'])}),"
            f" 95th percentile {text(finest['surface_p95_mm'])} (floor "
            f"{text(finest['floor_surface_p95_mm'])}), Hausdorff "
            f"{text(finest['hausdorff_mm'])}, Dice {text(finest['dice'], '')}")


def run(args) -> int:
    from ..config import load_config
    from ..evaluation import evaluate_run
    from ..fileio import atomic_write_text
    from ..predict import predict, select_targets
    from ..project import Project
    from ..validation import warn_if_invalid
    from ..report import write_report
    from ..writeback import write_deepssm_layout
    from . import train
    from .evaluate import format_summary

    started = time.perf_counter()
    seconds: dict[str, float] = {}

    # Check before training: project, what will be predicted, config
    project_path = Path(args.project).resolve()
    if not project_path.is_file():
        raise FileNotFoundError(f"project file not found: {project_path}")
    project = Project.load(project_path)
    warn_if_invalid(project)
    targets = select_targets(project, args.subjects)
    if args.config is not None:
        load_config(args.config)
    out_dir = (Path(args.out).resolve() if args.out is not None
               else train.default_run_dir(project.folder))
    logger.info("run: %s -> %s (%d subject(s) to predict)", project_path, out_dir, len(targets))

    # 1. Train
    argv = [str(project_path), "--out", str(out_dir)]
    if args.config is not None:
        argv += ["--config", str(Path(args.config).resolve())]
    if args.device is not None:
        argv += ["--device", args.device]
    if args.resume:
        argv.append("--resume")
    if not args.progress:
        argv.append("--no-progress")
    step = time.perf_counter()
    print("== train")
    status = train.run(_train_args(argv))
    if status:
        return status
    seconds["train"] = time.perf_counter() - step

    # 2. Predict
    step = time.perf_counter()
    print("== predict")
    predicted = predict(project, out_dir, subjects=args.subjects, device=args.device or "auto",
                        progress=args.progress)
    seconds["predict"] = time.perf_counter() - step
    print(f"predicted {len(predicted.predictions)} subject(s) into {predicted.out_dir}; "
          f"predicted project {predicted.project_path}")

    # 3. Evaluate and report
    step = time.perf_counter()
    print("== evaluate")
    evaluation = evaluate_run(project, out_dir, method=args.warp_method,
                              progress=args.progress)
    report = write_report(evaluation.out_dir, run_dir=out_dir)
    seconds["evaluate"] = time.perf_counter() - step
    studio_files = []
    if args.studio:
        studio_files = write_deepssm_layout(project, predicted.predictions,
                                            meshes=evaluation.meshes,
                                            distances=evaluation.distances)
    seconds["total"] = time.perf_counter() - started

    # 4. Summary
    per_subject = predicted.seconds
    summary = {
        "project": str(project_path),
        "run_dir": str(out_dir),
        "checkpoint": str(predicted.checkpoint),
        "predictions": str(predicted.out_dir),
        "predicted_project": None if predicted.project_path is None
        else str(predicted.project_path),
        "evaluation": str(evaluation.out_dir),
        "report": str(report),
        "studio_files": [str(p) for p in studio_files],
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "predict_seconds_per_subject": {k: round(v, 3) for k, v in per_subject.items()},
        "finest": _finest(evaluation.summary),
        "closing_note": format_closing_note(evaluation.summary),
    }
    summary_path = atomic_write_text(out_dir / "run_summary.json",
                                     json.dumps(summary, indent=2) + "\n")
    print("== summary (mm, measured in each subject's own image frame, mean over subjects)")
    print(format_summary(evaluation.summary))
    print(summary["closing_note"])
    mean_predict = (sum(per_subject.values()) / len(per_subject)) if per_subject else 0.0
    print(f"time: train {seconds['train']:.0f} s, predict {seconds['predict']:.0f} s "
          f"({mean_predict:.2f} s per subject, registration included), evaluate "
          f"{seconds['evaluate']:.0f} s, total {seconds['total']:.0f} s")
    print(f"report: {report}")
    print(f"run summary: {summary_path}")
    return 0
