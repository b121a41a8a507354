"""PCA-space data augmentation: new training shapes, each with a matching image.

As in ShapeWorks' ``DataAugmentationUtils``, new shapes are sampled in the PCA space of
the training world particles and each is paired with an image made by warping a real
training image with a thin-plate spline (TPS) driven by the particles. Any model can
train on the result: it has the same fields as a training split (images on the common
grid, segmentations, world particles in model order).

Samplers, all in *whitened* PCA space (training scores divided by the mode std, so the
training shapes have zero mean and identity covariance):

``"gaussian"``
    One Gaussian with the mean and covariance of the whitened training scores.
``"mixture"``
    A Gaussian mixture (scikit-learn) whose component count is chosen by BIC, or given.
``"kde"``
    A Gaussian kernel density estimate: a random training shape plus isotropic noise with
    Silverman's bandwidth in whitened units. ShapeWorks used a squared Mahalanobis
    distance as the noise *std* in raw score units; this is the proper KDE sample.

Each generated shape is paired with the nearest real training shape in whitened PCA
space (its "base"). A TPS from the generated particles to the base particles
(``scipy.interpolate.RBFInterpolator(kernel="thin_plate_spline")`` on a subset of the
particles) gives, at every voxel of the common grid, where to read the base image;
SimpleITK's ``DisplacementFieldTransform`` and ``Resample`` do the warp (linear for the
image, nearest neighbour for the segmentation).

Reproducibility: sample ``i`` uses its own ``numpy.random.Generator`` spawned from the
base seed (``SeedSequence(seed, spawn_key=(i,))``) and the warp is deterministic, so the
result does not depend on the number of worker processes. Results are cached on disk
(one ``.npz`` per sample plus a JSON manifest) under a key hashed from every input; a
finished cache is reused and an interrupted one resumed.

Only the training split may feed augmentation: :func:`augment_training_split` raises
:class:`~shapeworks_progressive.errors.ShapeWorksInputError` for any other split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ShapeWorksInputError
from .fileio import atomic_path, atomic_write_text
from .grid import Grid
from .pca import ParticlePCA, fit_pca

__all__ = [
    "SAMPLERS",
    "AugmentationSettings",
    "AugmentedSet",
    "augment_training_split",
    "augment_prepared_data",
    "with_augmented",
    "settings_from_config",
    "augment_from_config",
    "check_sample_memory",
    "sample_whitened_scores",
    "nearest_shapes",
    "landmark_subset",
    "warp_to_shape",
]

logger = logging.getLogger(__name__)

SAMPLERS = ("gaussian", "mixture", "kde")

#: Bump when the generated data would change for the same inputs; part of the cache key.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class AugmentationSettings:
    """What to generate.

    Attributes
    ----------
    count : int
        Number of generated samples.
    sampler : {"gaussian", "mixture", "kde"}, default: "kde"
    seed : int, default: 0
        Base seed; sample ``i`` uses ``SeedSequence(seed, spawn_key=(i,))``.
    variance_fraction : float, default: 0.95
        PCA modes kept (fewest reaching this fraction of the variance).
    num_modes : int, optional
        Keep exactly this many modes instead (overrides ``variance_fraction``).
    mixture_components : int, default: 0
        Components of the ``"mixture"`` sampler; 0 chooses 1..8 by BIC.
    max_landmarks : int, default: 256
        Particles used as TPS landmarks (evenly strided over the particle order).
    field_stride : int, default: 2
        The TPS displacement is evaluated every ``field_stride`` voxels and interpolated
        linearly in between (TPS is smooth); 1 evaluates it at every voxel.
    """

    count: int
    sampler: str = "kde"
    seed: int = 0
    variance_fraction: float = 0.95
    num_modes: int | None = None
    mixture_components: int = 0
    max_landmarks: int = 256
    field_stride: int = 2

    def __post_init__(self):
        problems = []
        if self.sampler not in SAMPLERS:
            problems.append(f"sampler must be one of {list(SAMPLERS)}, got {self.sampler!r}")
        if int(self.count) < 1:
            problems.append(f"count must be >= 1, got {self.count!r}")
        if not 0.0 < float(self.variance_fraction) <= 1.0:
            problems.append(f"variance_fraction must be in (0, 1], got {self.variance_fraction!r}")
        if self.num_modes is not None and int(self.num_modes) < 1:
            problems.append(f"num_modes must be >= 1, got {self.num_modes!r}")
        if int(self.mixture_components) < 0:
            problems.append(f"mixture_components must be >= 0, got {self.mixture_components!r}")
        if int(self.max_landmarks) < 4:
            problems.append(f"max_landmarks must be >= 4, got {self.max_landmarks!r}")
        if int(self.field_stride) < 1:
            problems.append(f"field_stride must be >= 1, got {self.field_stride!r}")
        if problems:
            raise ShapeWorksInputError("invalid augmentation settings: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AugmentedSet:
    """Generated training samples, shaped like a training split.

    Attributes
    ----------
    names : list of str
        ``"augmented_00000"`` ...
    base_names : list of str
        Name of the real training subject whose image was warped for each sample.
    base_indices : (C,) int64 ndarray
        Row of that subject in the training split.
    scores_whitened : (C, K) ndarray
        Sampled whitened PCA scores.
    particles_world : (C, N, 3) float32 ndarray
        Generated world particles (mm), model order; in the PCA span.
    images : (C, X, Y, Z) float32 ndarray
        Warped (already normalized) images on the common grid.
    segmentations : (C, X, Y, Z) uint8 ndarray or None
        Warped segmentations, when the training split has them.
    pca : ParticlePCA
        The PCA of the training split the samples were drawn from.
    manifest : dict
        The JSON manifest of the cache (settings, key, inputs).
    """

    names: list[str]
    base_names: list[str]
    base_indices: np.ndarray
    scores_whitened: np.ndarray
    particles_world: np.ndarray
    images: np.ndarray
    segmentations: np.ndarray | None
    pca: ParticlePCA
    manifest: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)


# Sampling --------------------------------------------------------------------------------
def _sample_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(index),)))


def kde_bandwidth(num_shapes: int, num_dims: int) -> float:
    """Silverman's rule of thumb for a Gaussian KDE in whitened (unit-variance) units."""
    return float((4.0 / (num_shapes * (num_dims + 2))) ** (1.0 / (num_dims + 4)))


