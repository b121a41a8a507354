"""Evaluate predicted shapes: particle errors, surface distances, Dice, and the floor.

Everything is measured in the **prediction's world frame** (mm): the frame the image was
brought into by ``image_to_world`` (for a new image, the registration to the reference).
The ground truth is taken to that frame through the subject's *own image frame*:
``image_to_world @ inv(procrustes @ alignment)`` for particles, ``image_to_world`` for the
original surface, which lies in the image frame. With rigid transforms this equals
measuring in the subject's own image, as ShapeWorks DeepSSM does (local predictions
against the original mesh), so a registration's misalignment is not counted as shape
error; for a training subject (``image_to_world = procrustes @ alignment``) it is the
optimized world frame itself.

- **Particle RMSE**: ``sqrt(mean_i |p_i - t_i|^2)`` over the particles of a scale, with
  ``t`` the subject's optimized particles (``world_particles_<d>``, or its local
  particles mapped by ``procrustes @ alignment``) brought to the prediction's frame; also
  the mean per-particle distance.
- **Surfaces**: the template mesh (the reference subject's groomed mesh and particles,
  mapped to world) is warped by the predicted particles (:class:`MeshWarper`); coarse
  scales use a template built from the same prefix of particles. The **original surface**
  is the subject's ``shape_<d>`` (a mesh, or a mesh of the segmentation contoured at 0.5
  without smoothing, as ShapeWorks' ``toMesh(0.5)``; the groomed mesh when there is no
  shape), mapped by the prediction's ``image_to_world``. We report the
  per-vertex point-to-triangle distances both ways, their symmetric mean (ShapeWorks
  DeepSSM's test distance), the 95th percentile of both directions pooled and the
  Hausdorff distance.
- **Floor**: the same surface distances for the mesh warped from the *ground-truth*
  particles. No particle prediction can be expected to beat it with this template.
- **Dice** of the predicted segmentation (subject's image frame) and the subject's shape:
  a segmentation image is compared on its own voxel grid (the prediction resampled,
  nearest neighbour); a shape mesh is voxelized on the prediction's grid.

Outputs (:func:`evaluate_predictions`) in ``out_dir``: ``evaluation.csv`` (one row per
subject and scale), ``summary.json`` (per scale: mean, std, median, min, max over
subjects), and ``meshes/<subject>/scale<k>_predicted.vtk`` (world frame, per-vertex
``deepssm_error`` = distance to the original surface, mm) plus ``scale<N>_floor.vtk`` and
``original_world.vtk``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .fileio import atomic_write_text, json_safe
from .meshes import is_mesh_path

__all__ = ["check_ground_truth", "evaluate_predictions", "evaluate_run", "EvaluationResult",
           "original_surface_world", "particle_errors", "segmentation_dice", "mesh_dice",
           "summarize", "read_evaluation_csv", "CSV_COLUMNS"]

logger = logging.getLogger(__name__)

CSV_COLUMNS = (
    "subject", "row_index", "split", "scale", "is_finest",
    "particle_rmse_mm", "particle_mean_mm",
    "surface_mean_mm", "surface_pred_to_true_mm", "surface_true_to_pred_mm",
    "surface_p95_mm", "hausdorff_mm",
    "floor_surface_mean_mm", "floor_surface_p95_mm", "floor_hausdorff_mm",
    "dice",
)
SUMMARY_METRICS = CSV_COLUMNS[5:]


@dataclass
class EvaluationResult:
    """What :func:`evaluate_predictions` measured and wrote.

    Attributes
    ----------
    rows : list of dict
        One per subject and scale, keys :data:`CSV_COLUMNS` (NaN where not measurable).
    summary : dict
        The content of ``summary.json``.
    out_dir : Path
    csv_path, summary_path : Path
    meshes : dict of str to vtkPolyData
        Per subject, the finest-scale predicted world mesh with ``deepssm_error``.
    mesh_paths : dict of (str, int) to Path
        Per (subject, scale), the written predicted mesh.
    distances : dict of str to float
        Per subject, the finest-scale symmetric mean surface distance (mm; NaN without
        an original surface).
    """

    rows: list
    summary: dict
    out_dir: Path
    csv_path: Path
    summary_path: Path
    meshes: dict = field(default_factory=dict)
    mesh_paths: dict = field(default_factory=dict)
    distances: dict = field(default_factory=dict)


def particle_errors(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(RMSE, mean) of per-particle Euclidean distances (mm) of two (N, 3) arrays."""
    predicted = np.asarray(predicted, dtype=float)
    truth = np.asarray(truth, dtype=float)
    if predicted.shape != truth.shape:
        raise ValueError(f"particle arrays differ in shape: {predicted.shape} vs {truth.shape}")
    distances = np.linalg.norm(predicted - truth, axis=1)
    return float(np.sqrt(np.mean(distances ** 2))), float(np.mean(distances))


