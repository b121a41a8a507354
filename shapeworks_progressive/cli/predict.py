"""``shapeworks-progressive predict PROJECT --model RUN_DIR``: predict particles from images.

Loads the run's best checkpoint, registers each image to the reference image stored in it
(no segmentation needed), predicts every particle scale and writes, per subject, world and
local ``.particles``, one file per scale and the predicted segmentation (NRRD, the
subject's image frame) into ``RUN_DIR/predictions``; then ``<name>_predicted.swproj``
beside the project (which is never changed) and, with ``--studio``, the files Studio's
DeepSSM tab reads. Every input is checked before any work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="predict particles (every scale) and segmentations from images",
        description=(
            "Predict particles for project subjects (a split or names) and for new images "
            "with a trained run. Each image is registered to the training reference image; "
            "no segmentation is needed. Writes RUN_DIR/predictions and "
            "<project>_predicted.swproj beside the project (the project is not changed)."
        ),
    )
    parser.add_argument("project", type=Path, help="the .swproj or .xlsx project file")
    parser.add_argument("--model", type=Path, required=True, metavar="RUN_DIR",
                        help="training run folder (its best.pt) or a checkpoint file")
    parser.add_argument("--subjects", nargs="+", default=None, metavar="test|val|NAME",
                        help="splits and/or subject names to predict (default: test, "
                             "unless --images is given)")
    parser.add_argument("--images", nargs="+", type=Path, default=None, metavar="FILE",
                        help="new images not in the project (named by file stem; no "
                             "ground truth)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="predictions folder (default: RUN_DIR/predictions)")
    parser.add_argument("--studio", action="store_true",
                        help="also write the layout of Studio's DeepSSM tab under "
                             "<project folder>/deepssm")
    parser.add_argument("--no-project", dest="write_project", action="store_false",
                        help="do not write <project>_predicted.swproj")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the network runs (default: auto)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the registration's metric sampling (default: 0)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args) -> int:
    from ..predict import predict
    from ..project import Project

    project_path = Path(args.project).resolve()
    if not project_path.is_file():
        raise FileNotFoundError(f"project file not found: {project_path}")
    project = Project.load(project_path)
    result = predict(project, args.model, subjects=args.subjects, images=args.images,
                     out_dir=args.out, studio=args.studio, write_project=args.write_project,
                     device=args.device, seed=args.seed, progress=args.progress)
    print(f"predicted {len(result.predictions)} image(s) with {result.checkpoint}")
    width = max([len(p.name) for p in result.predictions] + [7])
    print(f"{'subject':<{width}}  {'row':>5}  {'seconds':>8}  registration")
    manifest = _registrations(result.manifest_path)
    for prediction in result.predictions:
        row = "-" if prediction.row_index is None else str(prediction.row_index)
        converged = manifest.get(prediction.name, {}).get("converged")
        status = "converged" if converged else "NOT converged"
        print(f"{prediction.name:<{width}}  {row:>5}  {result.seconds[prediction.name]:>8.2f}"
              f"  {status}")
    print(f"predictions: {result.out_dir}")
    if result.project_path is not None:
        print(f"predicted project: {result.project_path}")
    if result.studio_files:
        print(f"Studio DeepSSM files: {len(result.studio_files)} under "
              f"{project.folder / 'deepssm'}")
    failed = [p.name for p in result.predictions
              if not manifest.get(p.name, {}).get("converged")]
    if failed:
        print(f"error: registration to the reference image did not converge for "
              f"{len(failed)} image(s): {', '.join(failed)}; their predictions were written "
              "but may be far off: check that these images show the same anatomy and field "
              "of view as the training images", file=sys.stderr)
        return 1
    return 0


def _registrations(manifest_path: Path) -> dict:
    import json

    content = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    return {name: entry.get("registration", {})
            for name, entry in content.get("subjects", {}).items()}
