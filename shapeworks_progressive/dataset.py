"""Prepared training data: images, segmentations and particles on one world grid, cached.

:func:`prepare_dataset` turns a ShapeWorks project into arrays the trainer uses:

- **Grid** (:class:`~shapeworks_progressive.grid.Grid`): the box around all *training*
  world particles, padded by ``padding_mm``, at ``spacing`` (mm), identity direction.
- **Training images** are brought into the frame of their world particles with the
  subject's ``procrustes @ alignment`` (as ShapeWorks DeepSSM does; the image, the
  shape and the groomed file share one physical frame) and resampled on the grid
  (linear).
- **Validation and test images** are registered to the reference image (the groom
  ``alignment_reference_chosen`` subject, else the first training subject, in the world
  frame on the grid); their own segmentation, particles and transforms are never used for
  this. The transform found is stored per subject (``image_to_world``), exactly as a
  new unsegmented image will arrive at prediction time (:func:`prepare_prediction_image`).
  Their particle targets are placed where their anatomy lies in the registered image:
  the subject's particles in its own image frame (``inv(procrustes @ alignment) @
  world``) mapped by the registration. So validation and test errors measure the shape
  predicted in the subject's own image, not the registration's misalignment, and the
  particle and segmentation targets agree.
  Stages: translation then rigid, plus similarity when the project's Procrustes scales
  (``procrustes_scaling``), because otherwise the world frame keeps each shape's size and
  a similarity would erase it.
- **Intensities** are normalized (:class:`~shapeworks_progressive.normalization.
  IntensityNormalization`), fitted on the training images only.
- **Segmentation targets** are the subject's shape on the grid under the same transform as
  its image: a segmentation image (labels > 0.5, linear interpolation of the binary mask,
  thresholded at 0.5) or a closed mesh (voxelized with VTK's polydata stencil).
- **Scales and particle order** come from :mod:`~shapeworks_progressive.scales`.

The result is cached in ``cache_dir`` as ``prepared_<settings>.npz`` (arrays) plus
``prepared_<settings>.json`` (manifest), keyed by a hash of the inputs (paths, sizes and
modification times of every image, shape and particle file; transforms; settings). A
second call with unchanged inputs loads the cache; any change rebuilds it. No pickles.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ImageError, ProjectValidationError
from .fileio import atomic_path, atomic_write_text
from .grid import Grid
from .meshes import is_mesh_path
from .normalization import IntensityNormalization
from .registration import STAGES, RegistrationResult, register_to_reference
from .scales import choose_particle_order, validate_scale_sizes
from .transforms import apply_transform

__all__ = [
    "SPLITS",
    "SplitData",
    "PreparedData",
    "prepare_dataset",
    "image_problem",
    "prepare_prediction_image",
    "reference_images",
    "registration_particle_error",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CACHE_VERSION = 2


@dataclass
class SplitData:
    """The prepared subjects of one split (``S`` subjects, ``N`` particles).

    Attributes
    ----------
    names : list of str
    subject_indices : list of int
        Row index of each subject in the project.
    images : (S, X, Y, Z) ndarray of float32
        Normalized images on the grid (world frame).
    segmentations : (S, X, Y, Z) ndarray of uint8
        The subject's shape on the grid, {0, 1}.
    particles_world : (S, N, 3) ndarray of float32
        World particles (mm), model order.
    image_to_world : (S, 4, 4) ndarray of float64
        Forward transforms used: training ``procrustes @ alignment``; validation and test
        from registration to the reference image.
    registrations : list of dict
        Per subject :meth:`RegistrationResult.to_dict` (empty dict for training subjects).
    """

    names: list
    subject_indices: list
    images: np.ndarray
    segmentations: np.ndarray
    particles_world: np.ndarray
    image_to_world: np.ndarray
    registrations: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class PreparedData:
    """Everything training and prediction need from the project (see :func:`prepare_dataset`).

    Attributes
    ----------
    grid : Grid
    normalization : IntensityNormalization
    scale_sizes : list of int
    particle_order : (N,) ndarray of int64
        Model row ``r`` is row ``particle_order[r]`` of the project's particle files.
    template_world : (N, 3) ndarray of float32
        Mean training world particles (mm), model order.
    reference : dict
        ``image`` (X, Y, Z) float32 normalized reference image on the grid, ``mask`` (X, Y,
        Z) uint8 where the reference subject's image lies, ``grid`` (dict), ``stages``
        (registration stages), ``subject`` and ``subject_index``.
    splits : dict of str to SplitData
    manifest : dict
        The JSON-able description (also on disk beside the cache).
    cache_path : Path or None
    """

    grid: Grid
    normalization: IntensityNormalization
    scale_sizes: list
    particle_order: np.ndarray
    template_world: np.ndarray
    reference: dict
    splits: dict
    manifest: dict = field(default_factory=dict)
    cache_path: Path | None = None

    def split(self, name: str) -> SplitData:
        """The prepared subjects of ``train``, ``val`` or ``test``."""
        if name not in self.splits:
            raise KeyError(f"unknown split {name!r}; choose one of {sorted(self.splits)}")
        return self.splits[name]

    def to_dict(self) -> dict:
        """JSON-able description: grid, normalization, scales, order, template, reference.

        The reference image and mask stay out (they are arrays); see ``reference``.
        """
        return {
            "grid": self.grid.to_dict(),
            "normalization": self.normalization.to_dict(),
            "scale_sizes": [int(n) for n in self.scale_sizes],
            "particle_order": [int(i) for i in self.particle_order],
            "template_world": np.asarray(self.template_world, dtype=float).tolist(),
            "reference": {k: v for k, v in self.reference.items()
                          if k not in ("image", "mask")},
            "splits": {name: {"names": list(s.names),
                              "subject_indices": [int(i) for i in s.subject_indices],
                              "registrations": list(s.registrations)}
                       for name, s in self.splits.items()},
        }


# ------------------------------------------------------------------------- checks


def _shape_path(subject) -> Path | None:
    """The subject's shape (original first, else groomed) for domain 0."""
    for paths in (subject.shapes, subject.groomed):
        if paths and paths[0] is not None:
            return Path(paths[0])
    return None