def original_surface_world(subject, *, domain_index: int = 0,
                           image_to_world: np.ndarray | None = None):
    """The subject's original surface in a world frame, or ``None`` if it has none.

    ``shape_<d>`` (mesh, or segmentation contoured at 0.5 without smoothing), else the
    groomed mesh, both in the subject's image frame; mapped by ``image_to_world``
    (default: the subject's ``procrustes @ alignment``).
    """
    from .meshes import read_mesh, transform_mesh

    shape = subject.shapes[domain_index] if len(subject.shapes) > domain_index else None
    groomed = subject.groomed[domain_index] if len(subject.groomed) > domain_index else None
    if shape is not None and Path(shape).is_file():
        if is_mesh_path(shape):
            mesh = read_mesh(shape)
        else:
            import SimpleITK as sitk

            from .segmentation import segmentation_to_mesh

            labels = sitk.ReadImage(str(shape))
            mask = sitk.Cast(labels > 0, sitk.sitkUInt8)
            mesh = segmentation_to_mesh(mask, smoothing_iterations=0)
    elif groomed is not None and Path(groomed).is_file() and is_mesh_path(groomed):
        mesh = read_mesh(groomed)
    else:
        return None
    if image_to_world is None:
        image_to_world = subject.world_transform(domain_index)
    return transform_mesh(mesh, image_to_world)


def segmentation_dice(predicted_path: str | os.PathLike, truth_path: str | os.PathLike
                      ) -> float:
    """Dice of two label images (non-zero = inside) on the ground truth's voxel grid.

    The prediction is resampled onto the truth's grid (nearest neighbour, physical
    coordinates, no transform) when their grids differ.
    """
    import SimpleITK as sitk

    from .surface_distance import dice

    truth = sitk.ReadImage(str(truth_path))
    predicted = sitk.ReadImage(str(predicted_path))
    same_grid = (truth.GetSize() == predicted.GetSize()
                 and np.allclose(truth.GetOrigin(), predicted.GetOrigin(), atol=1e-4)
                 and np.allclose(truth.GetSpacing(), predicted.GetSpacing(), atol=1e-6)
                 and np.allclose(truth.GetDirection(), predicted.GetDirection(), atol=1e-6))
    if not same_grid:
        predicted = sitk.Resample(predicted, truth, sitk.Transform(), sitk.sitkNearestNeighbor,
                                  0, predicted.GetPixelID())
    return dice(sitk.GetArrayViewFromImage(predicted), sitk.GetArrayViewFromImage(truth))


def mesh_dice(predicted_path: str | os.PathLike, truth_mesh) -> float:
    """Dice of a label image and a closed surface voxelized on the image's grid.

    ``truth_mesh`` must be in the image's physical frame (the subject's frame, mm). A
    voxel is inside when its centre is inside the surface (VTK image stencil, in index
    space, so any direction and spacing work).
    """
    import SimpleITK as sitk
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkImagingStencil import vtkImageStencilToImage, vtkPolyDataToImageStencil

    from .meshes import arrays_to_mesh, mesh_to_arrays
    from .segmentation import index_to_world_matrix
    from .surface_distance import dice
    from .transforms import apply_transform

    predicted = sitk.ReadImage(str(predicted_path))
    vertices, faces = mesh_to_arrays(truth_mesh)
    vertices_index = apply_transform(vertices, index_to_world_matrix(predicted), inverse=True)
    size = predicted.GetSize()
    stencil = vtkPolyDataToImageStencil()
    stencil.SetInputData(arrays_to_mesh(vertices_index, faces))
    stencil.SetOutputOrigin(0.0, 0.0, 0.0)
    stencil.SetOutputSpacing(1.0, 1.0, 1.0)
    stencil.SetOutputWholeExtent(0, size[0] - 1, 0, size[1] - 1, 0, size[2] - 1)
    to_image = vtkImageStencilToImage()
    to_image.SetInputConnection(stencil.GetOutputPort())
    to_image.SetInsideValue(1)
    to_image.SetOutsideValue(0)
    to_image.SetOutputScalarTypeToUnsignedChar()
    to_image.Update()
    truth_zyx = vtk_to_numpy(to_image.GetOutput().GetPointData().GetScalars()).reshape(
        size[2], size[1], size[0])
    return dice(sitk.GetArrayViewFromImage(predicted), truth_zyx)


