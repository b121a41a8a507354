"""Every check ``shapeworks-progressive info`` runs on a project, all problems at once.

:func:`validate_project` never stops at the first problem: it returns a
:class:`ValidationReport` listing each one with the subject and the file it concerns,
plus a summary (particle counts per domain, image geometry, splits).

Problems (the project cannot be used as it is):

- a file named in the project is missing (shape, groomed, particles, image);
- a particle file is empty, malformed, or holds NaN/Inf;
- particle files of one domain hold different numbers of particles;
- a subject has no world particle file while others have one (excluded rows aside);
- world particles disagree with ``procrustes @ alignment @ local`` by more than
  ``max(world_tolerance_mm, world_tolerance_relative * max|world|)``. ShapeWorks writes
  particles and transforms with 6 significant digits, which gives differences up to
  about 6e-4 mm on the left-atrium example; the default 1e-3 mm / 1e-5 relative accepts
  that and rejects any real disagreement;
- a transform whose last row is not ``0 0 0 1`` or that cannot be inverted.

Notes (reported, not rejected): images whose spacing or direction differs from the
most common one, or whose pixel type has several components.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ParticleFileError, ProjectValidationError
from .particles import read_particles
from .project import Project
from .transforms import local_to_world

__all__ = ["Problem", "ImageInfo", "ValidationReport", "validate_project", "read_image_info",
           "warn_if_invalid"]

logger = logging.getLogger(__name__)


@dataclass
class Problem:
    """One problem: what is wrong, with the subject and the file it concerns."""

    message: str
    subject: str | None = None
    file: Path | None = None
    kind: str = "problem"

    def __str__(self) -> str:
        parts = []
        if self.subject is not None:
            parts.append(f"subject {self.subject!r}")
        if self.file is not None:
            parts.append(str(self.file))
        prefix = ", ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


@dataclass
class ImageInfo:
    """Geometry of one image, read from its header only.

    ``size`` is in voxels (x, y, z), ``spacing`` and ``origin`` in mm, ``direction`` the
    row-major 3x3 direction cosines, all as SimpleITK reports them (LPS world frame).
    """

    subject: str
    name: str
    path: Path
    size: tuple
    spacing: tuple
    origin: tuple
    direction: tuple
    pixel_type: str
    components: int = 1


@dataclass
class ValidationReport:
    """The result of :func:`validate_project`.

    Attributes
    ----------
    problems : list of Problem
        Everything that makes the project unusable; empty when it is fine.
    notes : list of Problem
        Oddities worth a look that are not errors (unusual image geometry).
    particle_counts : dict of str to int or None
        Particles per domain (the most common count; ``None`` without particles).
    world_max_difference_mm : dict of str to float
        Per domain, the largest ``|world - procrustes @ alignment @ local|`` (mm).
    images : list of ImageInfo
    splits : dict of str to int
        Subjects per ``split`` value (``"(none)"`` for rows without one).
    """

    project: Project
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    particle_counts: dict = field(default_factory=dict)
    world_max_difference_mm: dict = field(default_factory=dict)
    images: list = field(default_factory=list)
    splits: dict = field(default_factory=dict)
    world_tolerance_mm: float = 1e-3
    world_tolerance_relative: float = 1e-5

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_problems(self) -> None:
        """Raise :class:`ProjectValidationError` listing every problem, if any."""
        if self.problems:
            raise ProjectValidationError([str(p) for p in self.problems])


def read_image_info(path: Path) -> dict:
    """Header-only geometry of an image file (no voxel data is read)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return {
        "size": tuple(int(v) for v in reader.GetSize()),
        "spacing": tuple(float(v) for v in reader.GetSpacing()),
        "origin": tuple(float(v) for v in reader.GetOrigin()),
        "direction": tuple(float(v) for v in reader.GetDirection()),
        "pixel_type": sitk.GetPixelIDValueAsString(reader.GetPixelID()),
        "components": int(reader.GetNumberOfComponents()),
    }


