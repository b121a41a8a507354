"""Markdown report of an evaluation, with PNG figures (matplotlib, Agg, no display).

:func:`write_report` reads what :func:`~shapeworks_progressive.evaluation.evaluate_predictions`
wrote (``evaluation.csv``, ``summary.json``, ``meshes/``) and, when given the run folder,
its ``train_log.csv``, and writes ``report.md`` plus ``figures/*.png`` beside them:

- error per scale (particle RMSE, surface distance of the prediction and of the floor);
- finest-scale surface distance per subject, with the floor;
- training curves (every ``*rmse*``/``*err*`` and ``*loss*`` column against the epoch);
- the best, median and worst subjects' predicted meshes coloured by ``deepssm_error``
  (mm), two views each, rendered with matplotlib's 3D polygons (works headless).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from .fileio import atomic_path, atomic_write_text

__all__ = ["write_report", "plot_error_per_scale", "plot_error_per_subject",
           "plot_training_curves", "render_error_mesh"]

logger = logging.getLogger(__name__)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", bbox_inches="tight")
    return path


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]


def plot_error_per_scale(rows: list[dict], path: str | os.PathLike) -> Path:
    """Mean +- std over subjects, per scale: particle RMSE, surface distance and floor."""
    scales = sorted({int(r["scale"]) for r in rows})
    figure = _figure(7.5, 4.0)
    axes = figure.add_subplot(1, 1, 1)
    series = (("particle_rmse_mm", "particle RMSE", "o-"),
              ("surface_mean_mm", "surface distance (prediction)", "s-"),
              ("floor_surface_mean_mm", "surface distance (floor: true particles)", "^--"))
    for key, label, style in series:
        means, stds = [], []
        for size in scales:
            values = _finite([r[key] for r in rows if int(r["scale"]) == size])
            means.append(values.mean() if values.size else math.nan)
            stds.append(values.std() if values.size else math.nan)
        if np.isfinite(means).any():
            axes.errorbar(scales, means, yerr=stds, fmt=style, capsize=3, label=label)
    axes.set_xscale("log", base=2)
    axes.set_xticks(scales)
    axes.set_xticklabels([str(s) for s in scales])
    axes.set_xlabel("particles (scale)")
    axes.set_ylabel("mm")
    axes.set_title("Error per scale (mean ± std over subjects, each scan's own frame)")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, Path(path))


def plot_error_per_subject(rows: list[dict], path: str | os.PathLike) -> Path:
    """Finest-scale symmetric surface distance per subject, with its floor."""
    finest = [r for r in rows if r["is_finest"]]
    finest.sort(key=lambda r: (math.inf if not math.isfinite(r["surface_mean_mm"])
                               else r["surface_mean_mm"]))
    names = [str(r["subject"]) for r in finest]
    figure = _figure(max(6.0, 0.28 * len(names) + 2.0), 4.0)
    axes = figure.add_subplot(1, 1, 1)
    x = np.arange(len(names))
    axes.bar(x, [r["surface_mean_mm"] for r in finest], color="tab:blue",
             label="prediction")
    axes.plot(x, [r["floor_surface_mean_mm"] for r in finest], "k_", markersize=12,
              markeredgewidth=2, label="floor (true particles)")
    axes.set_xticks(x)
    axes.set_xticklabels(names, rotation=90, fontsize=7)
    axes.set_ylabel("symmetric mean surface distance (mm)")
    axes.set_title("Per subject, finest scale")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, Path(path))


def plot_training_curves(log_path: str | os.PathLike, path: str | os.PathLike) -> Path | None:
    """Curves of ``train_log.csv``: error columns and loss columns against the epoch.

    Returns ``None`` when the log has no usable column.
    """
    with open(log_path, newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    if not records:
        return None
    columns = list(records[0])

    def numbers(column):
        out = []
        for record in records:
            try:
                out.append(float(record[column]))
            except (TypeError, ValueError):
                out.append(math.nan)
        return np.asarray(out)

    x_name = next((c for c in columns if c.lower() == "epoch"), None)
    x = numbers(x_name) if x_name else np.arange(1, len(records) + 1, dtype=float)
    if x_name and not np.isfinite(x).all():
        x = np.arange(1, len(records) + 1, dtype=float)
    errors = [c for c in columns if ("rmse" in c.lower() or "err" in c.lower())
              and np.isfinite(numbers(c)).any()]
    losses = [c for c in columns if "loss" in c.lower() and np.isfinite(numbers(c)).any()]
    if not errors and not losses:
        return None
    figure = _figure(11.0, 4.0)
    for position, (group, title) in enumerate(((errors, "errors (mm)"), (losses, "losses"))):
        axes = figure.add_subplot(1, 2, position + 1)
        for column in group:
            values = numbers(column)
            style = "--" if column.lower().startswith("val") else "-"
            axes.plot(x, values, style, label=column)
        axes.set_xlabel(x_name or "epoch")
        axes.set_title(title)
        if group and np.nanmin([np.nanmin(numbers(c)) for c in group]) > 0:
            axes.set_yscale("log")
        axes.grid(True, alpha=0.3)
        if group:
            axes.legend(fontsize=7)
    return _save(figure, Path(path))


def render_error_mesh(mesh_path: str | os.PathLike, path: str | os.PathLike, *,
                      array: str = "deepssm_error", title: str = "",
                      vmax: float | None = None) -> Path:
    """Two views of a mesh coloured by a per-vertex array (mm), off-screen."""
    from matplotlib import cm, colormaps, colors
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    from vtkmodules.util.numpy_support import vtk_to_numpy

    from .meshes import mesh_to_arrays, read_mesh

    mesh = read_mesh(mesh_path)
    vertices, faces = mesh_to_arrays(mesh)
    data = mesh.GetPointData().GetArray(array)
    values = (vtk_to_numpy(data).astype(float) if data is not None
              else np.zeros(len(vertices)))
    face_values = values[faces].mean(axis=1)
    vmax = float(vmax if vmax is not None else max(np.percentile(values, 99), 1e-6))
    norm = colors.Normalize(vmin=0.0, vmax=vmax)
    colormap = colormaps["viridis"]
    face_colors = colormap(norm(face_values))
    # Simple lambert shading so the shape reads in a still image.
    triangles = vertices[faces]
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    center = vertices.mean(axis=0)
    extent = 0.6 * (vertices.max(axis=0) - vertices.min(axis=0)).max()
    figure = _figure(10.0, 5.0)
    figure.subplots_adjust(left=0.0, right=0.85, bottom=0.0, top=0.92, wspace=0.0)
    for position, (elevation, azimuth) in enumerate(((20, -60), (20, 120))):
        axes = figure.add_subplot(1, 2, position + 1, projection="3d")
        view = np.array([np.cos(np.deg2rad(elevation)) * np.cos(np.deg2rad(azimuth)),
                         np.cos(np.deg2rad(elevation)) * np.sin(np.deg2rad(azimuth)),
                         np.sin(np.deg2rad(elevation))])
        shade = 0.45 + 0.55 * np.abs(normals @ view)
        shaded = face_colors.copy()
        shaded[:, :3] *= shade[:, None]
        collection = Poly3DCollection(triangles, facecolors=shaded, linewidths=0)
        axes.add_collection3d(collection)
        for setter, c in zip((axes.set_xlim, axes.set_ylim, axes.set_zlim), center):
            setter(c - 0.75 * extent, c + 0.75 * extent)
        axes.view_init(elev=elevation, azim=azimuth)
        axes.set_box_aspect((1, 1, 1))
        axes.set_axis_off()
    mappable = cm.ScalarMappable(norm=norm, cmap=colormap)
    figure.colorbar(mappable, ax=figure.axes, shrink=0.7, label=f"{array} (mm)")
    if title:
        figure.suptitle(title)
    return _save(figure, Path(path))


def _find_train_log(run_dir: Path | None) -> Path | None:
    if run_dir is None:
        return None
    for candidate in (run_dir / "train_log.csv", run_dir / "model" / "train_log.csv"):
        if candidate.is_file():
            return candidate
    found = sorted(run_dir.glob("*/train_log.csv"))
    return found[0] if found else None


def _augmentation_lines(config_path: Path) -> list[str]:
    """One line on the run's augmentation (from its ``config.json``), or none without one."""
    from .config import with_defaults

    try:
        augment = with_defaults(json.loads(config_path.read_text(encoding="utf-8")))["augment"]
    except (OSError, json.JSONDecodeError, AttributeError, TypeError):
        return []
    count = int(augment["pca_samples"] or 0)
    pca = (f"{count} PCA-augmented samples ({augment['pca_sampler']} sampler, "
           f"{100 * float(augment['pca_variance']):.0f}% of the variance) added to the "
           "training subjects" if count else "no PCA augmentation")
    spatial = (f"random rotation up to {augment['rotation_deg']} degrees and translation up "
               f"to {augment['translation_mm']} mm per training image")
    return [f"Augmentation: {pca}; {spatial}.", ""]