def _truth_particles(subject, domain_index: int = 0,
                     image_to_world: np.ndarray | None = None) -> np.ndarray | None:
    """The subject's optimized particles (N, 3), mm, in the frame of ``image_to_world``.

    World particles are taken back to the subject's image frame with its ``procrustes @
    alignment`` and forward with ``image_to_world`` (default: unchanged world particles).
    """
    from .particles import read_particles
    from .transforms import apply_transform

    subject_to_world = subject.world_transform(domain_index)
    world = subject.world_particles[domain_index] if subject.world_particles else None
    local = subject.local_particles[domain_index] if subject.local_particles else None
    if world is not None and Path(world).is_file():
        particles_world = read_particles(world)
    elif local is not None and Path(local).is_file():
        particles_world = apply_transform(read_particles(local), subject_to_world)
    else:
        return None
    if image_to_world is None:
        return particles_world
    particles_image = apply_transform(particles_world, subject_to_world, inverse=True)
    return apply_transform(particles_image, image_to_world)


def _find_subject(project, prediction):
    if prediction.row_index is not None and 0 <= prediction.row_index < len(project.subjects):
        return project.subjects[prediction.row_index]
    try:
        return project.subjects[project.subject_index(prediction.name)]
    except KeyError:
        return None


def _nan_row(**values) -> dict:
    row = {column: math.nan for column in CSV_COLUMNS}
    row.update(values)
    return row


def check_ground_truth(project, predictions: list) -> None:
    """Check every prediction's ground truth before any evaluation work.

    Raises
    ------
    ProjectValidationError
        Listing every problem at once: several domains, a subject's particle file that is
        unreadable, empty or holds NaN/Inf, or holds another number of particles than the
        prediction; each names the subject and the file.
    """
    from .errors import ProjectValidationError
    from .particles import read_particles

    problems = []
    if len(project.domains) != 1:
        problems.append(f"project {project.path} has {len(project.domains)} domains "
                        f"{project.domains}; evaluation compares one domain")
    for prediction in predictions:
        subject = _find_subject(project, prediction)
        if subject is None:
            continue
        where = f"subject {subject.name!r} (prediction {prediction.name!r})"
        for paths in (subject.world_particles, subject.local_particles):
            path = paths[0] if paths else None
            if path is None or not Path(path).is_file():
                continue
            try:
                truth = read_particles(path)
            except ValueError as err:
                problems.append(f"{where}: {err}")
                break
            if not np.all(np.isfinite(truth)):
                problems.append(f"{where}: particle file {path} holds NaN or Inf")
            elif len(truth) != len(prediction.particles_world):
                problems.append(f"{where}: particle file {path} has {len(truth)} particles "
                                f"but the prediction has {len(prediction.particles_world)}")
            break
    if problems:
        raise ProjectValidationError(problems)


