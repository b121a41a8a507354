"""Read and write ShapeWorks projects (``.swproj`` JSON or ``.xlsx``) without ShapeWorks.

A :class:`Project` holds the subjects (one :class:`Subject` per ``data`` row) and the
parameter sections (``groom``, ``optimize``, ``studio``, ``project``, ``analysis``,
``deepssm``, ...). It follows ShapeWorks' own reader and writer:

- Domains are detected from the *first* row only: the suffixes of its ``shape_``,
  ``segmentation_``, ``mesh_`` or ``contour_`` keys, else of its ``groomed_`` keys, else
  the single domain ``"1"``.
- Relative paths resolve from the folder holding the project file (never the current
  working directory); Windows backslashes are read as ``/``.
- Every value is a string. A number, boolean, list or object in ``data`` or in a flat
  section makes ShapeWorks refuse the project, so :meth:`Project.load` raises
  :class:`~shapeworks_progressive.errors.ProjectError` naming the row, key and value
  instead of guessing. ``null`` entries inside ``groom`` are skipped, as ShapeWorks does;
  a ``null`` flat section reads as empty and is written back as ``{}``.

Round trip: each subject keeps the row it was read from (``Subject.source_row``). On
save, a value whose field did not change keeps its exact text (``"./groomed/x.nrrd"``,
``"1 0 0 ..."``, legacy ``feature_`` keys); a changed value is rewritten (paths relative
to the *target* project's folder with ``/``). Unknown columns and sections are kept, so
a project read and saved unchanged has the same JSON content.

Known limits: path-valued columns that are not fields of :class:`Subject` (``contour_``,
``groomed_contour_``, ``landmarks_file_``, ``constraints_``) live in ``Subject.extra`` as
written; they are rewritten only when the project is saved into another folder.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import ProjectError
from .fileio import atomic_path, atomic_write_text
from .transforms import format_transform, parse_transform

__all__ = ["Project", "Subject", "PROJECT_SUFFIXES", "FLAT_SECTIONS", "parse_bool",
           "format_value"]

logger = logging.getLogger(__name__)

PROJECT_SUFFIXES = (".swproj", ".xlsx")
FLAT_SECTIONS = ("optimize", "studio", "project", "analysis", "deepssm")
LANDMARK_COLUMNS = ("domain", "name", "visible", "color", "comment")

SHAPE_PREFIXES = ("shape_", "segmentation_", "mesh_")
DOMAIN_PREFIXES = ("segmentation_", "shape_", "mesh_", "contour_")
GROOMED_PREFIX = "groomed_"
LOCAL_PREFIX = "local_particles_"
WORLD_PREFIX = "world_particles_"
ALIGNMENT_PREFIX = "alignment_"
PROCRUSTES_PREFIX = "procrustes_"
IMAGE_PREFIXES = ("image_", "feature_")
GROUP_PREFIX = "group_"
# Extra columns that hold paths; rewritten only when saving into another folder.
EXTRA_PATH_PREFIXES = ("contour_", "groomed_contour_", "landmarks_file_", "constraints_")


# --------------------------------------------------------------------------------------
# Values


def parse_bool(text: str | None) -> bool:
    """Read a bool as ShapeWorks does: ``true``/``false`` (any case), else ``1``/``0``.

    Any other word (``"yes"``) reads as ``False``, exactly like ShapeWorks.
    """
    value = (text or "").strip().lower()
    if value == "true":
        return True
    if value == "false":
        return False
    try:
        return int(value) != 0
    except ValueError:
        return False


def format_value(value) -> str:
    """Encode a parameter value as ShapeWorks writes it.

    ``str`` is kept, ``bool`` gives ``"true"``/``"false"``, ``int`` its decimal text,
    ``float`` six decimals (C++ ``std::to_string``), and a sequence its items joined by
    spaces (``(1.0, 1.0, 1.0)`` gives ``"1.000000 1.000000 1.000000"``).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6f}"
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (Sequence, np.ndarray)):
        return " ".join(format_value(v) for v in value)
    raise TypeError(f"cannot encode {value!r} ({type(value).__name__}) as a project value")


