"""``shapeworks-progressive evaluate PROJECT --predictions RUN_DIR [--out DIR]``.

Measures the predictions in ``RUN_DIR/predictions`` against the project's ground truth
(particle RMSE, surface distances, Dice, and the floor of meshes warped from the true
particles), writes ``evaluation.csv``, ``summary.json``, meshes with ``deepssm_error``
and ``report.md`` with figures, and prints a per-scale table. Exit status 0.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

__all__ = ["add_parser", "run", "format_summary"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="measure predictions against the project's ground truth and write a report",
        description=(
            "Evaluate the predictions of a run folder (RUN_DIR/predictions, written by "
            "'predict') against the project's optimized world particles and original "
            "surfaces: particle RMSE, surface distances (mean, 95th percentile, "
            "Hausdorff), Dice, and the floor given by the true particles. All in mm, "
            "in each scan's own frame."
        ),
    )
    parser.add_argument("project", type=Path, help="the .swproj or .xlsx project file")
    parser.add_argument("--predictions", type=Path, required=True, metavar="RUN_DIR",
                        help="run folder holding predictions/predictions.json")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="output folder (default: RUN_DIR/evaluation)")
    parser.add_argument("--warp-method", choices=("displacement", "shapeworks"),
                        default="displacement",
                        help="mesh warp: template + biharmonic displacement (default) or "
                             "ShapeWorks' W @ particles")
    parser.add_argument("--no-report", dest="report", action="store_false",
                        help="skip report.md and its figures")
    parser.set_defaults(func=run)
    return parser


def format_summary(summary: dict) -> str:
    """A plain-text table: one line per scale, mean over subjects (mm)."""
    header = (f"{'scale':>6} {'RMSE':>8} {'surface':>8} {'p95':>8} {'Hausdorff':>10} "
              f"{'floor':>8} {'Dice':>6}")
    lines = [header]

    def cell(stats, width, digits=3):
        if not stats or not stats.get("n"):
            return f"{'-':>{width}}"
        value = stats["mean"]
        return f"{value:>{width}.{digits}f}" if math.isfinite(value) else f"{'-':>{width}}"

    for size in summary.get("scales", []):
        stats = summary["per_scale"][str(size)]
        lines.append(f"{size:>6} {cell(stats['particle_rmse_mm'], 8)} "
                     f"{cell(stats['surface_mean_mm'], 8)} {cell(stats['surface_p95_mm'], 8)} "
                     f"{cell(stats['hausdorff_mm'], 10)} "
                     f"{cell(stats['floor_surface_mean_mm'], 8)} {cell(stats['dice'], 6)}")
    return "\n".join(lines)


def run(args) -> int:
    from ..evaluation import evaluate_run
    from ..project import Project
    from ..report import write_report

    project = Project.load(args.project)
    result = evaluate_run(project, args.predictions, args.out, method=args.warp_method,
                          progress=True)
    print(f"evaluated {result.summary['n_subjects']} subject(s); all values in mm, measured "
          "in each subject's own image frame, mean over subjects")
    print(format_summary(result.summary))
    print(f"table: {result.csv_path}")
    print(f"summary: {result.summary_path}")
    if args.report:
        report = write_report(result.out_dir, run_dir=args.predictions)
        print(f"report: {report}")
    return 0