def _fit_mixture(scores_whitened: np.ndarray, components: int, seed: int):
    from sklearn.mixture import GaussianMixture

    num_shapes = len(scores_whitened)
    candidates = [components] if components else list(range(1, min(8, num_shapes - 1) + 1))
    best, best_bic = None, np.inf
    for count in candidates:
        mixture = GaussianMixture(count, covariance_type="full", reg_covar=1e-3,
                                  random_state=int(seed), n_init=1)
        mixture.fit(scores_whitened)
        bic = mixture.bic(scores_whitened)
        if bic < best_bic:
            best, best_bic = mixture, bic
    logger.info("mixture sampler: %d component(s) (BIC %.1f)", best.n_components, best_bic)
    return best


def sample_whitened_scores(scores_whitened: np.ndarray, sampler: str, count: int, *,
                           seed: int = 0, mixture_components: int = 0) -> np.ndarray:
    """Draw new whitened PCA score vectors.

    Parameters
    ----------
    scores_whitened : (M, K) ndarray
        Whitened scores of the real training shapes.
    sampler : {"gaussian", "mixture", "kde"}
    count : int
    seed : int, default: 0
        Sample ``i`` uses its own generator ``SeedSequence(seed, spawn_key=(i,))``, so
        sample ``i`` is the same whatever ``count`` is.
    mixture_components : int, default: 0
        Mixture components; 0 chooses by BIC.

    Returns
    -------
    (count, K) ndarray
    """
    scores_whitened = np.asarray(scores_whitened, dtype=np.float64)
    num_shapes, num_dims = scores_whitened.shape
    if num_shapes < 2:
        raise ShapeWorksInputError(f"sampling needs at least 2 training shapes, got {num_shapes}")
    samples = np.empty((count, num_dims))
    if sampler == "gaussian":
        mean = scores_whitened.mean(axis=0)
        cov = np.atleast_2d(np.cov(scores_whitened, rowvar=False))
        factor = _psd_factor(cov)
        for i in range(count):
            samples[i] = mean + factor @ _sample_rng(seed, i).standard_normal(num_dims)
    elif sampler == "mixture":
        mixture = _fit_mixture(scores_whitened, int(mixture_components), seed)
        factors = [_psd_factor(np.atleast_2d(c)) for c in mixture.covariances_]
        for i in range(count):
            rng = _sample_rng(seed, i)
            component = int(rng.choice(len(mixture.weights_), p=mixture.weights_))
            samples[i] = (mixture.means_[component]
                          + factors[component] @ rng.standard_normal(num_dims))
    elif sampler == "kde":
        bandwidth = kde_bandwidth(num_shapes, num_dims)
        logger.info("KDE sampler: bandwidth %.3f (whitened units)", bandwidth)
        for i in range(count):
            rng = _sample_rng(seed, i)
            centre = scores_whitened[int(rng.integers(num_shapes))]
            samples[i] = centre + bandwidth * rng.standard_normal(num_dims)
    else:
        raise ShapeWorksInputError(f"unknown sampler {sampler!r}; use one of {list(SAMPLERS)}")
    return samples