def _clean_path_text(text: str) -> str:
    return text.strip().replace("\\", "/")


def _resolve(text: str | None, folder: Path) -> Path | None:
    """Absolute, normalised path of a project value (``None`` for an empty value)."""
    if text is None or not text.strip():
        return None
    raw = Path(_clean_path_text(text))
    if not raw.is_absolute():
        raw = folder / raw
    return Path(os.path.normpath(raw))


def _normalize(path, folder: Path) -> Path | None:
    """A Subject path field as an absolute normalised Path (relative: from ``folder``)."""
    if path is None:
        return None
    text = os.fspath(path)
    if not text.strip():
        return None
    return _resolve(text, folder)


def _relative_text(path: Path, folder: Path) -> str:
    """Path as written in a project: relative to ``folder`` with ``/``, else absolute."""
    try:
        relative = os.path.relpath(path, folder)
    except ValueError:  # another drive on Windows
        return Path(path).as_posix()
    return PurePosixPath(*Path(relative).parts).as_posix()


def _same_matrix(a, b) -> bool:
    return np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float))


# --------------------------------------------------------------------------------------
# Subject


@dataclass(eq=False)
class Subject:
    """One subject (one ``data`` row) of a ShapeWorks project.

    Every list field has one entry per domain, in the project's domain order. Paths are
    absolute ``Path`` objects (``None`` where the row has no file); a relative path given
    here is taken relative to the project's folder, never the working directory.

    Attributes
    ----------
    name : str
        Display name (``name`` column; if empty, the stem of the first original,
        groomed or local particle file, as Studio shows it).
    shapes, groomed, local_particles, world_particles : list of Path or None
        Original shape (mesh or segmentation), groomed file (whose coordinates are the
        local frame), local and world particle files.
    alignments, procrustes : list of (4, 4) ndarray
        Forward transforms: ``world = procrustes @ alignment @ local`` (mm). An empty or
        missing column reads as the identity.
    images : dict of str to Path
        ``image_<name>`` columns (and the legacy ``feature_<name>``), in column order.
    groups : dict of str to str
        ``group_<name>`` columns.
    extra : dict of str to str
        Every other column (``split``, ``notes``, ``registration_transform``, ...).
    excluded, fixed : bool
    source_row : dict or None
        The row as read (strings). Used on save to keep unknown columns and the exact
        text of unchanged values; ``None`` for a subject built in code.
    """

    name: str = ""
    shapes: list = field(default_factory=list)
    groomed: list = field(default_factory=list)
    local_particles: list = field(default_factory=list)
    world_particles: list = field(default_factory=list)
    alignments: list = field(default_factory=list)
    procrustes: list = field(default_factory=list)
    images: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    excluded: bool = False
    fixed: bool = False
    source_row: dict | None = field(default=None, repr=False)

    @property
    def split(self) -> str | None:
        """The DeepSSM ``split`` column (``train``/``val``/``test``), or ``None``."""
        value = self.extra.get("split")
        return value.strip() if value and value.strip() else None

    @property
    def image(self) -> Path | None:
        """The first image (DeepSSM uses the first ``image_*`` column), or ``None``."""
        for path in self.images.values():
            if path is not None:
                return Path(path)
        return None

    def alignment(self, domain_index: int = 0) -> np.ndarray:
        """(4, 4) alignment transform of a domain (identity when missing)."""
        return _transform_at(self.alignments, domain_index)

    def procrustes_transform(self, domain_index: int = 0) -> np.ndarray:
        """(4, 4) Procrustes transform of a domain (identity when missing)."""
        return _transform_at(self.procrustes, domain_index)

    def world_transform(self, domain_index: int = 0) -> np.ndarray:
        """(4, 4) forward local-to-world transform ``procrustes @ alignment``."""
        return self.procrustes_transform(domain_index) @ self.alignment(domain_index)