def _collect_subjects(project) -> dict:
    """{split: [(row index, subject), ...]} for the non-excluded subjects."""
    out = {name: [] for name in SPLITS}
    for index, subject in enumerate(project.subjects):
        split = (subject.split or "").lower()
        if split in out and not subject.excluded:
            out[split].append((index, subject))
    return out


def image_problem(subject, where: str) -> str | None:
    """What is wrong with a subject's image entry (none, or a missing file), or None.

    ``where`` names the subject in the message, e.g. ``"subject 'a' (row 0, train)"``.
    """
    if subject.image is None:
        return f"{where} has no image column (image_<name>)"
    if not Path(subject.image).is_file():
        return f"{where}: image file not found: {subject.image}"
    return None


def _check_inputs(project, subjects: dict) -> dict:
    """Check files and particle counts of every subject; all problems at once.

    Returns ``{row index: (N, 3) world particles}``.
    """
    from .particles import read_particles

    problems = []
    if len(project.domains) != 1:
        problems.append(f"project {project.path} has {len(project.domains)} domains "
                        f"{project.domains}; Progressive DeepSSM supports one domain")
    if not subjects["train"]:
        problems.append(f"project {project.path} has no subject with split 'train' "
                        "(set the 'split' column to train/val/test)")
    particles = {}
    for split, members in subjects.items():
        for index, subject in members:
            where = f"subject {subject.name!r} (row {index}, {split})"
            problem = image_problem(subject, where)
            if problem is not None:
                problems.append(problem)
            shape = _shape_path(subject)
            if shape is None:
                problems.append(f"{where} has no shape or groomed file for the "
                                "segmentation target")
            elif not shape.is_file():
                problems.append(f"{where}: shape file not found: {shape}")
            world = subject.world_particles[0] if subject.world_particles else None
            if world is None:
                problems.append(f"{where} has no world particle file")
                continue
            try:
                points = read_particles(world)
            except (FileNotFoundError, ValueError) as err:
                problems.append(f"{where}: {err}")
                continue
            if not np.all(np.isfinite(points)):
                bad = int(np.count_nonzero(~np.all(np.isfinite(points), axis=1)))
                problems.append(f"{where}: world particle file {world} holds NaN or Inf "
                                f"({bad} of {len(points)} particles)")
                continue
            particles[index] = points
    counts = {index: len(p) for index, p in particles.items()}
    if len(set(counts.values())) > 1:
        values, frequency = np.unique(list(counts.values()), return_counts=True)
        expected = int(values[np.argmax(frequency)])
        for split, members in subjects.items():
            for index, subject in members:
                if index in counts and counts[index] != expected:
                    problems.append(
                        f"subject {subject.name!r} (row {index}, {split}): world particle "
                        f"file {subject.world_particles[0]} has {counts[index]} particles; "
                        f"the others have {expected}")
    if problems:
        raise ProjectValidationError(problems)
    return particles