def _psd_factor(cov: np.ndarray) -> np.ndarray:
    """A matrix ``F`` with ``F @ F.T == cov`` for a symmetric positive semi-definite cov."""
    values, vectors = np.linalg.eigh((cov + cov.T) / 2.0)
    return vectors * np.sqrt(np.clip(values, 0.0, None))


def nearest_shapes(samples_whitened: np.ndarray, scores_whitened: np.ndarray) -> np.ndarray:
    """Index of the nearest training shape (Euclidean in whitened space = Mahalanobis).

    Parameters
    ----------
    samples_whitened : (C, K) ndarray
    scores_whitened : (M, K) ndarray

    Returns
    -------
    (C,) int64 ndarray
    """
    from scipy.spatial import cKDTree

    _, index = cKDTree(np.asarray(scores_whitened)).query(np.asarray(samples_whitened))
    return np.asarray(index, dtype=np.int64)


# Thin-plate-spline warp --------------------------------------------------------------
def landmark_subset(num_particles: int, max_landmarks: int) -> np.ndarray:
    """Evenly strided particle indices, at most ``max_landmarks`` of them, (L,) int64."""
    if num_particles <= max_landmarks:
        return np.arange(num_particles, dtype=np.int64)
    return np.unique(np.linspace(0, num_particles - 1, max_landmarks).round().astype(np.int64))


