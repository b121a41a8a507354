#!/usr/bin/env python
"""Hippocampus use case: a ShapeWorks project from 220 MRI crops with segmentations.

In the style of ShapeWorks' use-case scripts, in numbered steps:

1. Original shapes: label > 0, largest connected component, saved as a segmentation and
   as a surface mesh in the subject's own physical frame (``shape_1``); the MRI is
   ``image_mri``.
2. Groom: light mesh smoothing (``groomed_1``, still in the subject's frame), centre of
   mass plus rigid ICP alignment of every shape to the medoid shape (``alignment_1``;
   ``alignment_reference_chosen`` in the groom section).
3. Correspondence: ShapeWorks' own optimizer (``shapeworks optimize``) when the
   ``shapeworks`` module is importable; otherwise a *stand-in* (template particles in
   nested farthest-point order, coherent point drift to every shape, snapping onto the
   surface, generalized Procrustes), said plainly in the log and in the project's
   ``shapeworks_progressive`` section.
4. Split: a seeded ``split`` column (train/val/test, about 70/15/15); the project
   ``hippocampus.swproj`` is written.
5. Quality report: particle-to-surface distance, coverage of each nested prefix and PCA
   compactness (``quality/quality.json`` and ``quality/quality.md``).

A re-run reuses every finished step: each step keeps a small JSON stamp of its inputs
and settings under ``<out>/steps/``; a changed setting redoes that step and the later
ones. Later steps (train, predict, evaluate) are appended to ``STEPS``.

Usage::

    python use_cases/hippocampus.py            # all 220 subjects
    python use_cases/hippocampus.py --tiny     # 12 subjects, output/hippocampus_tiny/
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPOSITORY.parent / "shared" / "data" / "hippocampus_msd"
DEFAULT_OUT = REPOSITORY / "output" / "hippocampus"
PROJECT_NAME = "hippocampus.swproj"
TINY_SUBJECTS = 12
PREFIX_SIZES = (128, 256, 512, 1024)

logger = logging.getLogger("hippocampus")


# --------------------------------------------------------------------------------------
# Settings and step bookkeeping


@dataclass
class Context:
    """Everything the steps share: settings, the subject list and step results."""

    data: Path
    out: Path
    tiny: bool = False
    particles: int = 1024
    seed: int = 0
    workers: int = 2
    subjects: int | None = None
    split_fractions: tuple = (0.70, 0.15, 0.15)
    names: list = field(default_factory=list)
    images: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    results: dict = field(default_factory=dict)
    redone: bool = False

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)


def _digest(settings: dict) -> str:
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def run_step(ctx: Context, name: str, settings: dict, outputs: Callable[[dict], list],
             work: Callable[[], dict]) -> dict:
    """Run ``work`` unless its stamp matches ``settings`` and its outputs all exist.

    The stamp ``<out>/steps/<name>.json`` keeps the settings' digest, the result (JSON)
    and the time taken. Once a step is redone, every later step is redone too.
    """
    from shapeworks_progressive.fileio import atomic_write_text

    stamp_path = ctx.path("steps", f"{name}.json")
    digest = _digest(settings)
    if not ctx.redone and stamp_path.is_file():
        stamp = json.loads(stamp_path.read_text(encoding="utf-8"))
        if stamp.get("digest") == digest:
            missing = [p for p in outputs(stamp["result"]) if not Path(p).exists()]
            if not missing:
                logger.info("  reusing %s (finished %.1f s run, settings unchanged)", name,
                            stamp.get("seconds", 0.0))
                return stamp["result"]
            logger.info("  redoing %s: %d output(s) missing, e.g. %s", name, len(missing),
                        missing[0])
        else:
            logger.info("  redoing %s: settings changed", name)
    start = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - start
    stamp = {"step": name, "digest": digest, "settings": settings, "seconds": seconds,
             "result": result}
    atomic_write_text(stamp_path, json.dumps(stamp, indent=1, default=str) + "\n")
    ctx.redone = True
    logger.info("  %s done in %.1f s", name, seconds)
    return result


def _one_blas_thread() -> None:
    """Process-pool initializer: one BLAS thread per worker (no oversubscription)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1)