def _transform_at(matrices: list, index: int) -> np.ndarray:
    if index < len(matrices) and matrices[index] is not None:
        return np.asarray(matrices[index], dtype=float)
    return np.eye(4)


def _padded(values: list, count: int) -> list:
    values = list(values or [])
    return values + [None] * (count - len(values))


# --------------------------------------------------------------------------------------
# Row <-> Subject


def _is_managed(key: str, domains: Sequence[str]) -> bool:
    """True when ``key`` maps to a Subject field other than ``extra``."""
    if key in ("name", "excluded", "fixed"):
        return True
    if key.startswith(IMAGE_PREFIXES + (GROUP_PREFIX,)):
        return True
    for domain in domains:
        for prefix in SHAPE_PREFIXES + (GROOMED_PREFIX, LOCAL_PREFIX, WORLD_PREFIX,
                                        ALIGNMENT_PREFIX, PROCRUSTES_PREFIX):
            if key == prefix + domain:
                return True
    return False


def _shape_key(row: Mapping[str, str], domain: str) -> str | None:
    for prefix in SHAPE_PREFIXES:
        if prefix + domain in row:
            return prefix + domain
    return None


def _row_to_subject(row: dict, domains: Sequence[str], folder: Path, where: str
                    ) -> tuple[Subject, list[str]]:
    """Parse one row; returns the subject and a list of problems (bad transforms)."""
    problems = []
    shapes, groomed, local, world, alignments, procrustes = [], [], [], [], [], []
    for domain in domains:
        key = _shape_key(row, domain)
        shapes.append(_resolve(row.get(key), folder) if key else None)
        groomed.append(_resolve(row.get(GROOMED_PREFIX + domain), folder))
        local.append(_resolve(row.get(LOCAL_PREFIX + domain), folder))
        world.append(_resolve(row.get(WORLD_PREFIX + domain), folder))
        for prefix, target in ((ALIGNMENT_PREFIX, alignments), (PROCRUSTES_PREFIX, procrustes)):
            text = row.get(prefix + domain)
            try:
                target.append(parse_transform(text))
            except ValueError as err:
                problems.append(f"{where}: column {prefix + domain!r}: {err}")
                target.append(np.eye(4))
    images, groups, extra = {}, {}, {}
    for key, value in row.items():
        if key.startswith(IMAGE_PREFIXES):
            name = key.split("_", 1)[1]
            if name not in images or images[name] is None:
                images[name] = _resolve(value, folder)
        elif key.startswith(GROUP_PREFIX):
            groups[key[len(GROUP_PREFIX):]] = value
        elif key and not _is_managed(key, domains) and not (
                key.startswith("name") and key != "name"):
            extra[key] = value
    name = row.get("name", "").strip()
    if not name:
        for path in shapes + groomed + local:
            if path is not None:
                name = _stem(path)
                break
    subject = Subject(name=name, shapes=shapes, groomed=groomed, local_particles=local,
                      world_particles=world, alignments=alignments, procrustes=procrustes,
                      images=images, groups=groups, extra=extra,
                      excluded=parse_bool(row.get("excluded")),
                      fixed=parse_bool(row.get("fixed")), source_row=dict(row))
    return subject, problems


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz",):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _set_key(row: dict, old_key: str | None, new_key: str, value: str) -> dict:
    """Set ``new_key`` to ``value``, replacing ``old_key`` at its position if given."""
    if old_key is None or old_key == new_key or old_key not in row:
        row[new_key] = value
        return row
    out = {}
    for key, old_value in row.items():
        if key == old_key:
            out[new_key] = value
        elif key != new_key:
            out[key] = old_value
    return out