def validate_project(project: Project, *, check_images: bool = True,
                     world_tolerance_mm: float = 1e-3,
                     world_tolerance_relative: float = 1e-5) -> ValidationReport:
    """Check a project's files and particles; collect every problem.

    Parameters
    ----------
    project : Project
    check_images : bool, default: True
        Read each image's header (size, spacing, origin, direction).
    world_tolerance_mm : float, default: 1e-3
        Absolute tolerance (mm) for world vs ``procrustes @ alignment @ local``.
    world_tolerance_relative : float, default: 1e-5
        Relative tolerance, times the largest world coordinate magnitude of the subject.

    Returns
    -------
    ValidationReport
    """
    report = ValidationReport(project=project, world_tolerance_mm=world_tolerance_mm,
                              world_tolerance_relative=world_tolerance_relative)
    problems = report.problems
    if not project.subjects:
        problems.append(Problem("the project has no subjects", file=project.path))

    # files named by the project
    for subject in project.subjects:
        for attr, what in (("shapes", "shape"), ("groomed", "groomed file")):
            for domain, path in zip(project.domains, getattr(subject, attr)):
                if path is not None and not Path(path).exists():
                    problems.append(Problem(f"{what} of domain {domain!r} is missing",
                                            subject.name, path, "missing"))
        _check_transforms(subject, project.domains, problems)

    # particles, per domain
    for index, domain in enumerate(project.domains):
        _check_domain_particles(project, index, domain, report)

    # images
    if check_images:
        _check_images(project, report)

    counts = Counter(subject.split or "(none)" for subject in project.subjects)
    report.splits = dict(sorted(counts.items()))
    for problem in problems:
        logger.debug("problem: %s", problem)
    return report


def warn_if_invalid(project: Project, *, most: int = 3) -> ValidationReport:
    """Log a warning when ``info`` would reject the project; go on regardless.

    Training and evaluation use the world particles and the alignment/Procrustes
    transforms; a project whose world particles disagree with its local particles and
    transforms (as in some ShapeWorks examples) can still train, but its errors may be
    measured in the wrong place, so the user is told before any long work. Images are not
    read here (training checks them itself).
    """
    report = validate_project(project, check_images=False)
    if report.problems:
        shown = "; ".join(str(p) for p in report.problems[:most])
        more = (f" (and {len(report.problems) - most} more)"
                if len(report.problems) > most else "")
        logger.warning("%s: `shapeworks-progressive info` finds %d problem(s) in this "
                       "project, so its results may be off: %s%s", project.path,
                       len(report.problems), shown, more)
    return report


def _check_transforms(subject, domains, problems) -> None:
    for attr, column in (("alignments", "alignment"), ("procrustes", "procrustes")):
        for domain, matrix in zip(domains, getattr(subject, attr)):
            if matrix is None:
                continue
            matrix = np.asarray(matrix, dtype=float)
            if not np.allclose(matrix[3], [0, 0, 0, 1], atol=1e-9):
                problems.append(Problem(f"{column}_{domain} has last row {matrix[3].tolist()}, "
                                        "expected 0 0 0 1", subject.name, kind="transform"))
            elif abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
                problems.append(Problem(f"{column}_{domain} cannot be inverted (determinant 0)",
                                        subject.name, kind="transform"))


