"""Predict the shape in new, unsegmented scans with a trained run, from Python.

The command line does the same with ``shapeworks-progressive predict PROJECT --model RUN
--images SCAN.nii.gz``; this script shows the Python calls and what comes back, so the
predicted particles can feed your own analysis.

Usage (after ``make demo``, which trains ``output/hippocampus/runs/default_<digest>``)::

    .venv/bin/python examples/predict_new_scans.py output/hippocampus/hippocampus.swproj \\
        output/hippocampus/runs/default_* \\
        ../shared/data/hippocampus_msd/imagesTr/hippocampus_001.nii.gz

Every scan is registered to the project's reference scan (translation, then rigid), the
network predicts every particle scale, and the files land in ``OUT`` (default
``<run>/predictions_examples``): per scan ``world.particles`` (world frame, mm, the
project's particle order), ``local.particles`` (the scan's own physical frame, mm), one
file per coarser scale, and the predicted segmentation on the scan's own grid.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="the project the run was trained on")
    parser.add_argument("run", type=Path, help="training run folder (its best.pt)")
    parser.add_argument("scans", type=Path, nargs="+", help="new images (.nii.gz, .nrrd ...)")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from shapeworks_progressive.particles import read_particles
    from shapeworks_progressive.predict import predict
    from shapeworks_progressive.project import Project

    project = Project.load(args.project)
    out = args.out or args.run / "predictions_examples"
    result = predict(project, args.run, images=args.scans, out_dir=out,
                     write_project=False, progress=False)
    for shape in result.predictions:
        local = read_particles(shape.folder / "local.particles")
        extent = np.ptp(local, axis=0)
        scales = ", ".join(str(n) for n in sorted(shape.scales)) or "-"
        print(f"{shape.name}: {len(local)} particles (scales {scales}); extent in the "
              f"scan's frame {extent[0]:.1f} x {extent[1]:.1f} x {extent[2]:.1f} mm; "
              f"files in {shape.folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
