"""Predicted shapes back into ShapeWorks: a new project beside the user's, and Studio files.

:func:`write_predicted_project` writes ``<name>_predicted.swproj`` next to the user's
project, which is never touched. The new project holds every original row unchanged
(ShapeWorks' reader sees the same strings) plus one row per prediction, in the recommended
form of ``shapeworks_formats.md`` section 6.2:

- ``world_particles_<d>``: the predicted particles in the shared world frame (mm);
- ``alignment_<d>`` = the image-to-world registration transform of the prediction,
  ``procrustes_<d>`` = identity, and ``local_particles_<d>`` = ``inverse(alignment) @
  world``: the particles in the subject's own image frame, so that Studio's recomputed
  world (``procrustes @ alignment @ local``) equals the world file;
- the image, the ground-truth shape when the subject has one, an empty groomed file,
  ``group_source`` = ``predicted``, ``excluded`` = ``true`` (ShapeWorks Optimize skips the
  row) and the extra column ``predicted_from`` (the source subject's name).

Original rows get no ``group_source`` value, since that would change them.

:func:`write_deepssm_layout` optionally writes what Studio's DeepSSM tab reads:
``deepssm/model/test_predictions/world_predictions/<row>.particles`` and ``<row>.vtk``
and ``deepssm/test_distances.csv`` (``Name,Distance``).

:func:`read_predictions` reads the folder written by ``predict``::

    <run_dir>/predictions/predictions.json
    <run_dir>/predictions/<subject name>/world.particles       (project particle order)
    <run_dir>/predictions/<subject name>/local.particles
    <run_dir>/predictions/<subject name>/scale<k>_world.particles   (model order)
    <run_dir>/predictions/<subject name>/segmentation.nrrd

``predictions.json``: ``{"scale_sizes": [...], "particle_order": [...], "subjects":
{name: {"row_index": int or null, "image": path, "image_to_world": [16 numbers,
row-major], "world": file, "local": file, "scales": {"<k>": file}, "segmentation":
file}}}``. File names are relative to the subject's folder; missing names default to
the ones above. ``scale_sizes`` and ``particle_order`` may also sit in each subject entry.
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

from .errors import ProjectError
from .fileio import atomic_write_text
from .particles import read_particles, write_particles
from .transforms import apply_transform, parse_transform

__all__ = ["PredictedShape", "read_predictions", "write_predicted_project",
           "write_deepssm_layout", "write_back_run", "predicted_project_path", "PREDICTED_GROUP"]

logger = logging.getLogger(__name__)

PREDICTED_GROUP = ("source", "predicted")


@dataclass
class PredictedShape:
    """One predicted shape: finest-scale world particles and how they map to the image.

    Attributes
    ----------
    name : str
        Subject name (the source row's name, or the image's stem for a new image).
    particles_world : (N, 3) ndarray
        Finest-scale prediction in the project's particle order, world frame (mm).
    image_to_world : (4, 4) ndarray
        Forward transform from the subject's image frame to world (the registration).
    row_index : int or None
        Row of the source subject in the project, ``None`` for an image not in it.
    image : Path or None
        The image the prediction was made from.
    scales : dict of int to (n_k, 3) ndarray
        Per scale size ``n_k``, the world prediction in model order (rows
        ``particle_order[:n_k]`` of the project's particle files).
    particle_order : (N,) int64 ndarray or None
        Model row ``r`` is project row ``particle_order[r]``.
    segmentation : Path or None
        Predicted segmentation in the subject's image frame.
    folder : Path or None
        The subject's prediction folder.
    """

    name: str
    particles_world: np.ndarray
    image_to_world: np.ndarray = field(default_factory=lambda: np.eye(4))
    row_index: int | None = None
    image: Path | None = None
    scales: dict = field(default_factory=dict)
    particle_order: np.ndarray | None = None
    segmentation: Path | None = None
    folder: Path | None = None

    @property
    def particles_local(self) -> np.ndarray:
        """(N, 3) particles in the subject's image frame: ``inverse(image_to_world) @ world``."""
        return apply_transform(self.particles_world, self.image_to_world, inverse=True)


def _matrix(value, where: str) -> np.ndarray:
    if value is None:
        return np.eye(4)
    if isinstance(value, str):
        return parse_transform(value)
    matrix = np.asarray(value, dtype=float)
    if matrix.size != 16 or not np.all(np.isfinite(matrix)):
        raise ProjectError(f"{where}: image_to_world must be 16 finite numbers, got {value!r}")
    return matrix.reshape(4, 4)


def read_predictions(run_dir: str | os.PathLike) -> list[PredictedShape]:
    """Read ``<run_dir>/predictions`` (or ``run_dir`` itself if it holds predictions.json).

    Raises
    ------
    FileNotFoundError
        No ``predictions.json`` (the message holds the folders searched).
    ProjectError
        A malformed entry (names the subject and the key).
    """
    run_dir = Path(run_dir).resolve()
    folder = run_dir / "predictions"
    if not (folder / "predictions.json").is_file() and (run_dir / "predictions.json").is_file():
        folder = run_dir
    manifest_path = folder / "predictions.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no predictions.json in {run_dir / 'predictions'} or {run_dir}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ProjectError(f"{manifest_path} is not valid JSON: {err}") from err
    entries = manifest.get("subjects", manifest)
    if not isinstance(entries, dict):
        raise ProjectError(f"{manifest_path}: 'subjects' must map names to entries")
    shared_sizes = manifest.get("scale_sizes")
    shared_order = manifest.get("particle_order")
    predictions = []
    for name, entry in entries.items():
        if not isinstance(entry, dict) or name in ("scale_sizes", "particle_order"):
            continue
        where = f"{manifest_path} subject {name!r}"
        subject_dir = folder / name
        files = entry.get("files", {}) if isinstance(entry.get("files"), dict) else {}

        def file_of(key, default, entry=entry, files=files, subject_dir=subject_dir):
            value = entry.get(key, files.get(key, default))
            return None if value in (None, "") else subject_dir / value

        world_path = file_of("world", "world.particles")
        particles_world = read_particles(world_path)
        order = entry.get("particle_order", shared_order)
        order = None if order is None else np.asarray(order, dtype=np.int64)
        sizes = entry.get("scale_sizes", shared_sizes) or []
        scale_files = entry.get("scales", files.get("scales")) or {}
        scales = {}
        for size in sizes:
            size = int(size)
            default = f"scale{size}_world.particles"
            path = subject_dir / str(scale_files.get(str(size), default))
            if path.is_file():
                scales[size] = read_particles(path)
        segmentation = file_of("segmentation", "segmentation.nrrd")
        image = entry.get("image")
        row_index = entry.get("row_index", entry.get("project_row"))
        predictions.append(PredictedShape(
            name=str(name), particles_world=particles_world,
            image_to_world=_matrix(entry.get("image_to_world"), where),
            row_index=None if row_index is None else int(row_index),
            image=None if not image else Path(image),
            scales=scales, particle_order=order,
            segmentation=segmentation if segmentation and segmentation.is_file() else None,
            folder=subject_dir))
    return predictions


def predicted_project_path(project) -> Path:
    """``<folder>/<stem>_predicted.swproj`` beside the project file."""
    return project.path.with_name(project.path.stem + "_predicted.swproj")


def write_predicted_project(project, predictions: list[PredictedShape], *,
                            path: str | os.PathLike | None = None,
                            particles_dir: str | os.PathLike | None = None) -> Path:
    """Write a new project: all original rows unchanged plus one row per prediction.

    Parameters
    ----------
    project : Project
        The user's project (loaded from its file; that file is never written).
    predictions : list of PredictedShape
    path : path-like, optional
        The new project file; default ``<stem>_predicted.swproj`` beside the original.
        It must not be the original project file.
    particles_dir : path-like, optional
        Where the predicted particle files go; default ``<stem>_predicted_particles``
        beside the new project.

    Returns
    -------
    Path
        The new project file.
    """
    from .project import Project, Subject

    if len(project.domains) != 1:
        message = (f"{project.path}: predictions can be written back for single-domain "
                   f"projects only; this one has domains {project.domains}")
        raise ProjectError(message)
    target = Path(path) if path is not None else predicted_project_path(project)
    target = target.resolve()
    if target == project.path.resolve():
        raise ProjectError(f"refusing to write predictions into the original project {target}")
    particles_dir = (Path(particles_dir) if particles_dir is not None
                     else target.with_name(target.stem + "_particles")).resolve()

    # A fresh copy from disk, so that the caller's object stays as it is.
    new_project = Project.load(project.path)
    n_particles = _particle_count(new_project)
    image_key = _first_image_key(new_project)
    names = {s.name for s in new_project.subjects}
    for prediction in predictions:
        particles_world = np.asarray(prediction.particles_world, dtype=float)
        if n_particles is not None and len(particles_world) != n_particles:
            message = (f"prediction {prediction.name!r} has {len(particles_world)} particles; "
                       f"the rows of {project.path} have {n_particles}")
            raise ProjectError(message)
        source = (new_project.subjects[prediction.row_index]
                  if prediction.row_index is not None else None)
        row_name = f"{prediction.name}_predicted"
        while row_name in names:
            row_name += "_"
        names.add(row_name)
        safe = _safe_name(prediction.name)
        world_path = write_particles(particles_dir / f"{safe}_world.particles", particles_world)
        local_path = write_particles(particles_dir / f"{safe}_local.particles",
                                     prediction.particles_local)
        image = prediction.image or (source.image if source is not None else None)
        subject = Subject(
            name=row_name,
            shapes=[source.shapes[0] if source is not None and source.shapes else None],
            groomed=[None],
            local_particles=[local_path],
            world_particles=[world_path],
            alignments=[np.asarray(prediction.image_to_world, dtype=float)],
            procrustes=[np.eye(4)],
            images={image_key: Path(image)} if image is not None else {},
            groups={PREDICTED_GROUP[0]: PREDICTED_GROUP[1]},
            extra={"predicted_from": prediction.name},
            excluded=True,
        )
        new_project.add_subject(subject)
    written = new_project.save(target)
    logger.info("wrote %s with %d predicted row(s)", written, len(predictions))
    return written


def write_deepssm_layout(project, predictions: list[PredictedShape], *,
                         meshes: dict | None = None,
                         distances: dict | None = None) -> list[Path]:
    """Write the files Studio's DeepSSM tab reads, under ``<project folder>/deepssm``.

    Parameters
    ----------
    project : Project
    predictions : list of PredictedShape
        Only predictions with a ``row_index`` are written (the tab indexes by row).
    meshes : dict of str to vtkPolyData, optional
        Per prediction name, its world-frame mesh (with a ``deepssm_error`` array);
        written as ``<row>.vtk``.
    distances : dict of str to float, optional
        Per prediction name, its mean surface distance (mm) for ``test_distances.csv``;
        missing or NaN is written ``N/A``.

    Returns
    -------
    list of Path
        Files written.
    """
    from .meshes import write_mesh

    meshes = meshes or {}
    distances = distances or {}
    folder = project.folder / "deepssm" / "model" / "test_predictions" / "world_predictions"
    written = []
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["Name", "Distance"])
    for prediction in predictions:
        if prediction.row_index is None:
            logger.info("DeepSSM layout: %s has no project row; skipped", prediction.name)
            continue
        row = prediction.row_index
        written.append(write_particles(folder / f"{row}.particles", prediction.particles_world))
        if prediction.name in meshes:
            written.append(write_mesh(folder / f"{row}.vtk", meshes[prediction.name]))
        distance = distances.get(prediction.name)
        ok = distance is not None and math.isfinite(float(distance))
        writer.writerow([prediction.name, f"{float(distance):.6f}" if ok else "N/A"])
    csv_path = project.folder / "deepssm" / "test_distances.csv"
    written.append(atomic_write_text(csv_path, table.getvalue()))
    return written