def _fmt(stats: dict) -> str:
    if not stats or not stats.get("n"):
        return "–"
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def write_report(evaluation_dir: str | os.PathLike, *, run_dir: str | os.PathLike | None = None,
                 title: str = "Progressive DeepSSM evaluation", n_meshes: int = 3) -> Path:
    """Write ``report.md`` and its figures into ``evaluation_dir``.

    Parameters
    ----------
    evaluation_dir : path-like
        Folder written by ``evaluate_predictions``.
    run_dir : path-like, optional
        Training run folder; its ``train_log.csv`` gives the training curves.
    title : str
    n_meshes : int, default: 3
        Meshes rendered: best, median and worst subjects at the finest scale.

    Returns
    -------
    Path
        The report file.
    """
    from .evaluation import read_evaluation_csv

    evaluation_dir = Path(evaluation_dir)
    rows = read_evaluation_csv(evaluation_dir / "evaluation.csv")
    summary = json.loads((evaluation_dir / "summary.json").read_text(encoding="utf-8"))
    figures = evaluation_dir / "figures"
    lines = [f"# {title}", ""]
    lines += [f"Subjects: {summary.get('n_subjects', 0)}. All distances in mm, in each "
              f"scan's own frame; meshes warped from particles "
              f"({summary.get('warp_method')} biharmonic warp "
              f"of the template row {summary.get('template_row')}). The *floor* is the "
              "same measure for the mesh warped from the ground-truth particles.", ""]

    # Table per scale.
    lines += ["## Error per scale", "",
              "| particles | particle RMSE | surface distance | 95th pct | Hausdorff | "
              "floor surface | floor 95th pct | Dice |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for size in summary.get("scales", []):
        stats = summary["per_scale"][str(size)]
        lines.append(f"| {size} | {_fmt(stats['particle_rmse_mm'])} | "
                     f"{_fmt(stats['surface_mean_mm'])} | {_fmt(stats['surface_p95_mm'])} | "
                     f"{_fmt(stats['hausdorff_mm'])} | {_fmt(stats['floor_surface_mean_mm'])} | "
                     f"{_fmt(stats['floor_surface_p95_mm'])} | {_fmt(stats['dice'])} |")
    lines.append("")
    if rows:
        plot_error_per_scale(rows, figures / "error_per_scale.png")
        lines += ["![error per scale](figures/error_per_scale.png)", ""]

    # Per subject.
    finest = [r for r in rows if r["is_finest"]]
    if finest:
        plot_error_per_subject(rows, figures / "error_per_subject.png")
        lines += ["## Per subject (finest scale)", "",
                  "![error per subject](figures/error_per_subject.png)", "",
                  "| subject | particle RMSE | surface distance | floor | Hausdorff | Dice |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in sorted(finest, key=lambda r: str(r["subject"])):
            cells = [r[k] for k in ("particle_rmse_mm", "surface_mean_mm",
                                    "floor_surface_mean_mm", "hausdorff_mm", "dice")]
            lines.append(f"| {r['subject']} | " + " | ".join(
                "–" if not math.isfinite(v) else f"{v:.3f}" for v in cells) + " |")
        lines.append("")

    # Training curves.
    log_path = _find_train_log(Path(run_dir) if run_dir is not None else None)
    if log_path is not None:
        curves = plot_training_curves(log_path, figures / "training_curves.png")
        if curves is not None:
            lines += ["## Training", "", f"From `{log_path}`.", "",
                      *_augmentation_lines(log_path.parent / "config.json"),
                      "![training curves](figures/training_curves.png)", ""]

    # Meshes coloured by error: best, median, worst.
    measured = [r for r in finest if math.isfinite(r["surface_mean_mm"])]
    measured.sort(key=lambda r: r["surface_mean_mm"])
    if measured and n_meshes > 0:
        picks = [measured[0], measured[len(measured) // 2], measured[-1]][:n_meshes]
        seen = set()
        lines += ["## Predicted meshes coloured by error", "",
                  "Per-vertex distance to the original surface (`deepssm_error`, mm).", ""]
        for label, r in zip(("best", "median", "worst"), picks):
            if r["subject"] in seen:
                continue
            seen.add(r["subject"])
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(r["subject"]))
            mesh_path = evaluation_dir / "meshes" / safe / f"scale{r['scale']}_predicted.vtk"
            if not mesh_path.is_file():
                continue
            png = figures / f"mesh_{label}_{safe}.png"
            render_error_mesh(mesh_path, png,
                              title=f"{label}: {r['subject']} "
                                    f"({r['surface_mean_mm']:.2f} mm)")
            lines += [f"![{label} {r['subject']}](figures/{png.name})", ""]
    report = atomic_write_text(evaluation_dir / "report.md", "\n".join(lines) + "\n")
    logger.info("wrote %s", report)
    return report