def _unique_rows(points: np.ndarray, tolerance_mm: float = 1e-6) -> np.ndarray:
    """Indices of the first occurrence of each distinct point (TPS needs distinct nodes)."""
    keys = np.round(points / tolerance_mm).astype(np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    return np.sort(first)


def warp_to_shape(image: np.ndarray, grid: Grid, particles_from_world: np.ndarray,
                  particles_to_world: np.ndarray, *, segmentation: np.ndarray | None = None,
                  max_landmarks: int = 256, field_stride: int = 2,
                  background: float | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Warp an image so that the anatomy at ``particles_from`` moves to ``particles_to``.

    Parameters
    ----------
    image : (X, Y, Z) ndarray
        Image on ``grid`` (world frame).
    grid : Grid
        The common grid; the output is on the same grid.
    particles_from_world : (N, 3) ndarray
        Particles of the shape in ``image`` (world mm).
    particles_to_world : (N, 3) ndarray
        Corresponding particles of the wanted shape (world mm).
    segmentation : (X, Y, Z) ndarray, optional
        Warped with nearest-neighbour interpolation (background 0).
    max_landmarks : int, default: 256
        TPS landmarks, evenly strided over the particles.
    field_stride : int, default: 2
        Voxel stride at which the TPS displacement is evaluated (linear in between).
    background : float, optional
        Value outside the source image; default its minimum.

    Returns
    -------
    image : (X, Y, Z) float32 ndarray
    segmentation : (X, Y, Z) uint8 ndarray or None
    """
    import SimpleITK as sitk
    from scipy.interpolate import RBFInterpolator

    from .images import array_to_image, image_to_array

    source = np.asarray(particles_from_world, dtype=np.float64)
    target = np.asarray(particles_to_world, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 3:
        raise ShapeWorksInputError(
            f"particle sets must both be (N, 3); got {source.shape} and {target.shape}")
    landmarks = landmark_subset(len(source), max_landmarks)
    landmarks = landmarks[_unique_rows(target[landmarks])]

    # Displacement, at each output point x, to the source point to read: TPS fitted on
    # target landmarks -> (source - target), so that x = target_j reads source_j.
    tps = RBFInterpolator(target[landmarks], source[landmarks] - target[landmarks],
                          kernel="thin_plate_spline", degree=1)
    size = np.asarray(grid.size)
    stride = int(field_stride)
    field_size = (size - 1 + stride - 1) // stride + 1  # covers the last voxel
    axes = [grid.origin[a] + np.arange(field_size[a]) * stride * grid.spacing[a]
            for a in range(3)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    displacement = tps(points).reshape(*field_size, 3)

    field_image = sitk.GetImageFromArray(
        np.ascontiguousarray(displacement.transpose(2, 1, 0, 3)), isVector=True)
    field_image = sitk.Cast(field_image, sitk.sitkVectorFloat64)
    field_image.SetOrigin(list(grid.origin))
    field_image.SetSpacing([s * stride for s in grid.spacing])
    transform = sitk.DisplacementFieldTransform(field_image)

    image = np.asarray(image, dtype=np.float32)
    reference = array_to_image(image, grid)
    if background is None:
        background = float(image.min())
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(reference)
    resampler.SetTransform(transform)
    resampler.SetNumberOfThreads(1)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(float(background))
    warped = image_to_array(resampler.Execute(reference))

    warped_segmentation = None
    if segmentation is not None:
        resampler.SetInterpolator(sitk.sitkNearestNeighbor)
        resampler.SetDefaultPixelValue(0.0)
        seg_image = array_to_image(np.asarray(segmentation, dtype=np.float32), grid)
        warped_segmentation = (image_to_array(resampler.Execute(seg_image)) > 0.5).astype(
            np.uint8)
    return warped, warped_segmentation


# Driver ----------------------------------------------------------------------------------
def _require_train(split: Any) -> None:
    """Raise unless ``split`` is a training split.

    A split that names itself (a ``split`` attribute) must say ``"train"``. A
    :class:`~shapeworks_progressive.dataset.SplitData` without a name is recognised by its
    registration records: validation and test subjects are registered to the reference
    image (non-empty records), training subjects are not (empty records).
    """
    label = getattr(split, "split", None)
    if isinstance(label, str):
        if label != "train":
            raise ShapeWorksInputError(
                f"augmentation takes the training split only; got the {label!r} split "
                f"(validation and test subjects must never feed augmentation)")
        return
    records = getattr(split, "registrations", None)
    if records is None:
        raise ShapeWorksInputError(
            "augmentation takes the training split only, and this split does not say which "
            "split it is; pass data.split('train')")
    registered = [name for name, record in zip(split.names, records) if record]
    if registered:
        raise ShapeWorksInputError(
            f"augmentation takes the training split only; subjects {registered[:5]} were "
            f"registered to the reference image, so they are validation or test subjects "
            f"(validation and test subjects must never feed augmentation)")


def _hash_inputs(train: Any, grid: Grid, settings: AugmentationSettings) -> str:
    digest = hashlib.sha256()
    spec = {"version": FORMAT_VERSION, "grid": grid.to_dict(), "names": list(train.names),
            "settings": settings.to_dict()}
    digest.update(json.dumps(spec, sort_keys=True).encode())
    for array in (train.particles_world, train.images, train.segmentations):
        if array is None:
            digest.update(b"none")
            continue
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _sample_path(folder: Path, index: int) -> Path:
    return folder / "samples" / f"augmented_{index:05d}.npz"


def _generate_one(task: dict) -> int:
    """Warp one sample and write its npz (runs in a worker process)."""
    grid = Grid.from_dict(task["grid"])
    image, segmentation = warp_to_shape(
        task["image"], grid, task["base_particles"], task["particles"],
        segmentation=task["segmentation"], max_landmarks=task["max_landmarks"],
        field_stride=task["field_stride"])
    arrays = {"image": image, "particles_world": task["particles"].astype(np.float32),
              "scores_whitened": task["scores"], "base_index": np.int64(task["base_index"])}
    if segmentation is not None:
        arrays["segmentation"] = segmentation
    with atomic_path(task["path"], suffix=".npz") as tmp:
        with open(tmp, "wb") as stream:
            np.savez(stream, **arrays)
    return int(task["index"])


def _sample_is_complete(path: Path) -> bool:
    """Whether a sample file exists and every array in it reads back."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            if not {"image", "particles_world", "scores_whitened"} <= set(stored.files):
                return False
            for name in stored.files:
                stored[name]
            return True
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return False


def augment_training_split(train: Any, grid: Grid, cache_dir: str | os.PathLike,
                           settings: AugmentationSettings, *, workers: int = 1,
                           pca: ParticlePCA | None = None) -> AugmentedSet:
    """Generate (or load from the cache) augmented training samples.

    Parameters
    ----------
    train : SplitData
        The **training** split (``data.split("train")``): ``names``, ``images``
        ``(S, X, Y, Z)`` on ``grid``, ``segmentations`` ``(S, X, Y, Z)`` or None,
        ``particles_world`` ``(S, N, 3)`` (mm, model order).
    grid : Grid
        The common grid the images are on.
    cache_dir : path-like
        Folder for the cache; the samples go to ``cache_dir/augmentation-<key>/``.
    settings : AugmentationSettings
    workers : int, default: 1
        Worker processes for the warps (1 runs in this process). Does not change the
        result.
    pca : ParticlePCA, optional
        PCA of the training particles to sample in; by default fitted here with
        ``settings.variance_fraction`` / ``settings.num_modes``.

    Returns
    -------
    AugmentedSet

    Raises
    ------
    ShapeWorksInputError
        When ``train`` is not the training split, or the arrays disagree in size.
    """
    _require_train(train)
    particles = np.asarray(train.particles_world, dtype=np.float64)
    images = np.asarray(train.images)
    segmentations = getattr(train, "segmentations", None)
    names = list(train.names)
    if images.shape[1:] != tuple(grid.size) or not len(images) == len(particles) == len(names):
        raise ShapeWorksInputError(
            f"training split arrays disagree: {len(names)} names, images {images.shape}, "
            f"particles {particles.shape}, grid {grid.size}")
    if pca is None:
        pca = fit_pca(particles, variance_fraction=settings.variance_fraction,
                      num_modes=settings.num_modes)
    if pca.num_particles != particles.shape[1]:
        raise ShapeWorksInputError(
            f"the PCA has {pca.num_particles} particles, the training split {particles.shape[1]}")

    key = _hash_inputs(train, grid, settings)
    # The PCA is part of the key too (a caller may pass its own).
    key = hashlib.sha256((key + pca.to_json()).encode()).hexdigest()[:20]
    folder = Path(cache_dir) / f"augmentation-{key}"
    manifest_path = folder / "manifest.json"

    # Sample scores and pick bases in this process: cheap and independent of workers.
    train_scores = pca.whiten(pca.project(particles))
    samples = sample_whitened_scores(train_scores, settings.sampler, settings.count,
                                     seed=settings.seed,
                                     mixture_components=settings.mixture_components)
    bases = nearest_shapes(samples, train_scores)
    generated = pca.reconstruct(pca.unwhiten(samples))

    # Generate what is missing: everything, the rest of an interrupted run, or samples
    # of a finished cache that were deleted or damaged since
    todo = [i for i in range(settings.count) if not _sample_is_complete(_sample_path(folder, i))]
    if manifest_path.exists() and not todo:
        logger.info("augmentation: reusing %d cached samples in %s", settings.count, folder)
        return _load(folder, pca)
    if manifest_path.exists():
        logger.warning("augmentation: %d cached sample(s) in %s are missing or damaged (%s); "
                       "generating them again", len(todo), folder,
                       ", ".join(_sample_path(folder, i).name for i in todo[:5])
                       + (", ..." if len(todo) > 5 else ""))
        manifest_path.unlink()
    logger.info("augmentation: generating %d of %d samples (%s sampler, %d modes) in %s",
                len(todo), settings.count, settings.sampler, pca.num_modes, folder)
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    tasks = ({"index": i, "path": str(_sample_path(folder, i)), "grid": grid.to_dict(),
              "image": images[bases[i]],
              "segmentation": None if segmentations is None else segmentations[bases[i]],
              "base_particles": particles[bases[i]], "particles": generated[i],
              "scores": samples[i], "base_index": int(bases[i]),
              "max_landmarks": settings.max_landmarks,
              "field_stride": settings.field_stride} for i in todo)
    if workers <= 1 or len(todo) <= 1:
        for task in tasks:
            _generate_one(task)
    else:
        with ProcessPoolExecutor(max_workers=int(workers),
                                 mp_context=get_context("spawn")) as pool:
            for _ in pool.map(_generate_one, tasks, chunksize=1):
                pass
    manifest = {
        "format_version": FORMAT_VERSION, "key": key, "settings": settings.to_dict(),
        "grid": grid.to_dict(), "num_modes": pca.num_modes,
        "train_names": names, "has_segmentations": segmentations is not None,
        "samples": [{"name": f"augmented_{i:05d}", "file": _sample_path(folder, i)
                     .relative_to(folder).as_posix(), "base_index": int(bases[i]),
                     "base_name": names[bases[i]]} for i in range(settings.count)],
    }
    pca.save(folder / "pca.npz")
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
    return _load(folder, pca)


def _load(folder: Path, pca: ParticlePCA) -> AugmentedSet:
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    entries = manifest["samples"]
    images, particles, scores, segmentations = [], [], [], []
    for entry in entries:
        with np.load(folder / entry["file"], allow_pickle=False) as stored:
            images.append(stored["image"])
            particles.append(stored["particles_world"])
            scores.append(stored["scores_whitened"])
            if manifest["has_segmentations"]:
                segmentations.append(stored["segmentation"])
    return AugmentedSet(
        names=[entry["name"] for entry in entries],
        base_names=[entry["base_name"] for entry in entries],
        base_indices=np.asarray([entry["base_index"] for entry in entries], dtype=np.int64),
        scores_whitened=np.stack(scores), particles_world=np.stack(particles),
        images=np.stack(images),
        segmentations=np.stack(segmentations) if segmentations else None,
        pca=pca, manifest=manifest)



def augment_prepared_data(data: Any, cache_dir: str | os.PathLike,
                          settings: AugmentationSettings, *, workers: int = 1,
                          pca: ParticlePCA | None = None) -> AugmentedSet:
    """:func:`augment_training_split` on ``data.split("train")`` and ``data.grid``.

    Parameters
    ----------
    data : PreparedData
        From :func:`shapeworks_progressive.dataset.prepare_dataset`.
    """
    return augment_training_split(data.split("train"), data.grid, cache_dir, settings,
                                  workers=workers, pca=pca)


def with_augmented(train: Any, augmented: AugmentedSet):
    """The training split followed by the augmented samples, as one ``SplitData``.

    Augmented samples get subject index -1, the ``image_to_world`` of their base subject
    (their images are on the same grid) and an empty registration record.
    """
    from .dataset import SplitData

    _require_train(train)
    segmentations = None
    if train.segmentations is not None and augmented.segmentations is not None:
        segmentations = np.concatenate([train.segmentations, augmented.segmentations])
    base_transforms = np.asarray(train.image_to_world)[augmented.base_indices]
    return SplitData(
        names=list(train.names) + list(augmented.names),
        subject_indices=list(train.subject_indices) + [-1] * len(augmented),
        images=np.concatenate([train.images, augmented.images]),
        segmentations=segmentations,
        particles_world=np.concatenate(
            [train.particles_world, augmented.particles_world.astype(np.float32)]),
        image_to_world=np.concatenate([train.image_to_world, base_transforms]),
        registrations=list(getattr(train, "registrations", [{}] * len(train)))
        + [{} for _ in range(len(augmented))])


def settings_from_config(config: dict) -> AugmentationSettings | None:
    """The PCA augmentation a complete training config asks for, or None when it is off.

    ``augment.pca_samples`` (count, 0 for none), ``augment.pca_sampler`` and
    ``augment.pca_variance`` from the config; the seed is ``run.seed``, so every model
    trained with one seed sees the same generated samples.
    """
    augment = config["augment"]
    count = int(augment["pca_samples"])
    if count < 1:
        return None
    return AugmentationSettings(count=count, sampler=str(augment["pca_sampler"]),
                                seed=int(config["run"]["seed"]),
                                variance_fraction=float(augment["pca_variance"]))


def _physical_memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def check_sample_memory(count: int, data: Any) -> None:
    """Refuse a sample count whose arrays would not fit in half of this machine's memory.

    Each sample holds a float32 image and a uint8 segmentation on the grid plus its
    particles; training holds them twice (the loaded set and the combined split).
    """
    from .errors import ConfigError

    voxels = int(np.prod(data.grid.size))
    per_sample = voxels * (4 + 1) + int(np.asarray(data.split("train").particles_world)
                                         .shape[1]) * 3 * 4
    needed = 2 * count * per_sample
    memory = _physical_memory_bytes()
    if memory is not None and needed > memory / 2:
        raise ConfigError(
            f"augment.pca_samples {count}: the samples would take about "
            f"{needed / 2 ** 30:.1f} GiB of memory ({per_sample / 2 ** 20:.2f} MiB each on the "
            f"{list(data.grid.size)} grid, held twice in training), more than half of this "
            f"machine's {memory / 2 ** 30:.1f} GiB; ask for fewer samples or a coarser "
            "data.spacing")


def augment_from_config(data: Any, config: dict, cache_dir: str | os.PathLike
                        ) -> AugmentedSet | None:
    """Generate (or reuse) the PCA augmentation ``config`` asks for on ``data``'s train split.

    Parameters
    ----------
    data : PreparedData
        Prepared data; only its training split feeds the samples.
    config : dict
        Complete training config (see :func:`settings_from_config`); ``run.num_workers``
        worker processes (null: every core) do the warps.
    cache_dir : path-like
        Folder of the cache (the prepared data's), shared by every run.

    Returns
    -------
    AugmentedSet or None
        None when ``augment.pca_samples`` is 0.

    Raises
    ------
    ConfigError
        When the samples would not fit in half of this machine's memory (checked before
        any is generated).
    """
    settings = settings_from_config(config)
    if settings is None:
        return None
    check_sample_memory(settings.count, data)
    workers = config["run"]["num_workers"] or os.cpu_count() or 1
    augmented = augment_prepared_data(data, cache_dir, settings, workers=int(workers))
    logger.info("training on %d subjects plus %d PCA-augmented samples (%s sampler, %d modes)",
                len(data.split("train")), len(augmented), settings.sampler,
                augmented.pca.num_modes)
    return augmented