# ------------------------------------------------------------------------- cache key


def _file_signature(path) -> list:
    if path is None:
        return [None]
    path = Path(path)
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def _settings(spacing, padding_mm, scales, seed, stages, project) -> dict:
    return {"version": CACHE_VERSION, "project": str(project.path),
            "spacing": [float(s) for s in np.broadcast_to(np.asarray(spacing, float), (3,))],
            "padding_mm": float(padding_mm),
            "scales": None if scales is None else [str(s) for s in scales],
            "seed": int(seed), "stages": list(stages)}


def _input_key(settings: dict, subjects: dict, reference_index: int) -> str:
    content = {"settings": settings, "reference_index": reference_index, "subjects": []}
    for split, members in subjects.items():
        for index, subject in members:
            content["subjects"].append([
                split, index, subject.name, _file_signature(subject.image),
                _file_signature(_shape_path(subject)),
                _file_signature(subject.world_particles[0]),
                np.round(subject.world_transform(0), 9).ravel().tolist()])
    text = json.dumps(content, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------- pieces


def _segmentation_on_grid(shape_path: Path, image_to_world: np.ndarray, grid: Grid
                          ) -> np.ndarray:
    """(X, Y, Z) uint8 shape mask on the grid; the shape lives in the image's frame."""
    import SimpleITK as sitk

    from .images import read_image, resample_to_grid, voxelize_mesh

    if is_mesh_path(shape_path):
        from .meshes import read_mesh

        return voxelize_mesh(read_mesh(shape_path), grid, image_to_world)
    labels = read_image(shape_path)
    mask = sitk.Cast(labels > 0.5, sitk.sitkFloat32)
    fraction = resample_to_grid(mask, image_to_world, grid, "linear", default_value=0.0)
    return (fraction >= 0.5).astype(np.uint8)


def _footprint_on_grid(image, image_to_world: np.ndarray, grid: Grid) -> np.ndarray:
    """(X, Y, Z) uint8: 1 where the image holds data on the grid."""
    import SimpleITK as sitk

    from .images import resample_to_grid

    ones = sitk.Image(image.GetSize(), sitk.sitkFloat32) + 1.0
    ones.CopyInformation(image)
    return (resample_to_grid(ones, image_to_world, grid, "nearest", default_value=0.0)
            > 0.5).astype(np.uint8)


def reference_images(reference: dict, grid: Grid | dict | None = None):
    """The reference image and its mask as world-frame SimpleITK images.

    ``reference`` is :attr:`PreparedData.reference` (arrays may be lists or tensors).
    """
    import SimpleITK as sitk

    from .images import array_to_image

    if grid is None:
        grid = reference["grid"]
    grid = grid if isinstance(grid, Grid) else Grid.from_dict(grid)
    image = array_to_image(np.asarray(reference["image"], dtype=np.float32), grid)
    mask = None
    if reference.get("mask") is not None:
        mask = sitk.Cast(array_to_image(np.asarray(reference["mask"], dtype=np.float32),
                                        grid) > 0.5, sitk.sitkUInt8)
    return image, mask


def _register_and_resample(image, reference_image, reference_mask, grid: Grid,
                           normalization: IntensityNormalization, stages, seed: int
                           ) -> tuple[np.ndarray, np.ndarray, RegistrationResult]:
    from .images import resample_to_grid

    result = register_to_reference(image, reference_image, reference_mask=reference_mask,
                                   stages=stages, seed=seed)
    raw = resample_to_grid(image, result.image_to_world, grid, "linear")
    return raw, normalization.apply(raw), result


def prepare_prediction_image(image_path, reference: dict, grid: Grid | dict,
                             normalization: IntensityNormalization | dict, *, seed: int = 0
                             ) -> tuple[np.ndarray, RegistrationResult]:
    """Bring a new, unsegmented image onto the training grid, as val/test images were.

    Parameters
    ----------
    image_path : str or PathLike
        Any 3D image SimpleITK reads.
    reference : dict
        :attr:`PreparedData.reference` (e.g. from a checkpoint): ``image``, ``mask``,
        ``grid`` and ``stages``.
    grid : Grid or dict
    normalization : IntensityNormalization or dict

    Returns
    -------
    array : (X, Y, Z) ndarray of float32
        Normalized image on the grid (world frame).
    result : RegistrationResult
        ``result.image_to_world`` maps the image's physical points to the world frame;
        check ``result.converged``.
    """
    from .images import read_image

    grid = grid if isinstance(grid, Grid) else Grid.from_dict(grid)
    if not isinstance(normalization, IntensityNormalization):
        normalization = IntensityNormalization.from_dict(normalization)
    image = read_image(image_path)
    reference_image, reference_mask = reference_images(reference, grid)
    stages = tuple(reference.get("stages") or STAGES)
    _, array, result = _register_and_resample(image, reference_image, reference_mask, grid,
                                              normalization, stages, seed)
    if not result.converged:
        logger.warning("registration of %s to the reference did not converge: %s",
                       image_path, result.message)
    return array, result


def registration_particle_error(particles_world: np.ndarray, true_image_to_world: np.ndarray,
                                image_to_world: np.ndarray) -> float:
    """Mean distance (mm) between particles placed by two image-to-world transforms.

    The true world particles are taken back to the image frame with the true transform,
    then forward with ``image_to_world`` (e.g. from registration).
    """
    particles_image = apply_transform(particles_world, true_image_to_world, inverse=True)
    moved = apply_transform(particles_image, image_to_world)
    return float(np.linalg.norm(moved - np.asarray(particles_world), axis=1).mean())


# ------------------------------------------------------------------------- cache I/O


def _cache_paths(cache_dir: Path, settings: dict) -> tuple[Path, Path]:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir / f"prepared_{digest}.npz", cache_dir / f"prepared_{digest}.json"


def _save_cache(data: PreparedData, npz_path: Path, json_path: Path, key: str) -> None:
    arrays = {"key": np.asarray(key), "reference_image": data.reference["image"],
              "reference_mask": data.reference["mask"],
              "particle_order": data.particle_order, "template_world": data.template_world}
    for name, split in data.splits.items():
        for attr in ("images", "segmentations", "particles_world", "image_to_world"):
            arrays[f"{name}_{attr}"] = getattr(split, attr)
    with atomic_path(npz_path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    manifest = dict(data.manifest, key=key, arrays=npz_path.name)
    atomic_write_text(json_path, json.dumps(manifest, indent=1))


def _load_cache(npz_path: Path, json_path: Path, key: str) -> PreparedData | None:
    if not (npz_path.is_file() and json_path.is_file()):
        return None
    try:
        manifest = json.loads(json_path.read_text(encoding="utf-8"))
        if manifest.get("key") != key:
            return None
        with np.load(npz_path, allow_pickle=False) as arrays:
            if str(arrays["key"]) != key:
                return None
            loaded = {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError, KeyError) as err:
        logger.warning("ignoring unreadable cache %s: %s", npz_path, err)
        return None
    grid = Grid.from_dict(manifest["grid"])
    reference = dict(manifest["reference"], image=loaded["reference_image"],
                     mask=loaded["reference_mask"])
    splits = {}
    for name, info in manifest["splits"].items():
        splits[name] = SplitData(
            names=list(info["names"]), subject_indices=list(info["subject_indices"]),
            images=loaded[f"{name}_images"], segmentations=loaded[f"{name}_segmentations"],
            particles_world=loaded[f"{name}_particles_world"],
            image_to_world=loaded[f"{name}_image_to_world"],
            registrations=list(info["registrations"]))
    return PreparedData(grid=grid,
                        normalization=IntensityNormalization.from_dict(manifest["normalization"]),
                        scale_sizes=list(manifest["scale_sizes"]),
                        particle_order=loaded["particle_order"],
                        template_world=loaded["template_world"], reference=reference,
                        splits=splits, manifest=manifest, cache_path=npz_path)


# ------------------------------------------------------------------------- main


def _empty_split(grid: Grid, n_particles: int) -> SplitData:
    return SplitData([], [], np.zeros((0, *grid.size), np.float32),
                     np.zeros((0, *grid.size), np.uint8),
                     np.zeros((0, n_particles, 3), np.float32), np.zeros((0, 4, 4)), [])


def _registration_stages(project) -> tuple[str, ...]:
    scaling = str(project.parameters("optimize").get("procrustes_scaling", "")).strip().lower()
    if scaling in ("1", "true", "yes", "on"):
        return STAGES
    return ("translation", "rigid")


def prepare_dataset(project, cache_dir, *, spacing: float | Sequence[float] = (1.0, 1.0, 1.0),
                    padding_mm: float = 10.0, scales: Sequence | None = None, seed: int = 0,
                    progress: bool = True,
                    registration_stages: Sequence[str] | None = None) -> PreparedData:
    """Prepare (or load from cache) the images, targets and particles of a project.

    Parameters
    ----------
    project : Project or path
        A loaded :class:`~shapeworks_progressive.project.Project` or its file.
    cache_dir : path
        Folder for ``prepared_<settings>.npz`` and ``.json``; created if missing.
    spacing : float or (3,) sequence, default: (1, 1, 1)
        Grid voxel size (mm).
    padding_mm : float, default: 10.0
        Margin around the training world particles (mm).
    scales : sequence of int, optional
        Particles per scale, coarse to fine (:func:`~shapeworks_progressive.scales.
        validate_scale_sizes`); default four halvings ending at the particle count.
    seed : int, default: 0
        Seed of the registration metric sampling.
    progress : bool, default: True
        Show a progress bar.
    registration_stages : sequence of str, optional
        Stages for val/test registration; default translation + rigid, plus similarity
        when the project's ``procrustes_scaling`` is on.

    Returns
    -------
    PreparedData

    Raises
    ------
    ProjectValidationError
        Before any image work: missing images, shapes or particle files, empty or
        non-finite particle files, particle counts that differ, several domains, no
        training subject; every offending subject and file is named.
    ConfigError
        Invalid ``scales``.
    """
    from .project import Project

    if not hasattr(project, "subjects"):
        project = Project.load(project)
    cache_dir = Path(os.path.abspath(os.fspath(cache_dir)))
    stages = tuple(registration_stages) if registration_stages else _registration_stages(
        project)
    subjects = _collect_subjects(project)
    particles_by_row = _check_inputs(project, subjects)
    n_particles = len(next(iter(particles_by_row.values())))
    scale_sizes = validate_scale_sizes(scales, n_particles)

    # reference subject: groom's choice when it is a training subject
    train_rows = [index for index, _ in subjects["train"]]
    reference_row = project.reference_index
    if reference_row not in train_rows:
        if reference_row is not None:
            logger.warning("groom reference subject (row %d) is not a training subject; "
                           "using the first training subject as reference", reference_row)
        reference_row = train_rows[0]

    # cache
    settings = _settings(spacing, padding_mm, scales, seed, stages, project)
    key = _input_key(settings, subjects, reference_row)
    npz_path, json_path = _cache_paths(cache_dir, settings)
    cached = _load_cache(npz_path, json_path, key)
    if cached is not None:
        logger.info("loaded prepared data from %s", npz_path)
        return cached
    return _build(project, subjects, particles_by_row, scale_sizes, reference_row, stages,
                  spacing=spacing, padding_mm=padding_mm, seed=seed, progress=progress,
                  key=key, settings=settings, paths=(npz_path, json_path))


def _build(project, subjects, particles_by_row, scale_sizes, reference_row, stages, *,
           spacing, padding_mm, seed, progress, key, settings, paths) -> PreparedData:
    from tqdm.auto import tqdm

    from .images import read_image, resample_to_grid

    started = time.perf_counter()
    train_rows = _rows_of(subjects, "train")
    train_particles = np.stack([particles_by_row[i] for i, _ in subjects["train"]])
    mean_shape = train_particles.mean(axis=0)
    order, nested, ratios = choose_particle_order(mean_shape, scale_sizes)
    grid = Grid.around_points(train_particles, spacing=spacing, padding_mm=padding_mm)
    logger.info("grid %s voxels at %s mm, origin %s", grid.size, grid.spacing, grid.origin)
    total = sum(len(m) for m in subjects.values())
    bar = tqdm(total=total, desc="preparing images", unit="subject", disable=not progress)

    # training subjects: procrustes @ alignment, raw intensities first
    raw_train, segs_train, transforms_train = [], [], []
    reference_raw = reference_mask = None
    for index, subject in subjects["train"]:
        transform = subject.world_transform(0)
        try:
            image = read_image(subject.image)
        except ImageError as err:
            raise ImageError(f"subject {subject.name!r} (row {index}): {err}") from err
        raw_train.append(resample_to_grid(image, transform, grid, "linear"))
        segs_train.append(_segmentation_on_grid(_shape_path(subject), transform, grid))
        transforms_train.append(transform)
        if index == reference_row:
            reference_raw = raw_train[-1]
            reference_mask = _footprint_on_grid(image, transform, grid)
        bar.update(1)
    normalization = IntensityNormalization.fit(raw_train)
    images_train = np.stack([normalization.apply(a) for a in raw_train])
    del raw_train

    def particles_of(rows):
        if not rows:
            return np.zeros((0, len(order), 3), np.float32)
        return np.stack([particles_by_row[i][order] for i in rows]).astype(np.float32)

    splits = {"train": SplitData(
        names=[s.name for _, s in subjects["train"]], subject_indices=train_rows,
        images=images_train, segmentations=np.stack(segs_train),
        particles_world=particles_of(train_rows), image_to_world=np.stack(transforms_train),
        registrations=[{} for _ in segs_train])}

    # reference in the world frame, normalized (registration's metric ignores the scale)
    reference_subject = project.subjects[reference_row]
    reference = {"image": normalization.apply(reference_raw), "mask": reference_mask,
                 "grid": grid.to_dict(), "stages": list(stages),
                 "subject": reference_subject.name, "subject_index": int(reference_row)}
    reference_image, reference_sitk_mask = reference_images(reference, grid)

    # validation and test subjects: registration to the reference only
    for split in ("val", "test"):
        members = subjects[split]
        if not members:
            splits[split] = _empty_split(grid, len(order))
            continue
        images, segs, transforms, results = [], [], [], []
        for index, subject in members:
            try:
                image = read_image(subject.image)
            except ImageError as err:
                raise ImageError(f"subject {subject.name!r} (row {index}): {err}") from err
            _, array, result = _register_and_resample(image, reference_image,
                                                      reference_sitk_mask, grid,
                                                      normalization, stages, seed)
            if not result.converged:
                logger.warning("subject %r (row %d): registration did not converge: %s",
                               subject.name, index, result.message)
            images.append(array)
            segs.append(_segmentation_on_grid(_shape_path(subject), result.image_to_world,
                                              grid))
            transforms.append(result.image_to_world)
            results.append(result.to_dict())
            bar.update(1)
        rows = _rows_of(subjects, split)
        # Targets where the anatomy lies in the registered image: the subject's particles in
        # its own image frame (inverse of procrustes @ alignment), then the registration.
        targets = [apply_transform(apply_transform(particles_by_row[index][order],
                                                   subject.world_transform(0), inverse=True),
                                   transform)
                   for (index, subject), transform in zip(members, transforms)]
        splits[split] = SplitData([s.name for _, s in members], rows, np.stack(images),
                                  np.stack(segs), np.stack(targets).astype(np.float32),
                                  np.stack(transforms), results)
    bar.close()

    data = PreparedData(grid=grid, normalization=normalization, scale_sizes=scale_sizes,
                        particle_order=order, template_world=mean_shape[order].astype(
                            np.float32), reference=reference, splits=splits)
    data.manifest = dict(data.to_dict(), settings=settings, nested_order=bool(nested),
                         coverage_ratios={str(k): v for k, v in ratios.items()},
                         seconds=round(time.perf_counter() - started, 2))
    npz_path, json_path = paths
    _save_cache(data, npz_path, json_path, key)
    data.cache_path = npz_path
    data.manifest["key"] = key
    logger.info("prepared %d subjects in %.1f s; cached in %s", sum(len(s) for s in
                splits.values()), time.perf_counter() - started, npz_path)
    return data


def _rows_of(subjects: dict, split: str) -> list[int]:
    """Row indices of the subjects of ``split`` (in project order)."""
    return [index for index, _ in subjects[split]]