def _subject_to_row(subject: Subject, domains: Sequence[str], folder: Path,
                    source_folder: Path | None) -> dict:
    """Build the row to write for ``subject`` into a project living in ``folder``.

    Values whose field equals what the source row reads as (from ``folder``) keep their
    exact text; others are rewritten. A subject without a source row gets every
    ShapeWorks column for its domains.
    """
    is_new = subject.source_row is None
    row = {} if is_new else dict(subject.source_row)
    parsed, _ = _row_to_subject(row, domains, folder, "")
    n = len(domains)

    def put_path(key, old_key, value, before):
        nonlocal row
        value = _normalize(value, folder)
        if not is_new and value == before:
            return
        if value is None and old_key is None and not is_new:
            return
        row = _set_key(row, old_key, key, "" if value is None else _relative_text(value, folder))

    def put_transform(key, value, before):
        value = np.eye(4) if value is None else np.asarray(value, dtype=float)
        if not is_new and _same_matrix(value, before):
            return
        row[key] = format_transform(value)

    # name first, then the per-domain columns in ShapeWorks' order.
    if is_new or subject.name != parsed.name:
        row["name"] = subject.name
    shapes = _padded(subject.shapes, n)
    for i, domain in enumerate(domains):
        old_key = _shape_key(row, domain)
        put_path("shape_" + domain, old_key, shapes[i], parsed.shapes[i])
    for attr, prefix in (("groomed", GROOMED_PREFIX), ("local_particles", LOCAL_PREFIX),
                         ("world_particles", WORLD_PREFIX)):
        values = _padded(getattr(subject, attr), n)
        before = getattr(parsed, attr)
        for i, domain in enumerate(domains):
            key = prefix + domain
            put_path(key, key if key in row else None, values[i], before[i])
    for attr, prefix in (("alignments", ALIGNMENT_PREFIX), ("procrustes", PROCRUSTES_PREFIX)):
        values = _padded(getattr(subject, attr), n)
        before = getattr(parsed, attr)
        for i, domain in enumerate(domains):
            put_transform(prefix + domain, values[i], before[i])

    # images: keep keys (image_/feature_) of unchanged values; drop removed names.
    image_keys = {k.split("_", 1)[1]: k for k in row if k.startswith(IMAGE_PREFIXES)}
    for name, old_key in list(image_keys.items()):
        if name not in subject.images:
            row.pop(old_key)
    for name, value in subject.images.items():
        old_key = image_keys.get(name)
        put_path("image_" + name, old_key, value, parsed.images.get(name))
    for name in [k for k in row if k.startswith(GROUP_PREFIX)]:
        if name[len(GROUP_PREFIX):] not in subject.groups:
            row.pop(name)
    for name, value in subject.groups.items():
        if is_new or parsed.groups.get(name) != value:
            row[GROUP_PREFIX + name] = format_value(value)
    for key, value in (("excluded", subject.excluded), ("fixed", subject.fixed)):
        if is_new or bool(value) != getattr(parsed, key):
            row[key] = "true" if value else "false"

    # extra columns
    for key in [k for k in parsed.extra if k not in subject.extra]:
        row.pop(key)
    moved = source_folder is not None and os.path.normpath(source_folder) != os.path.normpath(
        folder)
    for key, value in subject.extra.items():
        value = format_value(value)
        if key in parsed.extra and parsed.extra[key] == value:
            if moved and key.startswith(EXTRA_PATH_PREFIXES) and value.strip():
                absolute = _resolve(value, source_folder)
                if not Path(_clean_path_text(value)).is_absolute():
                    row[key] = _relative_text(absolute, folder)
            continue
        if _is_managed(key, domains) or not key:
            message = (f"subject {subject.name!r}: extra column {key!r} is a ShapeWorks "
                       "column; set the Subject field instead")
            raise ProjectError(message)
        row[key] = value
    return row


# --------------------------------------------------------------------------------------
# Project


