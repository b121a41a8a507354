"""``shapeworks-progressive info PROJECT``: summarise and validate a ShapeWorks project.

Exit status: 0 when the project is usable, 1 when problems were found (all of them are
listed, each naming the subject and the file), 2 when the project cannot be read.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

__all__ = ["add_parser", "run", "format_report"]

#: At most this many image lines are listed one by one; beyond, a summary is printed.
MAX_IMAGE_LINES = 10


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "info",
        help="summarise a ShapeWorks project and list every problem in it",
        description=(
            "Load a ShapeWorks project (.swproj or .xlsx), check every file it names "
            "and print a summary: subjects, domains, particles per domain, images, "
            "splits. Exits 1 and lists all problems when something is wrong, 2 when "
            "the project cannot be read."
        ),
    )
    parser.add_argument("project", type=Path, help="the .swproj or .xlsx project file")
    parser.add_argument("--no-images", dest="check_images", action="store_false",
                        help="do not read image headers")
    parser.add_argument("--tolerance-mm", type=float, default=1e-3,
                        help="allowed |world - procrustes.alignment.local| in mm "
                             "(default: 1e-3; at least 1e-5 of the coordinates)")
    parser.set_defaults(func=run)
    return parser


def run(args) -> int:
    from ..project import Project
    from ..validation import validate_project

    project = Project.load(args.project)
    report = validate_project(project, check_images=args.check_images,
                              world_tolerance_mm=args.tolerance_mm)
    print(format_report(report))
    return 0 if report.ok else 1


def format_report(report) -> str:
    """The text ``info`` prints for a :class:`ValidationReport`."""
    project = report.project
    subjects = project.subjects
    lines = [f"project: {project.path}"]
    excluded = sum(s.excluded for s in subjects)
    fixed = sum(s.fixed for s in subjects)
    lines.append(f"subjects: {len(subjects)}"
                 + (f" ({excluded} excluded, {fixed} fixed)" if excluded or fixed else ""))
    lines.append(f"domains: {', '.join(project.domains)}")
    for domain in project.domains:
        count = report.particle_counts.get(domain)
        difference = report.world_max_difference_mm.get(domain)
        text = "none" if count is None else str(count)
        extra = (f"; world vs procrustes.alignment.local: max {difference:.2g} mm"
                 if count is not None and difference is not None else "")
        lines.append(f"particles in domain {domain}: {text}{extra}")
    groups = sorted({g for s in subjects for g in s.groups})
    if groups:
        lines.append(f"groups: {', '.join(groups)}")
    lines.extend(_image_lines(report, subjects))
    lines.append("splits: " + ", ".join(f"{k} {v}" for k, v in report.splits.items()))
    if report.notes:
        lines.append(f"notes ({len(report.notes)}):")
        lines.extend(f"  - {note}" for note in report.notes)
    if report.problems:
        lines.append(f"{len(report.problems)} problem(s):")
        lines.extend(f"  - {problem}" for problem in report.problems)
    else:
        lines.append("problems: none")
    return "\n".join(lines)


def _image_lines(report, subjects) -> list[str]:
    with_image = sum(1 for s in subjects if s.image is not None)
    if not with_image:
        return ["images: none"]
    names = Counter(name for s in subjects for name, p in s.images.items() if p is not None)
    lines = [f"images: {with_image} of {len(subjects)} subjects ("
             + ", ".join(f"{n} {c}" for n, c in names.items()) + ")"]
    infos = report.images
    if not infos:
        return lines
    if len(infos) <= MAX_IMAGE_LINES:
        for info in infos:
            lines.append(f"  {info.subject} {info.name}: size {_join(info.size)}, "
                         f"spacing {_join(info.spacing)} mm, {info.pixel_type}")
        return lines
    size_min = [min(i.size[a] for i in infos) for a in range(len(infos[0].size))]
    size_max = [max(i.size[a] for i in infos) for a in range(len(infos[0].size))]
    spacings = Counter(tuple(round(v, 4) for v in i.spacing) for i in infos)
    lines.append(f"  size {_join(size_min)} to {_join(size_max)} voxels")
    lines.append("  spacing (mm): " + ", ".join(f"{_join(s)} ({c})"
                                               for s, c in spacings.most_common(3))
                 + (", ..." if len(spacings) > 3 else ""))
    types = Counter(i.pixel_type for i in infos)
    lines.append("  pixel type: " + ", ".join(f"{t} ({c})" for t, c in types.items()))
    return lines


def _join(values) -> str:
    return " x ".join(f"{v:g}" for v in values)