def _pool_map(ctx: Context, function, *iterables) -> list:
    """Map ``function`` over subjects with a process pool of ``ctx.workers``.

    Logs progress about every tenth of the subjects; results keep the input order.
    """
    arguments = list(zip(*iterables))
    every = max(1, len(arguments) // 10)
    results = [None] * len(arguments)

    def note(done: int) -> None:
        if len(arguments) >= 40 and done % every == 0 and done < len(arguments):
            logger.info("    %d of %d subjects", done, len(arguments))

    if ctx.workers <= 1:
        for i, args in enumerate(arguments):
            results[i] = function(*args)
            note(i + 1)
        return results
    with ProcessPoolExecutor(max_workers=ctx.workers, initializer=_one_blas_thread) as pool:
        futures = {pool.submit(function, *args): i for i, args in enumerate(arguments)}
        for done, future in enumerate(as_completed(futures), start=1):
            results[futures[future]] = future.result()
            note(done)
    return results


# --------------------------------------------------------------------------------------
# Per-subject work (module level so the process pool can pickle it)


def _extract_one(label: str, segmentation: str, mesh: str, name: str) -> dict:
    from shapeworks_progressive.segmentation import extract_shape

    return extract_shape(label, segmentation, mesh, name=name, smoothing_iterations=0)


def _groom_one(shape_mesh: str, groomed_mesh: str, seed: int) -> dict:
    from shapeworks_progressive.grooming import subsample_points, surface_center_of_mass
    from shapeworks_progressive.meshes import mesh_to_arrays, read_mesh, write_mesh
    from shapeworks_progressive.segmentation import smooth_surface

    groomed = smooth_surface(read_mesh(shape_mesh), iterations=15)
    write_mesh(groomed_mesh, groomed)
    vertices, faces = mesh_to_arrays(groomed)
    centre = surface_center_of_mass(vertices, faces)
    cloud = subsample_points(vertices - centre, 300, rng=np.random.default_rng(seed))
    return {"centre": centre.tolist(), "cloud": cloud.tolist()}


def _align_one(groomed_mesh: str, reference_vertices: np.ndarray, reference_faces: np.ndarray
               ) -> list:
    from shapeworks_progressive.grooming import alignment_transform
    from shapeworks_progressive.meshes import arrays_to_mesh, mesh_to_arrays, read_mesh

    vertices, faces = mesh_to_arrays(read_mesh(groomed_mesh))
    reference = arrays_to_mesh(reference_vertices, reference_faces)
    return alignment_transform(vertices, faces, reference).tolist()


def _correspond_one(template_aligned: np.ndarray, groomed_mesh: str, alignment: list,
                    seed: int, settings: dict) -> dict:
    from shapeworks_progressive.correspondence import correspond_shape
    from shapeworks_progressive.meshes import mesh_to_arrays, read_mesh

    vertices, faces = mesh_to_arrays(read_mesh(groomed_mesh))
    return correspond_shape(template_aligned, vertices, faces, np.asarray(alignment),
                            seed=seed, alpha=settings["alpha"], beta=settings["beta"],
                            relax_iterations=settings["relax_iterations"])


# --------------------------------------------------------------------------------------
# Steps


def step_original_shapes(ctx: Context) -> None:
    """Step 1: label > 0, largest component, segmentation + mesh in the subject frame."""
    logger.info("Step 1. Original shapes: largest component of label > 0, surface meshes")
    segmentations = [str(ctx.path("shapes", f"{n}_segmentation.nii.gz")) for n in ctx.names]
    meshes = [str(ctx.path("shapes", f"{n}.vtk")) for n in ctx.names]
    settings = {"labels": [str(p) for p in ctx.labels], "padding": 3, "smoothing": 0,
                "version": 1}

    def work() -> dict:
        stats = _pool_map(ctx, _extract_one, [str(p) for p in ctx.labels], segmentations,
                          meshes, ctx.names)
        return {"segmentations": segmentations, "meshes": meshes, "stats": stats}

    result = run_step(ctx, "1_original_shapes", settings,
                      lambda r: r["segmentations"] + r["meshes"], work)
    volumes = [s["volume_mm3"] for s in result["stats"]]
    logger.info("  %d shapes, volume %.0f to %.0f mm3, %d to %d vertices", len(volumes),
                min(volumes), max(volumes), min(s["vertices"] for s in result["stats"]),
                max(s["vertices"] for s in result["stats"]))
    ctx.results["shapes"] = result


def step_groom(ctx: Context) -> None:
    """Step 2: smooth, centre of mass, medoid reference and rigid ICP alignment."""
    from shapeworks_progressive.grooming import select_medoid, translation_matrix
    from shapeworks_progressive.meshes import mesh_to_arrays, read_mesh
    from shapeworks_progressive.transforms import apply_transform

    logger.info("Step 2. Groom: smoothing, centre of mass, medoid reference, rigid ICP")
    shapes = ctx.results["shapes"]["meshes"]
    groomed = [str(ctx.path("groomed", f"{n}_groomed.vtk")) for n in ctx.names]
    settings = {"shapes": ctx.results["shapes"]["meshes"], "seed": ctx.seed,
                "smoothing": 15, "icp_iterations": 50, "icp_landmarks": 500,
                "version": 1}

    def work() -> dict:
        seeds = [ctx.seed * 100003 + i for i in range(len(ctx.names))]
        summaries = _pool_map(ctx, _groom_one, shapes, groomed, seeds)
        clouds = [np.asarray(s["cloud"]) for s in summaries]
        reference, _ = select_medoid(clouds)
        logger.info("  medoid reference: subject %d (%s)", reference, ctx.names[reference])
        reference_vertices, reference_faces = mesh_to_arrays(read_mesh(groomed[reference]))
        centring = translation_matrix(-np.asarray(summaries[reference]["centre"]))
        reference_aligned = apply_transform(reference_vertices, centring)
        count = len(groomed)
        alignments = _pool_map(ctx, _align_one, groomed, [reference_aligned] * count,
                               [reference_faces] * count)
        alignments[reference] = centring.tolist()
        return {"groomed": groomed, "reference": reference, "alignments": alignments}

    result = run_step(ctx, "2_groom", settings, lambda r: r["groomed"], work)
    ctx.results["groom"] = result


def _shapeworks_available() -> bool:
    try:
        import shapeworks  # noqa: F401
    except ImportError:
        return False
    return shutil.which("shapeworks") is not None


def step_correspondence(ctx: Context) -> None:
    """Step 3: ShapeWorks optimize when available, else the registration stand-in."""
    logger.info("Step 3. Correspondence: %d particles, nested coarse to fine", ctx.particles)
    if _shapeworks_available():
        _correspondence_with_shapeworks(ctx)
        return
    logger.info("  the shapeworks module is not importable: using the STAND-IN for "
                "ShapeWorks' optimizer (template in nested farthest-point order, coherent "
                "point drift, snapping onto the surface, generalized Procrustes); these are "
                "not ShapeWorks-optimized particles")
    from shapeworks_progressive.correspondence import (
        generalized_procrustes,
        template_particles,
    )
    from shapeworks_progressive.meshes import mesh_to_arrays, read_mesh
    from shapeworks_progressive.particles import write_particles
    from shapeworks_progressive.transforms import apply_transform, local_to_world

    groom = ctx.results["groom"]
    folder = ctx.path("hippocampus_particles")
    local = [str(folder / f"{n}_groomed_local.particles") for n in ctx.names]
    world = [str(folder / f"{n}_groomed_world.particles") for n in ctx.names]
    settings = {"groom": _digest(groom), "particles": ctx.particles, "seed": ctx.seed,
                "method": "template-cpd-procrustes", "alpha": 1.0, "beta": 1.0,
                "relax_iterations": 10, "version": 1}

    def work() -> dict:
        reference = groom["reference"]
        vertices, faces = mesh_to_arrays(read_mesh(groom["groomed"][reference]))
        vertices_aligned = apply_transform(vertices, np.asarray(groom["alignments"][reference]))
        template_aligned = template_particles(vertices_aligned, faces, ctx.particles)
        count = len(ctx.names)
        seeds = [ctx.seed * 100003 + i for i in range(count)]
        found = _pool_map(ctx, _correspond_one, [template_aligned] * count, groom["groomed"],
                          groom["alignments"], seeds, [settings] * count)
        particles_aligned = np.stack([f["particles_aligned"] for f in found])
        procrustes, _ = generalized_procrustes(particles_aligned)
        for i in range(count):
            particles_local = found[i]["particles_local"]
            particles_world = local_to_world(particles_local, np.asarray(groom["alignments"][i]),
                                             procrustes[i])
            write_particles(local[i], particles_local)
            write_particles(world[i], particles_world)
        snaps = [f["snap_distance_mean"] for f in found]
        logger.info("  CPD result to surface before snapping: mean %.3f mm", float(np.mean(snaps)))
        return {"local": local, "world": world, "procrustes": procrustes.tolist(),
                "method": "stand-in", "snap_distance_mean": float(np.mean(snaps))}

    ctx.results["correspondence"] = run_step(ctx, "3_correspondence", settings,
                                             lambda r: r["local"] + r["world"], work)


def _optimize_parameters(particles: int) -> dict:
    """ShapeWorks optimize settings for a multiscale (coarse-to-fine) model."""
    return {"number_of_particles": particles, "multiscale": True,
            "multiscale_particles": PREFIX_SIZES[0], "use_normals": "0",
            "procrustes": True, "procrustes_scaling": False,
            "procrustes_rotation_translation": True, "procrustes_interval": 10,
            "iterations_per_split": 1000, "optimization_iterations": 1000,
            "starting_regularization": 1000, "ending_regularization": 10,
            "relative_weighting": 1, "initial_relative_weighting": 0.05,
            "save_init_splits": True}


def _correspondence_with_shapeworks(ctx: Context) -> None:
    """Run ``shapeworks optimize`` on the groomed project (ShapeWorks installed only)."""
    logger.info("  shapeworks is available: running its optimizer (multiscale)")
    project_path = write_project(ctx, with_particles=False)
    command = ["shapeworks", "optimize", "--name", str(project_path)]
    subprocess.run(command, check=True, cwd=project_path.parent)
    from shapeworks_progressive.project import Project

    project = Project.load(project_path)
    ctx.results["correspondence"] = {
        "local": [str(s.local_particles[0]) for s in project.subjects],
        "world": [str(s.world_particles[0]) for s in project.subjects],
        "procrustes": [s.procrustes_transform(0).tolist() for s in project.subjects],
        "method": "shapeworks",
    }


def step_split(ctx: Context) -> None:
    """Step 4: seeded train/val/test split, then write the project."""
    logger.info("Step 4. Split: seeded train/val/test column, project file")
    count = len(ctx.names)
    settings = {"names": ctx.names, "seed": ctx.seed, "fractions": ctx.split_fractions}

    def work() -> dict:
        rng = np.random.default_rng(ctx.seed)
        order = rng.permutation(count)
        n_val = max(1, round(ctx.split_fractions[1] * count))
        n_test = max(1, round(ctx.split_fractions[2] * count))
        split = ["train"] * count
        for i in order[:n_val]:
            split[int(i)] = "val"
        for i in order[n_val:n_val + n_test]:
            split[int(i)] = "test"
        return {"split": split}

    result = run_step(ctx, "4_split", settings, lambda r: [], work)
    ctx.results["split"] = result["split"]
    counts = {name: ctx.results["split"].count(name) for name in ("train", "val", "test")}
    logger.info("  train %(train)d, val %(val)d, test %(test)d", counts)
    path = write_project(ctx, with_particles=True)
    logger.info("  project: %s", path)


def write_project(ctx: Context, *, with_particles: bool) -> Path:
    """Write ``<out>/hippocampus.swproj`` from the step results (atomic)."""
    from shapeworks_progressive.project import Project, Subject

    project_path = ctx.path(PROJECT_NAME)
    project = Project.new(project_path)
    shapes = ctx.results["shapes"]
    groom = ctx.results["groom"]
    corr = ctx.results.get("correspondence") if with_particles else None
    split = ctx.results.get("split")
    for i, name in enumerate(ctx.names):
        subject = Subject(name=name, shapes=[Path(shapes["meshes"][i])],
                          groomed=[Path(groom["groomed"][i])],
                          alignments=[np.asarray(groom["alignments"][i])],
                          images={"mri": Path(ctx.images[i])})
        if corr is not None:
            subject.local_particles = [Path(corr["local"][i])]
            subject.world_particles = [Path(corr["world"][i])]
            subject.procrustes = [np.asarray(corr["procrustes"][i])]
        if split is not None:
            subject.extra["split"] = split[i]
        project.add_subject(subject)
    project.set_parameters("groom", {"1": {
        "alignment_enabled": True, "alignment_method": "Iterative Closest Point",
        "alignment_reference": groom["reference"],
        "alignment_reference_chosen": groom["reference"], "convert_to_mesh": True,
        "isolate": True, "pad": True, "pad_value": 3, "mesh_smooth": True,
        "mesh_smoothing_method": "vtk_windowed_sinc",
        "mesh_smoothing_vtk_windowed_sinc_iterations": 15,
        "mesh_smoothing_vtk_windowed_sinc_passband": 0.1}})
    project.set_parameters("optimize", _optimize_parameters(ctx.particles))
    fractions = [round(100 * f) for f in ctx.split_fractions]
    project.set_parameters("deepssm", {"training_split": fractions[0],
                                       "validation_split": fractions[1],
                                       "testing_split": fractions[2]})
    method = (corr or {}).get("method", "none")
    note = ("particles from the shapeworks_progressive stand-in for ShapeWorks' optimizer: "
            "template in nested farthest-point order, deformable coherent point drift "
            "(pycpd), snapping onto each groomed surface, tangential relaxation, "
            "generalized Procrustes (rotation+translation)") if method == "stand-in" else (
            "particles from ShapeWorks' optimizer" if method == "shapeworks" else "")
    project.set_parameters("shapeworks_progressive", {
        "use_case": "hippocampus", "correspondence_method": method, "note": note,
        "particle_order": "nested coarse to fine",
        "prefix_sizes": " ".join(str(s) for s in PREFIX_SIZES if s <= ctx.particles),
        "segmentations": "shapes/<name>_segmentation.nii.gz (largest component, label > 0)",
        "seed": ctx.seed})
    return project.save()


def step_quality(ctx: Context) -> None:
    """Step 5: particle-to-surface distance, prefix coverage, PCA compactness."""
    from shapeworks_progressive.fileio import atomic_write_text
    from shapeworks_progressive.project import Project

    logger.info("Step 5. Correspondence quality report")
    project_path = ctx.path(PROJECT_NAME)
    settings = {"project": _digest(ctx.results["correspondence"]),
                "split": ctx.results["split"], "version": 1}
    json_path = ctx.path("quality", "quality.json")
    markdown_path = ctx.path("quality", "quality.md")

    def work() -> dict:
        project = Project.load(project_path)
        report = quality_report(project, ctx)
        atomic_write_text(json_path, json.dumps(report, indent=1) + "\n")
        atomic_write_text(markdown_path, quality_markdown(report))
        return report

    report = run_step(ctx, "5_quality", settings,
                      lambda r: [str(json_path), str(markdown_path)], work)
    logger.info("  particle to surface: mean %.2e mm, max %.2e mm",
                report["surface_distance_mean_mm"], report["surface_distance_max_mm"])
    for size, value in report["prefix_coverage_mm"].items():
        logger.info("  coverage of the first %s particles: mean %.2f mm, worst %.2f mm", size,
                    value["mean"], value["max"])
    logger.info("  compactness: %d PCA modes for 95%% of the variance (%d subjects)",
                report["compactness"]["modes"], report["subjects"])
    logger.info("  report: %s", markdown_path)


def _quality_one(local: str, groomed: str, sizes: tuple) -> dict:
    from shapeworks_progressive.meshes import mesh_to_arrays, read_mesh
    from shapeworks_progressive.particles import read_particles
    from shapeworks_progressive.quality import (
        coincident_particles,
        prefix_coverage,
        surface_distances,
    )

    particles_local = read_particles(local)
    vertices, faces = mesh_to_arrays(read_mesh(groomed))
    distances = surface_distances(particles_local, vertices, faces)
    return {"distance_mean": float(distances.mean()), "distance_max": float(distances.max()),
            "coverage": prefix_coverage(particles_local, vertices, list(sizes)),
            "coincident": coincident_particles(particles_local)}


def quality_report(project, ctx: Context) -> dict:
    """Quality figures of a project's particles (JSON-able dict)."""
    from shapeworks_progressive.particles import read_particles
    from shapeworks_progressive.quality import pca_compactness
    from shapeworks_progressive.transforms import local_to_world

    subjects = project.subjects
    count = len(read_particles(subjects[0].local_particles[0]))
    sizes = tuple(s for s in PREFIX_SIZES if s < count) + (count,)
    per_subject = _pool_map(ctx, _quality_one, [str(s.local_particles[0]) for s in subjects],
                            [str(s.groomed[0]) for s in subjects], [sizes] * len(subjects))
    particles_world = np.stack([read_particles(s.world_particles[0]) for s in subjects])
    consistency = max(
        float(np.abs(local_to_world(read_particles(s.local_particles[0]), s.alignment(0),
                                    s.procrustes_transform(0)) - w).max())
        for s, w in zip(subjects, particles_world))
    coverage = {}
    for size in sizes:
        values = np.array([p["coverage"][size] for p in per_subject])
        coverage[str(size)] = {"mean": float(values.mean()), "max": float(values.max())}
    train = [i for i, s in enumerate(subjects) if s.split == "train"]
    return {
        "subjects": len(subjects), "particles": count,
        "method": project.parameters("shapeworks_progressive").get("correspondence_method"),
        "surface_distance_mean_mm": float(np.mean([p["distance_mean"] for p in per_subject])),
        "surface_distance_max_mm": float(np.max([p["distance_max"] for p in per_subject])),
        "world_file_consistency_max_mm": consistency,
        "coincident_particles_total": int(sum(p["coincident"] for p in per_subject)),
        "prefix_coverage_mm": coverage,
        "compactness": pca_compactness(particles_world),
        "compactness_train": pca_compactness(particles_world[train]) if len(train) > 1 else None,
        "per_subject": {s.name: p for s, p in zip(subjects, per_subject)},
    }


def quality_markdown(report: dict) -> str:
    """A short Markdown version of :func:`quality_report`."""
    lines = [
        "# Hippocampus correspondence quality", "",
        f"{report['subjects']} subjects, {report['particles']} particles, "
        f"method: {report['method']}.", "",
        f"- Particle to groomed surface: mean {report['surface_distance_mean_mm']:.2e} mm, "
        f"max {report['surface_distance_max_mm']:.2e} mm",
        f"- World files vs procrustes @ alignment @ local: max "
        f"{report['world_file_consistency_max_mm']:.2e} mm",
        f"- Coincident particles (closer than 1e-3 mm), all subjects: "
        f"{report['coincident_particles_total']}",
        f"- PCA compactness: {report['compactness']['modes']} modes for 95% of the variance",
        "", "| prefix | coverage mean (mm) | coverage worst (mm) |", "|---|---|---|",
    ]
    for size, value in report["prefix_coverage_mm"].items():
        lines.append(f"| {size} | {value['mean']:.2f} | {value['max']:.2f} |")
    lines += ["", "Coverage: largest distance from a surface vertex to the nearest particle "
              "of the prefix, per subject.", ""]
    return "\n".join(lines)


STEPS: list[Callable[[Context], None]] = [
    step_original_shapes,
    step_groom,
    step_correspondence,
    step_split,
    step_quality,
]


# --------------------------------------------------------------------------------------
# Step 6: train, predict the test split, evaluate (``shapeworks-progressive run``)

# Sized for this 2-core CPU machine: the default demo (154 training subjects, 1.5 mm grid,
# about 9.5 s per epoch on an idle machine) trains 72 epochs in about 11 minutes, so that
# preparation, training, prediction and evaluation take about 15 minutes on a clean clone;
# --tiny trains 10 small epochs in seconds. The model and augmentation settings are the
# package defaults, written out so the run folder's name (a digest of this config) changes
# with them.
RUN_CONFIG = {
    "data": {"spacing": 1.5, "padding_mm": 10.0, "scales": None},
    "model": {"shape_modes": 20, "pose": True},
    "schedule": {"progressive": True, "epochs_per_stage": 12, "final_epochs": 36},
    "augment": {"rotation_deg": 15.0, "translation_mm": 3.0},
    "run": {"device": "auto"},
}
RUN_CONFIG_TINY = {
    "data": {"spacing": 2.0, "padding_mm": 10.0, "scales": None},
    "model": {"channels": 4, "levels": 3, "head_hidden": 32, "global_hidden": 64},
    "schedule": {"progressive": True, "epochs_per_stage": 2, "final_epochs": 4},
    "optim": {"batch_size": 4},
    "run": {"device": "auto"},
}


def run_demo(project_path: Path, *, tiny: bool = False, seed: int = 0,
             progress: bool = True) -> int:
    """Step 6: ``shapeworks-progressive run`` on the prepared project.

    The run folder ``<project folder>/runs/<tiny|default>_<digest>`` is named by the
    config and the project file, so a re-run with both unchanged resumes (or reuses) the
    finished training and only predicts and evaluates again.
    """
    from shapeworks_progressive.cli import main as cli_main
    from shapeworks_progressive.fileio import atomic_write_text

    logger.info("Step 6. Train, predict the test split, evaluate (shapeworks-progressive run)")
    config = json.loads(json.dumps(RUN_CONFIG_TINY if tiny else RUN_CONFIG))
    config.setdefault("run", {})["seed"] = seed
    project_path = Path(project_path).resolve()
    project_digest = hashlib.sha256(project_path.read_bytes()).hexdigest()
    label = "tiny" if tiny else "default"
    run_dir = project_path.parent / "runs" / f"{label}_{_digest([config, project_digest])}"
    config_path = run_dir.parent / f"{run_dir.name}_config.json"
    atomic_write_text(config_path, json.dumps(config, indent=2) + "\n")
    argv = ["run", str(project_path), "--config", str(config_path), "--out", str(run_dir)]
    if (run_dir / "last.pt").is_file():
        logger.info("  continuing the run in %s (same config and project)", run_dir)
        argv.append("--resume")
    if not progress:
        argv.append("--no-progress")
    return cli_main(argv)


# --------------------------------------------------------------------------------------
# Entry points


def find_subjects(data: Path, limit: int | None) -> tuple[list, list, list]:
    """Names, image paths and label paths of the data set, sorted by name."""
    images_dir, labels_dir = data / "imagesTr", data / "labelsTr"
    if not labels_dir.is_dir():
        raise FileNotFoundError(f"no labelsTr folder in {data.resolve()}; pass --data DIR")
    labels = sorted(labels_dir.glob("*.nii.gz"))
    if limit is not None:
        labels = labels[:limit]
    names = [p.name[: -len(".nii.gz")] for p in labels]
    images = [images_dir / p.name for p in labels]
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) missing, e.g. {missing[0]}")
    return names, images, labels