class Project:
    """A ShapeWorks project: subjects plus parameter sections.

    Use :meth:`load` to read a ``.swproj``/``.xlsx`` file and :meth:`new` to start an
    empty one; :meth:`save` writes either format, chosen by suffix.

    Attributes
    ----------
    path : Path
        Absolute path of the project file.
    folder : Path
        Its folder; relative paths in the project resolve from here.
    domains : list of str
        Domain names in ShapeWorks' order (e.g. ``["1"]``).
    subjects : list of Subject
    """

    def __init__(self, path: str | os.PathLike, *, domains: Sequence[str] = ("1",),
                 subjects: Iterable[Subject] = (), sections: dict | None = None):
        self.path = Path(os.path.abspath(os.fspath(path)))
        _check_suffix(self.path)
        self.domains = [str(d) for d in domains]
        if not self.domains:
            raise ProjectError(f"project {self.path} needs at least one domain")
        self.subjects = list(subjects)
        self._sections = sections if sections is not None else _default_sections(self.domains)
        self._loaded_from: Path | None = None
        self._source_folder: Path | None = None

    @property
    def folder(self) -> Path:
        return self.path.parent

    def __repr__(self) -> str:
        return (f"Project({str(self.path)!r}, domains={self.domains}, "
                f"subjects={len(self.subjects)})")

    # ---------------------------------------------------------------- construction

    @classmethod
    def new(cls, path: str | os.PathLike, domains: Sequence[str] = ("1",)) -> "Project":
        """An empty project to be saved at ``path`` (nothing is written yet)."""
        return cls(path, domains=domains)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Project":
        """Read a ``.swproj`` (JSON) or ``.xlsx`` project, chosen by suffix.

        Raises
        ------
        FileNotFoundError
            The file does not exist (the message holds the absolute path).
        ProjectError
            Unknown suffix, malformed JSON (with line and column), a non-string value
            (with row, key and value), or malformed transforms (all listed at once).
        """
        path = Path(os.path.abspath(os.fspath(path)))
        _check_suffix(path)
        if not path.is_file():
            raise FileNotFoundError(f"project file not found: {path}")
        if path.suffix.lower() == ".xlsx":
            sections = _read_xlsx(path)
        else:
            sections = _read_json(path)
        _check_sections(sections, path)
        rows = sections.get("data") or []
        domains = detect_domains(rows[0] if rows else {})
        problems = []
        subjects = []
        for index, row in enumerate(rows):
            where = f"{path.name} row {index} ({row.get('name', '')!r})"
            subject, row_problems = _row_to_subject(row, domains, path.parent, where)
            subjects.append(subject)
            problems.extend(row_problems)
        if problems:
            raise ProjectError(f"cannot read {path}:\n  - " + "\n  - ".join(problems))
        project = cls(path, domains=domains, subjects=subjects, sections=sections)
        project._loaded_from = path
        project._source_folder = path.parent
        logger.debug("read %s: %d subjects, domains %s", path, len(subjects), domains)
        return project

    # ---------------------------------------------------------------- parameters

    def parameters(self, section: str) -> dict:
        """A copy of a parameter section as ``{key: value}`` strings.

        ``groom`` is per domain: ``{domain: {key: value}}`` (``null`` values skipped).
        A missing section is empty.
        """
        raw = self._sections.get(section) or {}
        if section == "groom":
            return {domain: {k: v for k, v in (values or {}).items() if v is not None}
                    for domain, values in raw.items()}
        if section in ("data", "landmarks"):
            raise ProjectError(f"{section!r} is not a parameter section; use .subjects or "
                               ".landmarks")
        return dict(raw)

    def set_parameters(self, section: str, mapping: Mapping) -> None:
        """Replace a parameter section (as ShapeWorks' ``set_parameters`` does).

        Values are encoded with :func:`format_value` (``True`` -> ``"true"``, ``0.5`` ->
        ``"0.500000"``). For ``groom`` pass ``{domain: {key: value}}``. Remember that
        ShapeWorks drops unknown keys from ``optimize``.
        """
        if section in ("data", "landmarks"):
            raise ProjectError(f"{section!r} is not a parameter section")
        if section == "groom":
            values = {str(d): {str(k): format_value(v) for k, v in (m or {}).items()}
                      for d, m in mapping.items()}
        else:
            values = {str(k): format_value(v) for k, v in mapping.items()}
        self._sections[section] = values

    @property
    def section_names(self) -> list[str]:
        """Top-level sections present, in file order."""
        return list(self._sections)

    @property
    def landmarks(self) -> list[dict]:
        """Landmark definitions (``domain``, ``name``, ``visible``, ``color``, ``comment``)."""
        return copy.deepcopy(self._sections.get("landmarks") or [])

    @property
    def reference_index(self) -> int | None:
        """Groom ``alignment_reference_chosen`` of the first domain, or ``None``."""
        groom = self.parameters("groom")
        values = groom.get(self.domains[0]) or (next(iter(groom.values())) if groom else {})
        text = (values or {}).get("alignment_reference_chosen", "").strip()
        try:
            index = int(float(text))
        except ValueError:
            return None
        return index if 0 <= index < len(self.subjects) else None

    # ---------------------------------------------------------------- subjects

    def subjects_in_split(self, name: str) -> list[Subject]:
        """Subjects whose ``split`` column equals ``name`` (case-insensitive)."""
        name = name.strip().lower()
        return [s for s in self.subjects if (s.split or "").lower() == name]

    def subject_index(self, name: str) -> int:
        """Row index of the subject called ``name`` (``KeyError`` if absent)."""
        for index, subject in enumerate(self.subjects):
            if subject.name == name:
                return index
        raise KeyError(f"no subject named {name!r} in {self.path}")

    def add_subject(self, subject: Subject) -> Subject:
        """Append a subject; relative paths in it are taken from the project folder."""
        if not isinstance(subject, Subject):
            raise TypeError(f"expected a Subject, got {type(subject).__name__}")
        n = len(self.domains)
        for attr in ("shapes", "groomed", "local_particles", "world_particles",
                     "alignments", "procrustes"):
            values = getattr(subject, attr) or []
            if len(values) > n:
                message = (f"subject {subject.name!r} has {len(values)} {attr} for "
                           f"{n} domain(s) {self.domains}")
                raise ProjectError(message)
        for attr in ("shapes", "groomed", "local_particles", "world_particles"):
            setattr(subject, attr, [_normalize(p, self.folder)
                                    for p in _padded(getattr(subject, attr), n)])
        subject.images = {k: _normalize(v, self.folder) for k, v in subject.images.items()}
        self.subjects.append(subject)
        return subject

    # ---------------------------------------------------------------- saving

    def to_dict(self, folder: str | os.PathLike | None = None) -> dict:
        """The JSON content of the project, with paths relative to ``folder``."""
        folder = self.folder if folder is None else Path(os.path.abspath(os.fspath(folder)))
        out = {}
        names = list(self._sections)
        if "data" not in names:
            names.insert(0, "data")
        for name in names:
            if name == "data":
                out["data"] = [_subject_to_row(s, self.domains, folder, self._source_folder)
                               for s in self.subjects]
            elif name in FLAT_SECTIONS and self._sections[name] is None:
                out[name] = {}
            else:
                out[name] = copy.deepcopy(self._sections[name])
        return out

    def save(self, path: str | os.PathLike | None = None, *, overwrite: bool = False) -> Path:
        """Write the project atomically to ``path`` (default: ``self.path``).

        The format follows the suffix (``.swproj`` or ``.xlsx``). Paths are written
        relative to the new file's folder with ``/``; values are strings. Afterwards
        ``self.path`` is the written file.

        Saving onto the file the project was loaded from is refused unless
        ``overwrite=True``: our tools never change a user's project in place.
        """
        target = self.path if path is None else Path(os.path.abspath(os.fspath(path)))
        _check_suffix(target)
        if (not overwrite and self._loaded_from is not None and target.exists()
                and _same_file(target, self._loaded_from)):
            message = (f"refusing to overwrite the project {target} it was read from; save to "
                       "a new file or pass overwrite=True")
            raise ProjectError(message)
        content = self.to_dict(target.parent)
        if target.suffix.lower() == ".xlsx":
            _write_xlsx(target, content, self.domains)
        else:
            atomic_write_text(target, json.dumps(content, indent=4, ensure_ascii=False) + "\n")
        # The rows written become the new source rows (their paths are relative to target).
        for subject, row in zip(self.subjects, content["data"]):
            subject.source_row = dict(row)
        self._sections = {k: (None if k == "data" else v) for k, v in content.items()}
        self.path = target
        self._source_folder = target.parent
        logger.info("wrote %s (%d subjects)", target, len(self.subjects))
        return target


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normpath(a) == os.path.normpath(b)


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in PROJECT_SUFFIXES:
        message = (f"unknown project file type {path.suffix!r} for {path}; "
                   f"use one of {', '.join(PROJECT_SUFFIXES)}")
        raise ProjectError(message)


