"""prepare_dataset on a tiny synthetic ellipsoid project written with project.py."""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from shapeworks_progressive.dataset import (prepare_dataset, prepare_prediction_image,
                                            registration_particle_error)
from shapeworks_progressive.errors import ProjectValidationError
from shapeworks_progressive.meshes import transform_mesh, write_mesh
from shapeworks_progressive.particles import write_particles
from shapeworks_progressive.project import Project, Subject
from shapeworks_progressive.transforms import apply_transform

AXES = (12.0, 8.0, 6.0)  # ellipsoid semi-axes (mm), world frame
N_PARTICLES = 64
SPLITS = ["train", "train", "train", "train", "val", "test"]


def _ellipsoid_points(n: int, axes) -> np.ndarray:
    """(n, 3) points on the ellipsoid surface (Fibonacci sphere, stretched)."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = np.pi * (1 + 5 ** 0.5) * i
    r = np.sqrt(1 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1) * np.asarray(axes)


def _ellipsoid_mesh(axes):
    from vtkmodules.vtkFiltersSources import vtkSphereSource

    from shapeworks_progressive.meshes import mesh_to_arrays, arrays_to_mesh

    sphere = vtkSphereSource()
    sphere.SetThetaResolution(48)
    sphere.SetPhiResolution(48)
    sphere.SetRadius(1.0)
    sphere.Update()
    vertices, faces = mesh_to_arrays(sphere.GetOutput())
    return arrays_to_mesh(vertices * np.asarray(axes), faces)


def _subject_image(world_to_image: np.ndarray, *, direction, origin, spacing, size,
                   gain: float):
    """Image in its own frame: bright ellipsoid (plus an off-centre blob) on a background."""
    image = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    image.SetDirection(np.asarray(direction, float).ravel().tolist())
    image.SetOrigin([float(v) for v in origin])
    image.SetSpacing([float(v) for v in spacing])
    index = np.stack(np.meshgrid(*[np.arange(s) for s in size], indexing="ij"), -1)
    physical = (np.asarray(origin) + (index * np.asarray(spacing)) @
                np.asarray(direction, float).reshape(3, 3).T)
    world = apply_transform(physical.reshape(-1, 3), np.linalg.inv(world_to_image))
    world = world.reshape(*size, 3)
    radius = np.sqrt(np.sum((world / np.asarray(AXES)) ** 2, axis=-1))
    values = 20 + 80 / (1 + np.exp((radius - 1) * 12))
    values += 60 * np.exp(-np.sum((world - [6.0, 3.0, 0.0]) ** 2, -1) / 8.0)
    out = sitk.GetImageFromArray((gain * values).transpose(2, 1, 0).astype(np.float32))
    out.CopyInformation(image)
    return out


def _make_project(folder, *, n_subjects=6):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    project = Project.new(folder / "tiny.swproj")
    world_particles = _ellipsoid_points(N_PARTICLES, AXES)
    mesh_world = _ellipsoid_mesh(AXES)
    truths = []
    for i in range(n_subjects):
        name = f"ell_{i}"
        # image frame -> world: rotation + translation (this is procrustes @ alignment)
        rotation = Rotation.from_rotvec(rng.normal(size=3) * np.deg2rad(6)).as_matrix()
        image_to_world = np.eye(4)
        image_to_world[:3, :3] = rotation
        image_to_world[:3, 3] = -(rotation @ np.array([20.0 + i, 16.0, 14.0 - i]))
        world_to_image = np.linalg.inv(image_to_world)
        alignment = image_to_world.copy()
        procrustes = np.eye(4)
        if i % 2:  # split it: part in the alignment, part in Procrustes
            procrustes = np.eye(4)
            procrustes[:3, 3] = [1.0, -2.0, 0.5]
            alignment = np.linalg.inv(procrustes) @ image_to_world
        direction = np.diag([-1.0, -1.0, 1.0]) if i % 2 else np.eye(3)
        origin = [40.0, 32.0, 0.0] if i % 2 else [0.0, 0.0, 0.0]
        spacing = (1.0, 1.0, 1.25) if i == 2 else (1.0, 1.0, 1.0)
        size = (40, 32, 23) if i == 2 else (40, 32, 28)
        image = _subject_image(world_to_image, direction=direction, origin=origin,
                               spacing=spacing, size=size, gain=10.0 ** (i % 3))
        image_path = folder / f"{name}.nrrd"
        if i == 1:  # integer pixel type
            image = sitk.Cast(image, sitk.sitkInt16)
        sitk.WriteImage(image, str(image_path))
        # shape: segmentation image for even subjects, mesh for odd
        if i % 2 == 0:
            threshold = 60.0 * 10.0 ** (i % 3)  # the sigmoid's midpoint: the surface
            label = sitk.Cast(sitk.Cast(image, sitk.sitkFloat32) > threshold, sitk.sitkUInt8)
            shape_path = folder / f"{name}_seg.nrrd"
            sitk.WriteImage(label, str(shape_path))
        else:
            shape_path = folder / f"{name}.vtk"
            write_mesh(shape_path, transform_mesh(mesh_world, world_to_image))
        world_path = folder / f"{name}_world.particles"
        local_path = folder / f"{name}_local.particles"
        write_particles(world_path, world_particles + rng.normal(scale=0.05,
                                                                 size=world_particles.shape))
        write_particles(local_path, apply_transform(world_particles, world_to_image))
        project.add_subject(Subject(name=name, shapes=[shape_path], groomed=[shape_path],
                                    local_particles=[local_path], world_particles=[world_path],
                                    alignments=[alignment], procrustes=[procrustes],
                                    images={"mri": image_path}, extra={"split": SPLITS[i]}))
        truths.append(image_to_world)
    project.set_parameters("groom", {"1": {"alignment_reference_chosen": "0"}})
    project.save()
    return project.path, truths


def _ellipsoid_mask(grid) -> np.ndarray:
    index = np.stack(np.meshgrid(*[np.arange(s) for s in grid.size], indexing="ij"), -1)
    world = grid.index_to_world_points(index.reshape(-1, 3)).reshape(*grid.size, 3)
    return (np.sum((world / np.asarray(AXES)) ** 2, axis=-1) <= 1.0).astype(np.uint8)


def _dice(a, b) -> float:
    return 2.0 * np.sum((a > 0) & (b > 0)) / (np.sum(a > 0) + np.sum(b > 0))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_project")
    path, truths = _make_project(folder)
    started = time.perf_counter()
    data = prepare_dataset(path, folder / "cache", spacing=1.0, padding_mm=5.0, progress=False)
    first_seconds = time.perf_counter() - started
    return folder, path, truths, data, first_seconds


def test_grid_covers_every_training_particle_with_padding(tiny):
    _, _, _, data, _ = tiny
    particles = data.split("train").particles_world.reshape(-1, 3)
    assert data.grid.contains(particles, margin_mm=5.0 - 1e-6).all()
    assert not data.grid.contains(particles, margin_mm=5.0 + 1.0).all()
    assert data.grid.spacing == (1.0, 1.0, 1.0)


def test_shapes_dtypes_and_model_order(tiny):
    _, _, _, data, _ = tiny
    train = data.split("train")
    assert train.images.shape == (4, *data.grid.size) and train.images.dtype == np.float32
    assert train.segmentations.dtype == np.uint8 and set(np.unique(train.segmentations)) <= {0, 1}
    assert train.particles_world.shape == (4, N_PARTICLES, 3)
    assert data.scale_sizes == [8, 16, 32, 64]
    assert sorted(data.particle_order.tolist()) == list(range(N_PARTICLES))
    np.testing.assert_allclose(data.template_world, train.particles_world.mean(0), atol=1e-5)
    assert len(data.split("val")) == 1 and len(data.split("test")) == 1
    json.dumps(data.to_dict())  # JSON-able


def test_segmentations_match_the_known_ellipsoid(tiny):
    _, _, _, data, _ = tiny
    truth = _ellipsoid_mask(data.grid)
    for split in ("train", "val", "test"):
        for seg in data.split(split).segmentations:
            assert _dice(seg, truth) > 0.9, split


def test_training_images_are_in_the_world_frame(tiny):
    _, _, _, data, _ = tiny
    truth = _ellipsoid_mask(data.grid).astype(bool)
    for image in data.split("train").images:
        assert image[truth].mean() > image[~truth].mean() + 1.0


def test_val_registration_recovers_the_true_transform(tiny):
    _, _, truths, data, _ = tiny
    for split, row in (("val", 4), ("test", 5)):
        registered = data.split(split).image_to_world[0]
        error = registration_particle_error(data.template_world, truths[row], registered)
        assert error < 1.0, (split, error)
        assert data.split(split).registrations[0]["converged"]


def test_val_and_test_targets_follow_the_registered_image(tiny):
    # Targets are the subject's image-frame particles mapped by the registration found,
    # not the optimized world particles: they sit where the registered image shows them.
    _, path, truths, data, _ = tiny
    project = Project.load(path)
    for split, row in (("val", 4), ("test", 5)):
        part = data.split(split)
        world = np.loadtxt(project.subjects[row].world_particles[0])[data.particle_order]
        in_image = apply_transform(world, truths[row], inverse=True)
        expected = apply_transform(in_image, part.image_to_world[0])
        np.testing.assert_allclose(part.particles_world[0], expected, atol=1e-4)
        # and they differ from the world file by the registration's small misalignment only
        assert np.abs(part.particles_world[0] - world).max() < 2.0


def test_cache_is_reused_then_rebuilt_after_a_change(tiny):
    folder, path, _, data, first_seconds = tiny
    started = time.perf_counter()
    again = prepare_dataset(path, folder / "cache", spacing=1.0, padding_mm=5.0, progress=False)
    assert time.perf_counter() - started < first_seconds / 2
    assert again.cache_path == data.cache_path
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(again.split(split).images, data.split(split).images)
        np.testing.assert_array_equal(again.split(split).segmentations,
                                      data.split(split).segmentations)
    assert again.grid == data.grid and again.normalization == data.normalization

    # change the test image: a constant image; the cache is rebuilt, normalization kept
    test_image = folder / "ell_5.nrrd"
    old = sitk.ReadImage(str(test_image))
    constant = sitk.Image(old.GetSize(), sitk.sitkFloat32) + 7.0
    constant.CopyInformation(old)
    sitk.WriteImage(constant, str(test_image))
    rebuilt = prepare_dataset(path, folder / "cache", spacing=1.0, padding_mm=5.0,
                              progress=False)
    assert rebuilt.manifest["key"] != data.manifest["key"]
    assert rebuilt.normalization == data.normalization
    assert not np.array_equal(rebuilt.split("test").images, data.split("test").images)
    assert np.isfinite(rebuilt.split("test").images).all()
    np.testing.assert_array_equal(rebuilt.split("train").images, data.split("train").images)


def test_nan_and_constant_images_never_give_nan(tmp_path):
    path, _ = _make_project(tmp_path, n_subjects=6)
    # NaN voxels in a training image, a constant validation image
    image_path = tmp_path / "ell_3.nrrd"
    image = sitk.ReadImage(str(image_path), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    array[:3] = np.nan
    nan_image = sitk.GetImageFromArray(array)
    nan_image.CopyInformation(image)
    sitk.WriteImage(nan_image, str(image_path))
    val_path = tmp_path / "ell_4.nrrd"
    val = sitk.ReadImage(str(val_path))
    constant = sitk.Image(val.GetSize(), sitk.sitkFloat32)
    constant.CopyInformation(val)
    sitk.WriteImage(constant, str(val_path))
    with pytest.warns(UserWarning, match="ell_3.nrrd holds .* NaN"):
        data = prepare_dataset(path, tmp_path / "cache", spacing=2.0, padding_mm=4.0,
                               progress=False)
    for split in ("train", "val", "test"):
        assert np.isfinite(data.split(split).images).all()
    assert np.isfinite([data.normalization.mean, data.normalization.std]).all()


def test_missing_files_and_count_mismatch_are_all_named(tmp_path):
    path, _ = _make_project(tmp_path, n_subjects=6)
    (tmp_path / "ell_2.nrrd").unlink()
    write_particles(tmp_path / "ell_4_world.particles", np.zeros((10, 3)))
    (tmp_path / "ell_5_world.particles").unlink()
    with pytest.raises(ProjectValidationError) as info:
        prepare_dataset(path, tmp_path / "cache", progress=False)
    text = str(info.value)
    assert "'ell_2'" in text and "image file not found" in text
    assert "'ell_4'" in text and "10 particles" in text
    assert "'ell_5'" in text
    assert len(info.value.problems) == 3
    assert not (tmp_path / "cache").exists()


def test_prediction_image_matches_the_prepared_test_image(tiny):
    folder, _, truths, data, _ = tiny
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        array, result = prepare_prediction_image(
            folder / "ell_4.nrrd", data.reference, data.grid.to_dict(),
            data.normalization.to_dict())
    assert array.shape == tuple(data.grid.size) and array.dtype == np.float32
    np.testing.assert_allclose(result.image_to_world, data.split("val").image_to_world[0],
                               atol=1e-6)
    np.testing.assert_allclose(array, data.split("val").images[0], atol=1e-5)
    assert registration_particle_error(data.template_world, truths[4],
                                       result.image_to_world) < 1.0