def _read_checked(path: Path, subject: str, frame: str, domain: str, problems: list):
    """Read a particle file; add a problem and return None when it is unusable."""
    if not Path(path).exists():
        problems.append(Problem(f"{frame} particle file of domain {domain!r} is missing",
                                subject, path, "missing"))
        return None
    try:
        particles = read_particles(path)
    except ParticleFileError as err:
        kind = "empty" if "empty" in str(err) else "particles"
        problems.append(Problem(f"{frame} particles of domain {domain!r}: {err}", subject,
                                path, kind))
        return None
    bad = ~np.all(np.isfinite(particles), axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        problems.append(Problem(f"{frame} particles hold NaN or Inf in {len(rows)} of "
                                f"{len(particles)} rows (rows {shown})", subject, path,
                                "nonfinite"))
        return None
    return particles


def _check_domain_particles(project: Project, index: int, domain: str,
                            report: ValidationReport) -> None:
    problems = report.problems
    counts: list[tuple[str, Path, int]] = []
    have_world = [s for s in project.subjects
                  if index < len(s.world_particles) and s.world_particles[index] is not None]
    max_difference = 0.0
    for subject in project.subjects:
        local_path = subject.local_particles[index] if index < len(
            subject.local_particles) else None
        world_path = subject.world_particles[index] if index < len(
            subject.world_particles) else None
        if world_path is None:
            if have_world and not subject.excluded:
                problems.append(Problem(f"no world particle file for domain {domain!r} while "
                                        f"{len(have_world)} other subject(s) have one",
                                        subject.name, kind="missing"))
            continue
        world = _read_checked(world_path, subject.name, "world", domain, problems)
        local = None
        if local_path is not None:
            local = _read_checked(local_path, subject.name, "local", domain, problems)
        if world is not None:
            counts.append((subject.name, Path(world_path), len(world)))
        if local is not None:
            counts.append((subject.name, Path(local_path), len(local)))
        if world is None or local is None:
            continue
        if len(world) != len(local):
            continue  # reported by the count check below
        expected = local_to_world(local, subject.alignment(index),
                                  subject.procrustes_transform(index))
        distances = np.linalg.norm(expected - world, axis=1)
        worst = int(np.argmax(distances))
        max_difference = max(max_difference, float(distances[worst]))
        tolerance = max(report.world_tolerance_mm,
                        report.world_tolerance_relative * float(np.abs(world).max()))
        if distances[worst] > tolerance:
            message = (f"world particles disagree with procrustes @ alignment @ local "
                       f"({Path(local_path).name}) by up to {distances[worst]:.3g} mm "
                       f"(particle {worst}; tolerance {tolerance:.2g} mm)")
            problems.append(Problem(message, subject.name, world_path, "world"))
    report.world_max_difference_mm[domain] = max_difference
    if not counts:
        report.particle_counts[domain] = None
        return
    common, _ = Counter(n for _, _, n in counts).most_common(1)[0]
    report.particle_counts[domain] = common
    for name, path, n in counts:
        if n != common:
            problems.append(Problem(f"holds {n} particles for domain {domain!r}, while "
                                    f"the other particle files hold {common}", name, path,
                                    "count"))


def _check_images(project: Project, report: ValidationReport) -> None:
    for subject in project.subjects:
        for name, path in subject.images.items():
            if path is None:
                continue
            if not Path(path).exists():
                report.problems.append(Problem(f"image {name!r} is missing", subject.name,
                                               path, "missing"))
                continue
            try:
                info = read_image_info(path)
            except RuntimeError as err:
                first_line = str(err).strip().splitlines()[-1] if str(err).strip() else ""
                report.problems.append(Problem(f"image {name!r} cannot be read: {first_line}",
                                               subject.name, path, "image"))
                continue
            report.images.append(ImageInfo(subject=subject.name, name=name, path=Path(path),
                                           **info))
    if not report.images:
        return
    spacing_mode = Counter(_rounded(i.spacing, 4) for i in report.images).most_common(1)[0][0]
    direction_mode = Counter(_rounded(i.direction, 3) for i in report.images
                             ).most_common(1)[0][0]
    for info in report.images:
        spacing = np.asarray(info.spacing)
        if not np.allclose(spacing, spacing_mode, rtol=0.01):
            report.notes.append(Problem(
                f"image {info.name!r} has spacing {_fmt(info.spacing)} mm unlike most images "
                f"({_fmt(spacing_mode)} mm); it will be resampled", info.subject, info.path,
                "geometry"))
        if not np.allclose(info.direction, direction_mode, atol=1e-3):
            report.notes.append(Problem(
                f"image {info.name!r} has direction {_fmt(info.direction)} unlike most images "
                f"({_fmt(direction_mode)})", info.subject, info.path, "geometry"))
        if info.components != 1:
            report.notes.append(Problem(
                f"image {info.name!r} has {info.components} components per voxel",
                info.subject, info.path, "geometry"))


def _rounded(values, digits: int) -> tuple:
    return tuple(round(float(v), digits) for v in values)


def _fmt(values) -> str:
    return " x ".join(f"{float(v):g}" for v in values)