def detect_domains(first_row: Mapping[str, str]) -> list[str]:
    """Domain names from the first row, exactly as ShapeWorks' reader decides them."""
    domains = []
    for key in first_row:
        for prefix in DOMAIN_PREFIXES:
            if key.startswith(prefix) and key[len(prefix):] not in domains:
                domains.append(key[len(prefix):])
                break
    if domains:
        return domains
    for key in first_row:
        if key.startswith(GROOMED_PREFIX) and not key.startswith("groomed_contour_"):
            if key[len(GROOMED_PREFIX):] not in domains:
                domains.append(key[len(GROOMED_PREFIX):])
    return domains or ["1"]


def _default_sections(domains: Sequence[str]) -> dict:
    sections = {"data": None, "groom": {d: {} for d in domains}}
    for name in FLAT_SECTIONS:
        sections[name] = {}
    sections["project"] = {"version": "2"}
    sections["landmarks"] = []
    return sections


# --------------------------------------------------------------------------------------
# JSON


def _read_json(path: Path) -> dict:
    text = path.read_text(encoding="utf-8-sig")
    try:
        content = json.loads(text)
    except json.JSONDecodeError as err:
        message = (f"project {path} is not valid JSON: {err.msg} at line {err.lineno}, "
                   f"column {err.colno}")
        raise ProjectError(message) from err
    if not isinstance(content, dict):
        message = f"project {path} must hold a JSON object, not {type(content).__name__}"
        raise ProjectError(message)
    return content


