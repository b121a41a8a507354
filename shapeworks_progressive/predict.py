"""Predict particles and segmentations for project subjects or new images with a trained run.

:func:`predict` is what ``shapeworks-progressive predict`` does:

1. **Check** everything first (:func:`select_targets`): the checkpoint reads, every named
   subject exists and has an image, every image's header reads, names are unique, and the
   model predicts as many particles as the project's shapes hold. All problems are
   reported at once, before any registration.
2. **Register** each image to the reference image stored in the checkpoint
   (:func:`~shapeworks_progressive.dataset.prepare_prediction_image`: translation, rigid
   and, when training used it, similarity), exactly as validation and test images were
   during training. No segmentation is needed.
3. **Predict** every scale with the network on the training grid (world frame, mm).
4. **Write** per subject, in ``<out>/<subject name>/`` (``<out>`` defaults to
   ``<run_dir>/predictions``):

   ``world.particles``            finest scale, world frame (mm), the *project's* row order
   ``local.particles``            the same in the subject's own image frame:
                                  ``inverse(image_to_world) @ world``
   ``scale<k>_world.particles``   every scale ``k``, world frame, *model* order (rows
                                  ``particle_order[:k]`` of the project's particle files)
   ``segmentation.nrrd``          predicted label map (uint8 {0, 1}) on the subject's own
                                  image grid (models with a segmentation decoder only)

   and ``<out>/predictions.json`` (see :mod:`~shapeworks_progressive.writeback`), with the
   registration outcome and the seconds spent per subject (registration included). It
   lists the predictions of this call only (a later call replaces it).
5. **Write back**: ``<project>_predicted.swproj`` beside the project (the original file is
   never written) and, on request, the layout Studio's DeepSSM tab reads.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ParticleCountError, ProjectValidationError
from .fileio import atomic_path, atomic_write_text

__all__ = ["PredictionTarget", "PredictResult", "find_checkpoint", "select_targets",
           "project_particle_count", "check_particle_count", "predict_array",
           "write_segmentation", "predict", "SPLIT_KEYWORDS", "PREDICTIONS_JSON"]

logger = logging.getLogger(__name__)

SPLIT_KEYWORDS = ("train", "val", "test")
PREDICTIONS_JSON = "predictions.json"
_IMAGE_SUFFIXES = (".nii.gz", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd", ".tif", ".tiff",
                   ".dcm", ".gz")


@dataclass
class PredictionTarget:
    """One image to predict for.

    Attributes
    ----------
    name : str
        Subject name, or the image file's stem for a new image.
    image : Path
        The image (absolute).
    row_index : int or None
        Row of the subject in the project; ``None`` for a new image.
    """

    name: str
    image: Path
    row_index: int | None = None


@dataclass
class PredictResult:
    """What :func:`predict` wrote.

    Attributes
    ----------
    out_dir : Path
        Folder holding ``predictions.json`` and one folder per subject.
    manifest_path : Path
    predictions : list of PredictedShape
    project_path : Path or None
        The written ``<name>_predicted.swproj``.
    studio_files : list of Path
        Files of the DeepSSM-tab layout (empty unless asked for).
    seconds : dict of str to float
        Per subject, wall time of registration, inference and writing.
    checkpoint : Path
    """

    out_dir: Path
    manifest_path: Path
    predictions: list
    project_path: Path | None = None
    studio_files: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    checkpoint: Path | None = None


# ----------------------------------------------------------------------------- checks


def find_checkpoint(run_dir: str | os.PathLike) -> Path:
    """The checkpoint to predict with: ``best.pt`` of a run folder, else ``last.pt``.

    ``run_dir`` may also be the ``.pt`` file itself. Looked up in ``run_dir`` and
    ``run_dir/model``.

    Raises
    ------
    FileNotFoundError
        Naming the places searched.
    """
    run_dir = Path(os.path.abspath(os.fspath(run_dir)))
    if run_dir.is_file():
        return run_dir
    searched = []
    for folder in (run_dir, run_dir / "model"):
        for name in ("best.pt", "last.pt"):
            candidate = folder / name
            searched.append(str(candidate))
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"no checkpoint for --model {run_dir}: none of "
                            f"{', '.join(searched)} exists; give a training run folder")


def _image_stem(path: Path) -> str:
    name = path.name
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _bad_folder_name(name: str) -> bool:
    return (not name or name in (".", "..") or "/" in name or "\\" in name
            or name == PREDICTIONS_JSON)


def select_targets(project, subjects: Sequence[str] | None = None,
                   images: Sequence[str | os.PathLike] | None = None
                   ) -> list[PredictionTarget]:
    """Resolve ``--subjects`` and ``--images`` into images to predict; check them all.

    Parameters
    ----------
    project : Project
    subjects : sequence of str, optional
        Split names (``train``, ``val``, ``test``: their non-excluded subjects) or subject
        names, in any mix. Default: ``["test"]`` when ``images`` is empty too.
    images : sequence of path-like, optional
        New image files, not in the project; named by their file stem.

    Returns
    -------
    list of PredictionTarget
        In the order asked, each subject once.

    Raises
    ------
    ProjectValidationError
        Listing every problem: several domains, unknown subject names (with the names
        that exist), empty splits, subjects without an image, missing or unreadable
        images, duplicate names.
    """
    from .validation import read_image_info

    images = list(images or [])
    subjects = list(subjects or [])
    if not subjects and not images:
        subjects = ["test"]
    problems: list[str] = []
    if len(project.domains) != 1:
        problems.append(f"project {project.path} has {len(project.domains)} domains "
                        f"{project.domains}; Progressive DeepSSM predicts one domain")
    targets: list[PredictionTarget] = []
    seen_rows: set[int] = set()
    by_name = {s.name: i for i, s in enumerate(project.subjects)}

    # Project subjects: split keywords or names
    unknown = []
    for token in subjects:
        key = str(token).strip()
        if key.lower() in SPLIT_KEYWORDS and key not in by_name:
            rows = [i for i, s in enumerate(project.subjects)
                    if (s.split or "").lower() == key.lower() and not s.excluded]
            if not rows:
                problems.append(f"split {key!r} of {project.path} has no subjects (set the "
                                "'split' column, or name subjects instead)")
        elif key in by_name:
            rows = [by_name[key]]
        else:
            unknown.append(key)
            continue
        for row in rows:
            if row in seen_rows:
                continue
            seen_rows.add(row)
            subject = project.subjects[row]
            where = f"subject {subject.name!r} (row {row})"
            if subject.image is None:
                problems.append(f"{where} of {project.path} has no image column (image_<name>)")
                continue
            targets.append(PredictionTarget(subject.name, Path(subject.image), row))
    if unknown:
        names = [s.name for s in project.subjects]
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        problems.append(f"no subject named {', '.join(map(repr, unknown))} in {project.path} "
                        f"(subjects: {shown}; or use a split: {', '.join(SPLIT_KEYWORDS)})")

    # New images
    for image in images:
        path = Path(os.path.abspath(os.fspath(image)))
        targets.append(PredictionTarget(_image_stem(path), path, None))

    # Files and names
    names_seen: dict[str, Path] = {}
    for target in targets:
        where = (f"subject {target.name!r} (row {target.row_index})"
                 if target.row_index is not None else f"--images {target.image}")
        if not target.image.is_file():
            problems.append(f"{where}: image file not found: {target.image}")
        else:
            try:
                info = read_image_info(target.image)
            except RuntimeError as err:
                last = str(err).strip().splitlines()[-1] if str(err).strip() else err
                problems.append(f"{where}: cannot read image {target.image}: {last}")
            else:
                if len(info["size"]) != 3:
                    problems.append(f"{where}: image {target.image} has {len(info['size'])} "
                                    "dimensions; expected 3")
        if _bad_folder_name(target.name):
            problems.append(f"{where}: the name {target.name!r} cannot be a folder name; "
                            "rename the image or the subject")
        elif target.name in names_seen:
            problems.append(f"{where}: the name {target.name!r} is used twice ({target.image} "
                            f"and {names_seen[target.name]}); rename one image")
        else:
            names_seen[target.name] = target.image
    if problems:
        raise ProjectValidationError(problems)
    return targets


def project_particle_count(project) -> tuple[int | None, Path | None]:
    """Particles per shape of the project: (count, the file it was read from).

    The first subject with a readable world (else local) particle file decides;
    ``(None, None)`` when no subject has one.
    """
    from .particles import read_particles

    for subject in project.subjects:
        for paths in (subject.world_particles, subject.local_particles):
            path = paths[0] if paths else None
            if path is not None and Path(path).is_file():
                try:
                    return len(read_particles(path)), Path(path)
                except ValueError:
                    continue
    return None, None


def check_particle_count(project, n_model: int, checkpoint: Path) -> None:
    """Raise :class:`ParticleCountError` when the model and project counts differ."""
    n_project, source = project_particle_count(project)
    if n_project is not None and n_project != n_model:
        message = (f"the model {checkpoint} predicts {n_model} particles per shape but the "
                   f"project {project.path} has {n_project} (e.g. {source}); predict with a "
                   "model trained on this project's particles")
        raise ParticleCountError(message)


# ----------------------------------------------------------------------------- compute


def predict_array(model, image_array: np.ndarray, *, device="cpu"
                  ) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Run the network on one normalized image on the training grid.

    Parameters
    ----------
    model : ParticleModel
        In eval mode.
    image_array : (X, Y, Z) ndarray of float32
        Normalized image on the training grid (world frame).
    device : str or torch.device, default: "cpu"

    Returns
    -------
    scales : list of (n_s, 3) ndarray of float64
        World particles (mm) of every scale, coarse to fine, model order.
    probability : (X, Y, Z) ndarray of float32 or None
        Foreground probability on the grid, ``None`` without a segmentation decoder.
    """
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(image_array, dtype=np.float32))
    with torch.no_grad():
        output = model(tensor[None, None].to(device), active_scales=None)
    scales = [p[0].detach().float().cpu().numpy().astype(np.float64) for p in output.particles]
    probability = None
    if output.segmentation_logits is not None:
        probability = torch.sigmoid(output.segmentation_logits[0, 0].float()).cpu().numpy()
    return scales, probability