def evaluate_predictions(project, predictions: list, out_dir: str | os.PathLike, *,
                         method: str = "displacement", save_meshes: bool = True,
                         progress: bool = False) -> EvaluationResult:
    """Measure every prediction at every scale against its subject; write the outputs.

    Parameters
    ----------
    project : Project
        The project the ground truth comes from (template: its reference subject).
    predictions : list of PredictedShape
        See :func:`shapeworks_progressive.writeback.read_predictions`.
    out_dir : path-like
        Output folder (created).
    method : {"displacement", "shapeworks"}, default: "displacement"
        Mesh warp method (:class:`~shapeworks_progressive.mesh_warp.MeshWarper`).
    save_meshes : bool, default: True
    progress : bool, default: False
        Show a progress bar.

    Returns
    -------
    EvaluationResult
    """
    from .mesh_warp import MeshWarper
    from .meshes import write_mesh
    from .surface_distance import surface_distances

    check_ground_truth(project, predictions)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    warpers: dict = {}

    def warper_for(rows_key):
        if rows_key not in warpers:
            rows = None if rows_key is None else np.asarray(rows_key, dtype=np.int64)
            warpers[rows_key] = MeshWarper.from_project(project, rows=rows, method=method)
        return warpers[rows_key]

    rows_out: list[dict] = []
    result_meshes: dict = {}
    mesh_paths: dict = {}
    distances: dict = {}
    iterator = predictions
    if progress:
        from tqdm import tqdm

        iterator = tqdm(predictions, desc="evaluate", unit="subject")
    for prediction in iterator:
        subject = _find_subject(project, prediction)
        frame = (None if prediction.image_to_world is None
                 else np.asarray(prediction.image_to_world, dtype=float))
        truth = (_truth_particles(subject, image_to_world=frame)
                 if subject is not None else None)
        original = (original_surface_world(subject, image_to_world=frame)
                    if subject is not None else None)
        n_total = len(prediction.particles_world)
        dice_value = math.nan
        shape = subject.shapes[0] if subject is not None and subject.shapes else None
        if prediction.segmentation is not None and shape is not None and Path(shape).is_file():
            if is_mesh_path(shape):
                from .meshes import read_mesh

                dice_value = mesh_dice(prediction.segmentation, read_mesh(shape))
            else:
                dice_value = segmentation_dice(prediction.segmentation, shape)
        order = (np.arange(n_total) if prediction.particle_order is None
                 else np.asarray(prediction.particle_order, dtype=np.int64))

        # Scales: coarse ones in model order, the finest from world.particles (project order).
        scales = {k: v for k, v in prediction.scales.items() if k < n_total}
        scales[n_total] = None
        subject_folder = out_dir / "meshes" / _safe_name(prediction.name)
        if save_meshes and original is not None:
            mesh_paths[(prediction.name, "original")] = write_mesh(
                subject_folder / "original_world.vtk", original)
        for size in sorted(scales):
            if scales[size] is None:
                rows_key, predicted = None, np.asarray(prediction.particles_world, dtype=float)
                true_scale = truth
            else:
                rows_key = tuple(int(r) for r in order[:size])
                predicted = np.asarray(scales[size], dtype=float)
                true_scale = None if truth is None else truth[order[:size]]
            row = _nan_row(subject=prediction.name, row_index=prediction.row_index,
                           split=(subject.split if subject is not None else None) or "",
                           scale=size, is_finest=size == n_total, dice=dice_value)
            if true_scale is not None:
                row["particle_rmse_mm"], row["particle_mean_mm"] = particle_errors(
                    predicted, true_scale)
            warper = warper_for(rows_key)
            mesh = warper.build_mesh(predicted)
            error = None
            if original is not None:
                measured = surface_distances(mesh, original)
                error = measured.a_to_b
                row.update({
                    "surface_mean_mm": measured.symmetric_mean,
                    "surface_pred_to_true_mm": measured.mean_a_to_b,
                    "surface_true_to_pred_mm": measured.mean_b_to_a,
                    "surface_p95_mm": measured.p95,
                    "hausdorff_mm": measured.hausdorff,
                })
                if true_scale is not None:
                    floor_mesh = warper.build_mesh(true_scale)
                    floor = surface_distances(floor_mesh, original)
                    row.update({"floor_surface_mean_mm": floor.symmetric_mean,
                                "floor_surface_p95_mm": floor.p95,
                                "floor_hausdorff_mm": floor.hausdorff})
                    if save_meshes and size == n_total:
                        write_mesh(subject_folder / f"scale{size}_floor.vtk", floor_mesh,
                                   point_arrays={"deepssm_error": floor.a_to_b})
            if error is not None:
                mesh = _with_array(mesh, "deepssm_error", error)
            if save_meshes:
                path = subject_folder / f"scale{size}_predicted.vtk"
                write_mesh(path, mesh)
                mesh_paths[(prediction.name, size)] = path
            if size == n_total:
                result_meshes[prediction.name] = mesh
                distances[prediction.name] = row["surface_mean_mm"]
            rows_out.append(row)
            logger.debug("%s scale %d: %s", prediction.name, size, row)

    csv_path = _write_csv(out_dir / "evaluation.csv", rows_out)
    template_row = project.reference_index if project.reference_index is not None else 0
    summary = summarize(rows_out, method=method, reference_index=template_row,
                         project_path=project.path)
    summary_path = atomic_write_text(out_dir / "summary.json",
                                     json.dumps(json_safe(summary), indent=2) + "\n")
    logger.info("evaluated %d prediction(s); wrote %s and %s", len(predictions), csv_path,
                summary_path)
    return EvaluationResult(rows=rows_out, summary=summary, out_dir=out_dir, csv_path=csv_path,
                            summary_path=summary_path, meshes=result_meshes,
                            mesh_paths=mesh_paths, distances=distances)