def _describe(value) -> str:
    return f"{json.dumps(value)[:60]} ({'null' if value is None else type(value).__name__})"


def _check_sections(sections: dict, path: Path) -> None:
    """Check the string-only rules of ShapeWorks' reader; list every violation."""
    problems = []
    rows = sections.get("data")
    if rows is None:
        rows = []
    if not isinstance(rows, list):
        problems.append(f"'data' must be a list of rows, not {_describe(rows)}")
        rows = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            problems.append(f"data row {index} must be an object, not {_describe(row)}")
            continue
        name = row.get("name") if isinstance(row.get("name"), str) else ""
        for key, value in row.items():
            if not isinstance(value, str):
                problems.append(f"data row {index} ({name!r}), key {key!r}: value "
                                f"{_describe(value)} must be a string, e.g. \"{value}\"")
    for section in FLAT_SECTIONS:
        values = sections.get(section)
        if values is None:
            continue
        if not isinstance(values, dict):
            problems.append(f"section {section!r} must be an object, not {_describe(values)}")
            continue
        for key, value in values.items():
            if not isinstance(value, str):
                problems.append(f"section {section!r}, key {key!r}: value {_describe(value)} "
                                "must be a string")
    groom = sections.get("groom")
    if groom is not None and not isinstance(groom, dict):
        problems.append(f"section 'groom' must be an object, not {_describe(groom)}")
    elif groom:
        for domain, values in groom.items():
            if values is None:
                continue
            if not isinstance(values, dict):
                problems.append(f"groom domain {domain!r} must be an object, not "
                                f"{_describe(values)}")
                continue
            for key, value in values.items():
                if value is not None and not isinstance(value, str):
                    problems.append(f"groom domain {domain!r}, key {key!r}: value "
                                    f"{_describe(value)} must be a string")
    landmarks = sections.get("landmarks")
    if landmarks is not None and not isinstance(landmarks, list):
        problems.append(f"section 'landmarks' must be a list, not {_describe(landmarks)}")
    if problems:
        raise ProjectError(f"cannot read {path}:\n  - " + "\n  - ".join(problems))
    for section in FLAT_SECTIONS:
        if section in sections and sections[section] is None:
            logger.warning("%s: section %r is null; reading it as empty", path, section)