def write_back_run(project, run_dir: str | os.PathLike, *, evaluation=None,
                   deepssm_layout: bool = False) -> Path:
    """Predicted project (and optionally the DeepSSM-tab files) for a run's predictions.

    Parameters
    ----------
    project : Project
    run_dir : path-like
        Run folder holding ``predictions/predictions.json``.
    evaluation : EvaluationResult, optional
        Gives the world meshes (``<row>.vtk``) and distances of the DeepSSM layout.
    deepssm_layout : bool, default: False
        Also write ``deepssm/model/test_predictions/world_predictions/`` and
        ``deepssm/test_distances.csv`` beside the project.

    Returns
    -------
    Path
        The new ``<name>_predicted.swproj``.
    """
    predictions = read_predictions(run_dir)
    path = write_predicted_project(project, predictions)
    if deepssm_layout:
        write_deepssm_layout(project, predictions,
                             meshes=getattr(evaluation, "meshes", None),
                             distances=getattr(evaluation, "distances", None))
    return path


def _particle_count(project) -> int | None:
    for subject in project.subjects:
        path = subject.world_particles[0] if subject.world_particles else None
        if path is not None and Path(path).is_file():
            return len(read_particles(path))
    return None


def _first_image_key(project) -> str:
    for subject in project.subjects:
        if subject.images:
            return next(iter(subject.images))
    return "image"


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "subject"
