"""Reference for the hippocampus benchmark: the mean training shape as the "prediction".

A network that learned nothing from the image would predict the mean training shape. This
script measures that shape on the test scans exactly as ``compare`` measures the models:

1. the mean of the ``train`` subjects' world particles (mm, the training world frame),
   the same for every test scan;
2. placed in each test scan's own frame with the registration a compare run used for it
   (``image_to_world`` from that run's ``predictions/predictions.json``; the registration
   is the same for every model, since it depends on the prepared data only);
3. evaluated by :func:`shapeworks_progressive.evaluation.evaluate_run`: particle RMSE and
   surface distance of the mesh warped from the particles, per scale (the scale files are
   the first 128, 256, ... rows of the mean shape in the model's particle order).

Writes ``benchmarks/results/hippocampus_mean_shape.md`` and ``.json`` (machine, date,
commit) and keeps its predictions and evaluation in
``output/hippocampus/progressive_runs/mean_shape/``.

Usage (from the repository root, after a compare run has predicted the test split)::

    .venv/bin/python benchmarks/mean_shape_hippocampus.py
    .venv/bin/python benchmarks/mean_shape_hippocampus.py --registrations RUN_DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from compare_hippocampus import DEFAULT_PROJECT, RESULTS, git_state, results_stem

# The compare run whose test registrations are used, relative to the project's folder
DEFAULT_REGISTRATIONS = Path("progressive_runs") / "compare_benchmark" / "progressive" / "seed0"

logger = logging.getLogger("benchmarks.mean_shape_hippocampus")


def mean_training_shape(project) -> np.ndarray:
    """Mean world particles (N, 3) of the project's ``train`` subjects, project row order."""
    from shapeworks_progressive.particles import read_particles

    train = [s for s in project.subjects if s.split == "train"]
    if not train:
        raise ValueError(f"{project.path}: no subject has split 'train'")
    return np.mean([read_particles(s.world_particles[0]) for s in train], axis=0)


def write_mean_shape_predictions(mean_world: np.ndarray, registrations: Path,
                                 out_dir: Path) -> Path:
    """Write ``<out_dir>/predictions`` with the mean shape for every subject of a run.

    ``registrations`` is a run folder whose ``predictions/predictions.json`` gives each
    subject's ``image_to_world`` (4 x 4, image frame to training world frame, mm).
    """
    from shapeworks_progressive.fileio import atomic_write_text
    from shapeworks_progressive.particles import write_particles
    from shapeworks_progressive.transforms import apply_transform

    manifest_path = registrations / "predictions" / "predictions.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no predictions.json in {manifest_path.parent}: run the "
                                "compare benchmark first, or pass --registrations RUN_DIR")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    order = np.asarray(manifest["particle_order"], dtype=np.int64)
    sizes = [int(k) for k in manifest["scale_sizes"]]
    if len(order) != len(mean_world):
        raise ValueError(f"{manifest_path}: {len(order)} particles in the run, "
                         f"{len(mean_world)} in the project")
    folder = out_dir / "predictions"
    subjects = {}
    for name, entry in manifest["subjects"].items():
        image_to_world = np.asarray(entry["image_to_world"], dtype=float).reshape(4, 4)
        write_particles(folder / name / "world.particles", mean_world)
        write_particles(folder / name / "local.particles",
                        apply_transform(mean_world, image_to_world, inverse=True))
        scales = {}
        for size in sizes:
            scales[str(size)] = f"scale{size}_world.particles"
            write_particles(folder / name / scales[str(size)], mean_world[order[:size]])
        subjects[name] = {**entry, "world": "world.particles", "local": "local.particles",
                          "scales": scales, "segmentation": None}
    atomic_write_text(folder / "predictions.json", json.dumps(
        {**manifest, "checkpoint": None, "registrations_from": str(manifest_path),
         "subjects": subjects}, indent=1) + "\n")
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=DEFAULT_PROJECT,
                        help=f"hippocampus project (default: {DEFAULT_PROJECT})")
    parser.add_argument("--registrations", type=Path, default=None, metavar="RUN_DIR",
                        help="run folder whose test predictions give the registrations "
                             f"(default: <project folder>/{DEFAULT_REGISTRATIONS})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s", datefmt="%H:%M:%S")

    from shapeworks_progressive.compare import machine_info
    from shapeworks_progressive.evaluation import evaluate_run
    from shapeworks_progressive.project import Project

    project_path = args.project.resolve()
    if not project_path.is_file():
        print(f"error: {project_path} not found; make it first with the hippocampus use "
              "case (see README)", file=sys.stderr)
        return 2
    registrations = (args.registrations or project_path.parent / DEFAULT_REGISTRATIONS).resolve()
    try:
        shown = registrations.relative_to(project_path.parent)
    except ValueError:
        shown = registrations
    project = Project.load(project_path)
    out_dir = project_path.parent / "progressive_runs" / "mean_shape"
    mean_world = mean_training_shape(project)
    try:
        write_mean_shape_predictions(mean_world, registrations, out_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = evaluate_run(project, out_dir, save_meshes=False)
    summary = json.loads(Path(result.summary_path).read_text(encoding="utf-8"))

    git = git_state()
    machine = machine_info("cpu")
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    rows = []
    for size in summary["scales"]:
        stats = summary["per_scale"][str(size)]
        rows.append(f"| {size} | {stats['particle_rmse_mm']['mean']:.3f} | "
                    f"{stats['surface_mean_mm']['mean']:.3f} | "
                    f"{stats['surface_p95_mm']['mean']:.3f} | "
                    f"{stats['hausdorff_mm']['mean']:.3f} |")
    lines = [
        "<!-- written by benchmarks/mean_shape_hippocampus.py; do not edit by hand -->",
        f"> commit `{git['commit']}` ({git['tracked_files_changed']} tracked file(s) changed);"
        f" {machine['summary']}; {date}.", "",
        f"# The mean training shape on `{project_path.name}`'s test scans", "",
        f"The mean of the {sum(s.split == 'train' for s in project.subjects)} training "
        f"shapes' world particles, placed in each of the {summary['n_subjects']} test scans "
        "by the registration of the compare run "
        f"`{shown}`, "
        "measured as `compare` measures the models (mm, mean over test scans).", "",
        "| scale | particle RMSE (mm) | surface distance (mm) | 95th percentile (mm) "
        "| Hausdorff (mm) |",
        "|---|---|---|---|---|", *rows, "",
    ]
    stem = results_stem(project_path)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}_mean_shape.md").write_text("\n".join(lines), encoding="utf-8")
    (RESULTS / f"{stem}_mean_shape.json").write_text(json.dumps(
        {"project": str(project_path), "registrations": str(registrations), "date": date,
         "machine": machine, "git": git, "summary": summary}, indent=1) + "\n",
        encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