# --------------------------------------------------------------------------------------
# XLSX


def _cell_text(value) -> str:
    """A spreadsheet cell as the string ShapeWorks reads (numbers turned into text)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _sheet_rows(sheet) -> list[list[str]]:
    rows = []
    for values in sheet.iter_rows(values_only=True):
        texts = [_cell_text(v) for v in values]
        while texts and texts[-1] == "":
            texts.pop()
        rows.append(texts)
    while rows and not rows[-1]:
        rows.pop()
    return rows


def _read_xlsx(path: Path) -> dict:
    import zipfile

    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as err:
        raise ProjectError(f"project {path} is not a readable .xlsx file: {err}") from err
    try:
        names = workbook.sheetnames
        data_name = "data" if "data" in names else names[0]
        sections: dict = {}
        table = _sheet_rows(workbook[data_name])
        header = table[0] if table else []
        rows = []
        for values in table[1:]:
            if not any(v.strip() for v in values):
                continue
            values = values + [""] * (len(header) - len(values))
            rows.append({h: v for h, v in zip(header, values) if h != ""})
        sections["data"] = rows
        for name in names:
            if name == data_name:
                continue
            table = _sheet_rows(workbook[name])
            if name == "landmarks":
                head = table[0] if table else list(LANDMARK_COLUMNS)
                sections[name] = [dict(zip(head, v + [""] * (len(head) - len(v))))
                                  for v in table[1:] if any(v)]
            elif name == "groom":
                sections[name] = _groom_from_table(table, rows)
            else:
                sections[name] = {v[0]: (v[1] if len(v) > 1 else "")
                                  for v in table[1:] if v and v[0]}
    finally:
        workbook.close()
    return sections


def _groom_from_table(table: list[list[str]], rows: list[dict]) -> dict:
    header = table[0] if table else []
    domain_columns = [(i, h[len("value_"):]) for i, h in enumerate(header)
                      if h.startswith("value_")]
    if not domain_columns:
        domains = detect_domains(rows[0] if rows else {})
        domain_columns = [(1, d) for d in domains]
    groom = {d: {} for _, d in domain_columns}
    for values in table[1:]:
        if not values or not values[0]:
            continue
        for column, domain in domain_columns:
            groom[domain][values[0]] = values[column] if column < len(values) else ""
    return groom


def _write_xlsx(path: Path, content: dict, domains: Sequence[str]) -> None:
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "data"
    header: list[str] = []
    for row in content.get("data") or []:
        header.extend(k for k in row if k and k not in header)
    sheet.append(header)
    for row in content.get("data") or []:
        sheet.append([row.get(k, "") for k in header])
    for name, values in content.items():
        if name == "data":
            continue
        sheet = workbook.create_sheet(name)
        if name == "groom":
            groom_domains = list(values or {}) or list(domains)
            sheet.append(["key"] + [f"value_{d}" for d in groom_domains])
            keys: list[str] = []
            for d in groom_domains:
                keys.extend(k for k in (values.get(d) or {}) if k not in keys)
            for key in keys:
                cells = [(values.get(d) or {}).get(key) for d in groom_domains]
                sheet.append([key] + ["" if c is None else c for c in cells])
        elif name == "landmarks":
            sheet.append(list(LANDMARK_COLUMNS))
            for landmark in values or []:
                sheet.append([str(landmark.get(c, "")) for c in LANDMARK_COLUMNS])
        elif isinstance(values, dict):
            sheet.append(["key", "value"])
            for key, value in values.items():
                sheet.append([key, value])
    for worksheet in workbook.worksheets:
        for row in worksheet.iter_rows():
            for cell in row:
                if isinstance(cell.value, str):
                    cell.data_type = "s"
    with atomic_path(path) as tmp:
        workbook.save(tmp)