def evaluate_run(project, run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 **kwargs) -> EvaluationResult:
    """:func:`evaluate_predictions` on ``<run_dir>/predictions``.

    The default output folder is ``<run_dir>/evaluation``.
    """
    from .writeback import read_predictions

    run_dir = Path(run_dir)
    predictions = read_predictions(run_dir)
    out_dir = run_dir / "evaluation" if out_dir is None else Path(out_dir)
    return evaluate_predictions(project, predictions, out_dir, **kwargs)


def _statistics(values: list[float]) -> dict:
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if values.size == 0:
        return {"n": 0}
    return {"n": int(values.size), "mean": float(values.mean()), "std": float(values.std()),
            "median": float(np.median(values)), "min": float(values.min()),
            "max": float(values.max())}


def summarize(rows: list[dict], *, method: str = "displacement", reference_index=None,
              project_path=None) -> dict:
    """Per-scale statistics over subjects (mean, std, median, min, max, n) of every metric."""
    scales = sorted({int(r["scale"]) for r in rows})
    per_scale = {}
    for size in scales:
        selected = [r for r in rows if int(r["scale"]) == size]
        per_scale[str(size)] = {m: _statistics([r[m] for r in selected])
                                for m in SUMMARY_METRICS}
    finest = [r for r in rows if r["is_finest"]]
    return {
        "frame": "prediction",
        "units": "mm",
        "warp_method": method,
        "template_row": reference_index,
        "project": None if project_path is None else str(project_path),
        "n_subjects": len({r["subject"] for r in rows}),
        "scales": scales,
        "per_scale": per_scale,
        "finest": {m: _statistics([r[m] for r in finest]) for m in SUMMARY_METRICS},
        "per_subject": {r["subject"]: {m: r[m] for m in SUMMARY_METRICS} for r in finest},
    }


def _write_csv(path: Path, rows: list[dict]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        out = {}
        for key in CSV_COLUMNS:
            value = row.get(key)
            if isinstance(value, float):
                out[key] = "" if not math.isfinite(value) else f"{value:.6f}"
            elif value is None:
                out[key] = ""
            else:
                out[key] = value
        writer.writerow(out)
    return atomic_write_text(path, buffer.getvalue())


def read_evaluation_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of ``evaluation.csv`` with numbers as floats (empty = NaN)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for raw in csv.DictReader(handle):
            row = dict(raw)
            for key in SUMMARY_METRICS:
                row[key] = float(raw[key]) if raw.get(key) else math.nan
            row["scale"] = int(raw["scale"])
            row["is_finest"] = raw["is_finest"] == "True"
            rows.append(row)
    return rows


def _with_array(mesh, name: str, values: np.ndarray):
    from vtkmodules.util.numpy_support import numpy_to_vtk

    array = numpy_to_vtk(np.ascontiguousarray(values, dtype=np.float32), deep=True)
    array.SetName(name)
    mesh.GetPointData().AddArray(array)
    mesh.GetPointData().SetActiveScalars(name)
    return mesh


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)) or "subject"