def write_segmentation(probability: np.ndarray, grid, image_path: str | os.PathLike,
                       image_to_world: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a grid-frame probability as a label map on the subject's own image grid.

    Each voxel of the subject's image at physical point ``p`` takes the (linearly
    interpolated) probability at world point ``image_to_world @ p``, thresholded at 0.5.

    Parameters
    ----------
    probability : (X, Y, Z) ndarray
        Foreground probability on ``grid`` (world frame).
    grid : Grid
    image_path : path-like
        The subject's image; only its geometry (size, origin, spacing, direction) is read.
    image_to_world : (4, 4) ndarray
        Forward transform from the image's physical points (mm) to the world frame.
    path : path-like
        Output ``.nrrd`` (uint8 {0, 1}), written atomically.
    """
    import SimpleITK as sitk

    from .images import array_to_image, world_affine_transform
    from .validation import read_image_info

    info = read_image_info(Path(image_path))
    world_image = array_to_image(np.asarray(probability, dtype=np.float32), grid)
    # Resample maps output (image) points to input (world) points: image_to_world itself.
    to_world = world_affine_transform(np.linalg.inv(np.asarray(image_to_world, dtype=float)))
    resampled = sitk.Resample(world_image, list(info["size"]), to_world, sitk.sitkLinear,
                              list(info["origin"]), list(info["spacing"]),
                              list(info["direction"]), 0.0, sitk.sitkFloat32)
    labels = sitk.Cast(resampled >= 0.5, sitk.sitkUInt8)
    with atomic_path(path) as tmp:
        sitk.WriteImage(labels, str(tmp), True)
    return Path(path)


def _write_manifest(out_dir: Path, entries: dict, meta_prediction: dict, *, checkpoint: Path,
                    project_path: Path) -> Path:
    content = {
        "checkpoint": str(checkpoint),
        "project": str(project_path),
        "frame": "world",
        "units": "mm",
        "scale_sizes": [int(n) for n in meta_prediction["scale_sizes"]],
        "particle_order": [int(i) for i in np.asarray(meta_prediction["particle_order"])],
        "subjects": entries,
    }
    return atomic_write_text(out_dir / PREDICTIONS_JSON, json.dumps(content, indent=1) + "\n")


def predict(project, run_dir: str | os.PathLike, *, subjects: Sequence[str] | None = None,
            images: Sequence[str | os.PathLike] | None = None,
            out_dir: str | os.PathLike | None = None, studio: bool = False,
            write_project: bool = True, device: str = "cpu", seed: int = 0,
            progress: bool = True) -> PredictResult:
    """Predict every scale for project subjects and new images; write files and a project.

    Parameters
    ----------
    project : Project or path-like
        The ShapeWorks project (only read).
    run_dir : path-like
        Training run folder (its ``best.pt``, else ``last.pt``) or a checkpoint file.
    subjects : sequence of str, optional
        Split names and/or subject names (see :func:`select_targets`); default ``test``
        when ``images`` is empty.
    images : sequence of path-like, optional
        New images not in the project (no ground truth).
    out_dir : path-like, optional
        Predictions folder; default ``<run_dir>/predictions``.
    studio : bool, default: False
        Also write the DeepSSM-tab layout under ``<project folder>/deepssm``.
    write_project : bool, default: True
        Write ``<name>_predicted.swproj`` beside the project.
    device : {"cpu", "cuda", "auto"}, default: "cpu"
    seed : int, default: 0
        Seed of the registration metric sampling.
    progress : bool, default: True

    Returns
    -------
    PredictResult

    Raises
    ------
    ProjectValidationError
        Unknown subjects, missing or unreadable images (all at once, before any work).
    ParticleCountError
        The model's particle count differs from the project's.
    FileNotFoundError
        No checkpoint in ``run_dir``.
    """
    from tqdm.auto import tqdm

    from .checkpoints import load_model
    from .dataset import prepare_prediction_image
    from .grid import Grid
    from .particles import write_particles
    from .project import Project
    from .training import select_device
    from .writeback import (PredictedShape, write_deepssm_layout,
                            write_predicted_project)

    if not hasattr(project, "subjects"):
        project = Project.load(project)
    run_dir = Path(os.path.abspath(os.fspath(run_dir)))
    checkpoint = find_checkpoint(run_dir)

    # Check everything before any long work
    targets = select_targets(project, subjects, images)
    torch_device = select_device(device)
    model, meta = load_model(checkpoint, device=torch_device)
    info = meta["prediction"]
    for key in ("grid", "normalization", "scale_sizes", "particle_order", "reference"):
        if key not in info:
            raise ValueError(f"checkpoint {checkpoint} lacks prediction data {key!r}; it was "
                             "not written by shapeworks-progressive train")
    order = np.asarray(info["particle_order"], dtype=np.int64)
    scale_sizes = [int(n) for n in info["scale_sizes"]]
    check_particle_count(project, len(order), checkpoint)
    grid = Grid.from_dict(info["grid"])
    if out_dir is None:
        base = checkpoint.parent if run_dir.is_file() else run_dir
        out_dir = base / "predictions"
    out_dir = Path(os.path.abspath(os.fspath(out_dir)))
    out_dir.mkdir(parents=True, exist_ok=True)
    logger.info("predicting %d image(s) with %s (%s, scales %s) into %s", len(targets),
                checkpoint, meta["model_class"], scale_sizes, out_dir)

    predictions: list = []
    entries: dict = {}
    seconds: dict = {}
    bar = tqdm(targets, desc="predicting", unit="image", disable=not progress)
    for target in bar:
        started = time.perf_counter()

        # Register to the reference and predict
        array, registration = prepare_prediction_image(target.image, info["reference"], grid,
                                                       info["normalization"], seed=seed)
        registered = time.perf_counter()
        image_to_world = np.asarray(registration.image_to_world, dtype=float)
        scales, probability = predict_array(model, array, device=torch_device)
        inferred = time.perf_counter()

        # Files of the subject
        folder = out_dir / target.name
        particles_world = np.empty((len(order), 3), dtype=float)
        particles_world[order] = scales[-1]
        particles_local = _to_local(particles_world, image_to_world)
        write_particles(folder / "world.particles", particles_world)
        write_particles(folder / "local.particles", particles_local)
        scale_files = {}
        for size, values in zip(scale_sizes, scales):
            scale_files[str(size)] = f"scale{size}_world.particles"
            write_particles(folder / scale_files[str(size)], values)
        segmentation = None
        if probability is not None:
            segmentation = write_segmentation(probability, grid, target.image, image_to_world,
                                              folder / "segmentation.nrrd")
        elapsed = time.perf_counter() - started
        seconds[target.name] = elapsed
        if not registration.converged:
            logger.warning("%s: registration to the reference did not converge (%s); the "
                           "prediction may be off", target.name, registration.message)
        logger.info("%s: predicted %s particles in %.2f s (registration %.2f s, network "
                    "%.2f s)", target.name, "/".join(map(str, scale_sizes)), elapsed,
                    registered - started, inferred - registered)
        entries[target.name] = {
            "row_index": target.row_index,
            "image": str(target.image),
            "image_to_world": [float(v) for v in image_to_world.ravel()],
            "scale_sizes": scale_sizes,
            "world": "world.particles",
            "local": "local.particles",
            "scales": scale_files,
            "segmentation": "segmentation.nrrd" if segmentation is not None else None,
            "registration": registration.to_dict(),
            "seconds": round(elapsed, 4),
            "registration_seconds": round(registered - started, 4),
            "network_seconds": round(inferred - registered, 4),
        }
        predictions.append(PredictedShape(
            name=target.name, particles_world=particles_world, image_to_world=image_to_world,
            row_index=target.row_index, image=target.image,
            scales={size: values for size, values in zip(scale_sizes, scales)},
            particle_order=order, segmentation=segmentation, folder=folder))
    bar.close()
    manifest_path = _write_manifest(out_dir, entries, info, checkpoint=checkpoint,
                                    project_path=project.path)
    result = PredictResult(out_dir=out_dir, manifest_path=manifest_path,
                           predictions=predictions, seconds=seconds, checkpoint=checkpoint)
    if seconds:
        logger.info("mean %.2f s per image (registration included); wrote %s",
                    float(np.mean(list(seconds.values()))), manifest_path)

    # Write back
    if write_project:
        result.project_path = write_predicted_project(project, predictions)
    if studio:
        result.studio_files = write_deepssm_layout(project, predictions,
                                                   meshes=_warped_meshes(project, predictions))
    return result


def _to_local(particles_world: np.ndarray, image_to_world: np.ndarray) -> np.ndarray:
    from .transforms import apply_transform

    return apply_transform(particles_world, image_to_world, inverse=True)


def _warped_meshes(project, predictions: list) -> dict:
    """World meshes of the predictions (template warp); empty when no template exists."""
    from .errors import ShapeWorksInputError
    from .mesh_warp import MeshWarper

    try:
        warper = MeshWarper.from_project(project)
        return {p.name: warper.build_mesh(p.particles_world) for p in predictions
                if p.row_index is not None}
    except (ShapeWorksInputError, FileNotFoundError) as err:
        logger.warning("DeepSSM layout without meshes: %s", err)
        return {}
