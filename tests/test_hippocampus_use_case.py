"""The hippocampus use case's preparation on a few real subjects (64 particles)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from shapeworks_progressive.meshes import mesh_to_arrays, read_mesh
from shapeworks_progressive.particles import read_particles
from shapeworks_progressive.project import Project
from shapeworks_progressive.quality import prefix_coverage, surface_distances
from shapeworks_progressive.transforms import apply_transform, local_to_world

REPOSITORY = Path(__file__).resolve().parents[1]
DATA = REPOSITORY.parent / "shared" / "data" / "hippocampus_msd"
SUBJECTS = 4
PARTICLES = 64


def _use_case():
    spec = importlib.util.spec_from_file_location("hippocampus_use_case",
                                                  REPOSITORY / "use_cases" / "hippocampus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    if not (DATA / "labelsTr").is_dir():
        pytest.skip(f"hippocampus data not found: {DATA}")
    out = tmp_path_factory.mktemp("hippocampus")
    use_case = _use_case()
    path = use_case.prepare(out, DATA, particles=PARTICLES, subjects=SUBJECTS, workers=1)
    return use_case, out, path


def test_project_rows_and_sections(prepared):
    _, out, path = prepared
    assert path == out / "hippocampus.swproj"
    project = Project.load(path)
    assert [s.name for s in project.subjects] == [
        p.name[:-7] for p in sorted((DATA / "labelsTr").glob("*.nii.gz"))[:SUBJECTS]]
    groom = project.parameters("groom")["1"]
    assert groom["alignment_method"] == "Iterative Closest Point"
    assert project.reference_index == int(groom["alignment_reference_chosen"])
    assert project.parameters("optimize")["number_of_particles"] == str(PARTICLES)
    assert project.parameters("shapeworks_progressive")["correspondence_method"] == "stand-in"
    assert sorted(s.split for s in project.subjects) == ["test", "train", "train", "val"]
    for subject in project.subjects:
        assert subject.image.resolve() == (DATA / "imagesTr" / f"{subject.name}.nii.gz").resolve()
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert not Path(raw["data"][0]["shape_1"]).is_absolute()


def test_shape_mesh_lies_in_the_image_frame(prepared):
    _, out, path = prepared
    subject = Project.load(path).subjects[0]
    labels = sitk.ReadImage(str(DATA / "labelsTr" / f"{subject.name}.nii.gz"))
    voxels = np.argwhere(sitk.GetArrayFromImage(labels) > 0)[:, ::-1].astype(float)
    centre_world = np.mean([labels.TransformContinuousIndexToPhysicalPoint(v.tolist())
                            for v in voxels], axis=0)
    for mesh_path in (subject.shapes[0], subject.groomed[0]):
        vertices, _ = mesh_to_arrays(read_mesh(mesh_path))
        assert np.linalg.norm(vertices.mean(axis=0) - centre_world) < 1.0


def test_transforms_and_particles_on_surfaces(prepared):
    _, _, path = prepared
    project = Project.load(path)
    reference = project.reference_index
    aligned_centres = []
    for i, subject in enumerate(project.subjects):
        alignment = subject.alignment(0)
        procrustes = subject.procrustes_transform(0)
        for matrix in (alignment, procrustes):
            np.testing.assert_allclose(matrix[:3, :3] @ matrix[:3, :3].T, np.eye(3), atol=1e-5)
        if i == reference:
            np.testing.assert_allclose(alignment[:3, :3], np.eye(3), atol=1e-6)
        particles_local = read_particles(subject.local_particles[0])
        particles_world = read_particles(subject.world_particles[0])
        assert particles_local.shape == (PARTICLES, 3)
        np.testing.assert_allclose(local_to_world(particles_local, alignment, procrustes),
                                   particles_world, atol=1e-4)
        vertices, faces = mesh_to_arrays(read_mesh(subject.groomed[0]))
        assert surface_distances(particles_local, vertices, faces).max() < 1e-4
        aligned_centres.append(apply_transform(vertices, alignment).mean(axis=0))
        # nested prefixes: each one covers the surface better than the one before
        coverage = prefix_coverage(particles_local, vertices, [16, 32, 64])
        assert coverage[16] > coverage[32] > coverage[64]
        assert coverage[16] < 12.0  # 16 points on ~1500 mm^2: spacing ~10 mm
    # after grooming every shape is centred near the aligned frame's origin
    assert np.abs(np.asarray(aligned_centres)).max() < 2.0


def test_world_particles_correspond_across_subjects(prepared):
    _, _, path = prepared
    project = Project.load(path)
    world = np.stack([read_particles(s.world_particles[0]) for s in project.subjects])
    mean = world.mean(axis=0)
    # corresponding rows stay close in world space; shuffled rows would be far apart
    same = np.linalg.norm(world - mean, axis=2).mean()
    shuffled = np.linalg.norm(world[:, np.random.default_rng(0).permutation(PARTICLES)] - mean,
                              axis=2).mean()
    assert same < 0.3 * shuffled


def test_quality_report_and_rerun_reuses_steps(prepared):
    use_case, out, path = prepared
    report = json.loads((out / "quality" / "quality.json").read_text(encoding="utf-8"))
    assert report["subjects"] == SUBJECTS
    assert report["surface_distance_max_mm"] < 1e-4
    assert report["world_file_consistency_max_mm"] < 1e-4
    assert set(report["prefix_coverage_mm"]) == {str(PARTICLES)}
    particle_file = out / "hippocampus_particles" / f"{Project.load(path).subjects[0].name}" \
                                                    "_groomed_local.particles"
    stamp = (out / "steps" / "3_correspondence.json").stat().st_mtime_ns
    before = particle_file.stat().st_mtime_ns
    use_case.prepare(out, DATA, particles=PARTICLES, subjects=SUBJECTS, workers=1)
    assert particle_file.stat().st_mtime_ns == before
    assert (out / "steps" / "3_correspondence.json").stat().st_mtime_ns == stamp


def test_smaller_runs_get_their_own_output_folder():
    use_case = _use_case()
    assert use_case.parse_args([]).out == use_case.DEFAULT_OUT
    tiny = use_case.parse_args(["--tiny"]).out
    assert tiny.name == "hippocampus_tiny" and tiny.parent == use_case.DEFAULT_OUT.parent
    assert use_case.parse_args(["--subjects", "30"]).out.name == "hippocampus_30"
    assert use_case.parse_args(["--tiny", "--out", "/tmp/x"]).out == Path("/tmp/x")