def prepare(out: Path = DEFAULT_OUT, data: Path = DEFAULT_DATA, tiny: bool = False, *,
            particles: int = 1024, seed: int = 0, workers: int = 2,
            subjects: int | None = None, steps: list | None = None) -> Path:
    """Run the preparation steps (1 to 5) and return the project's path.

    ``subjects`` limits the number of subjects (``tiny`` means 12).
    """
    limit = subjects if subjects is not None else (TINY_SUBJECTS if tiny else None)
    ctx = Context(data=Path(data).resolve(), out=Path(out).resolve(), tiny=tiny,
                  particles=particles, seed=seed, workers=workers, subjects=limit)
    ctx.names, ctx.images, ctx.labels = find_subjects(ctx.data, limit)
    ctx.out.mkdir(parents=True, exist_ok=True)
    logger.info("Hippocampus use case: %d subjects from %s into %s", len(ctx.names), ctx.data,
                ctx.out)
    start = time.perf_counter()
    for step in steps or STEPS:
        step(ctx)
    logger.info("Preparation finished in %.1f s", time.perf_counter() - start)
    return ctx.path(PROJECT_NAME)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true",
                        help=f"use only {TINY_SUBJECTS} subjects (a quick check)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder with imagesTr/ and labelsTr/ (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default: {DEFAULT_OUT}; with --tiny or "
                             f"--subjects N, {DEFAULT_OUT.name}_tiny or "
                             f"{DEFAULT_OUT.name}_N beside it, so a quick check never "
                             f"replaces the full project)")
    parser.add_argument("--particles", type=int, default=1024,
                        help="number of particles (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes for per-subject work (default: %(default)s)")
    parser.add_argument("--subjects", type=int, default=None,
                        help="use only the first N subjects")
    parser.add_argument("--prepare-only", action="store_true",
                        help="stop after preparing the project (no training)")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = default_out(args.tiny, args.subjects)
    return args


def default_out(tiny: bool = False, subjects: int | None = None) -> Path:
    """The output folder when ``--out`` is not given: one per subject set.

    The full set goes to ``output/hippocampus``; ``--subjects N`` to
    ``output/hippocampus_N`` and ``--tiny`` to ``output/hippocampus_tiny``, so a smaller
    run never rewrites the full project that the benchmarks read.
    """
    if subjects is not None:
        return DEFAULT_OUT.with_name(f"{DEFAULT_OUT.name}_{subjects}")
    if tiny:
        return DEFAULT_OUT.with_name(f"{DEFAULT_OUT.name}_tiny")
    return DEFAULT_OUT


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S")
    if args.particles < 1 or math.log2(args.particles) % 1:
        logger.warning("--particles %d is not a power of two; ShapeWorks would round it up",
                       args.particles)
    project_path = prepare(args.out, args.data, args.tiny, particles=args.particles,
                           seed=args.seed, workers=args.workers, subjects=args.subjects)
    if args.prepare_only:
        return 0
    return run_demo(project_path, tiny=args.tiny, seed=args.seed)


if __name__ == "__main__":
    sys.exit(main())
