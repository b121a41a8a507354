"""Training configuration: JSON with defaults, checked up front with every problem listed.

A config file holds any subset of the sections and keys of :data:`DEFAULTS`; missing keys
take the defaults. :func:`load_config` returns a complete, validated plain ``dict`` that
is stored unchanged in the run folder and in checkpoints.

Sections
--------
``data``
    ``spacing`` (mm, one number or three), ``padding_mm`` (mm around the training
    particles' box), ``scales`` (particles per scale, coarse to fine, or null for four
    scales ending at the project's particle count).
``model``
    ``name`` (``"progressive"`` or a ``"shapeworks_progressive.<module>:<Class>"`` path)
    and the network's settings: ``channels``, ``levels``, ``head_hidden``,
    ``global_hidden``, ``offset_scale_mm``, ``dropout``, ``segmentation`` (build the
    segmentation decoder; false turns the multi-task side task off), ``shape_modes``
    (the global head predicts scores of this many PCA modes of the training shapes; 0: a
    free offset of the first scale), ``pose`` (the global head also predicts a rigid
    motion) and ``seg_features`` (point heads also read the segmentation decoder).
``loss``
    ``particle`` (``"mse"``: squared point distance in mm^2, or ``"focal"``), ``focal_a``,
    ``focal_c`` (mm), ``seg_weight`` (lambda of Dice + cross-entropy), ``surface_weight``
    (weight of the Chamfer surface term, mm^2; see ``losses.surface_loss``), ``deep_supervision``
    (``"all"`` active scales or ``"shallow"``: the newest only), ``scale_weights`` (one
    weight per scale, or null for all ones).
``schedule``
    ``progressive`` (false trains all scales at once for the same total epochs),
    ``epochs_per_stage`` (each stage but the last), ``final_epochs`` (the last stage),
    ``fade_in_epochs`` (the newest scale's loss weight ramps up over this many epochs).
``optim``
    ``lr``, ``weight_decay``, ``batch_size``, ``lr_schedule`` (``"cosine"`` or
    ``"constant"``), ``grad_clip`` (max gradient norm, 0 for none).
``augment``
    ``intensity_scale``, ``intensity_shift``, ``noise_std``: random per-image intensity
    augmentation on training batches (0 turns each off). ``rotation_deg`` (uniform per
    axis in +-degrees), ``translation_mm`` (uniform per axis in +-mm) and ``scale``
    (isotropic factor in 1 +- scale, below 0.5): a random similarity about the grid
    centre moves each training image, its segmentation and particles together, as
    registration leaves new images off by a few mm and degrees (all 0 turns it off).
    ``pca_samples`` (0: off), ``pca_sampler`` (``"kde"``, ``"gaussian"`` or
    ``"mixture"``) and ``pca_variance`` (fraction of the training shapes' variance the
    PCA keeps): PCA-space augmentation as in ShapeWorks DeepSSM, that many new training
    shapes sampled from the training shapes' PCA, each with an image made by
    thin-plate-spline warping of the nearest real training image (see
    :mod:`~shapeworks_progressive.augmentation`); generated once, cached beside the
    prepared data and added to the training split of every model.
``run``
    ``seed``, ``device`` (``"auto"``, ``"cpu"`` or ``"cuda"``), ``amp`` (mixed precision on
    CUDA), ``num_threads`` (CPU threads, null for torch's default), ``val_every`` (epochs),
    ``num_workers`` (processes that generate PCA augmentation, null for every core; the
    samples are the same for any number).
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["DEFAULTS", "RUN_ONLY_SETTINGS", "default_config", "with_defaults", "load_config",
           "validate_config", "stage_plan", "total_epochs"]

DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"spacing": 1.5, "padding_mm": 10.0, "scales": None},
    "model": {"name": "progressive", "channels": 8, "levels": 4, "head_hidden": 64,
              "global_hidden": 256, "offset_scale_mm": 5.0, "dropout": 0.0,
              "segmentation": True, "shape_modes": 20, "pose": True, "seg_features": False},
    "loss": {"particle": "mse", "focal_a": 1.32, "focal_c": 2.0, "seg_weight": 5.0,
             "surface_weight": 5.0, "deep_supervision": "all", "scale_weights": None},
    "schedule": {"progressive": True, "epochs_per_stage": 15, "final_epochs": 45,
                 "fade_in_epochs": 0},
    "optim": {"lr": 1e-3, "weight_decay": 1e-4, "batch_size": 8, "lr_schedule": "cosine",
              "grad_clip": 10.0},
    "augment": {"intensity_scale": 0.1, "intensity_shift": 0.1, "noise_std": 0.02,
                "rotation_deg": 15.0, "translation_mm": 3.0, "scale": 0.0,
                "pca_samples": 0, "pca_sampler": "kde", "pca_variance": 0.95},
    "run": {"seed": 0, "device": "auto", "amp": True, "num_threads": None, "val_every": 1,
            "num_workers": None},
}

_CHOICES = {
    ("loss", "particle"): ("mse", "focal"),
    ("loss", "deep_supervision"): ("all", "shallow"),
    ("optim", "lr_schedule"): ("cosine", "constant"),
    ("run", "device"): ("auto", "cpu", "cuda"),
    ("augment", "pca_sampler"): ("kde", "gaussian", "mixture"),
}
_POSITIVE_INT = {("model", "channels"), ("model", "levels"), ("model", "head_hidden"),
                 ("model", "global_hidden"), ("optim", "batch_size"), ("run", "val_every"),
                 ("schedule", "final_epochs")}
_NON_NEGATIVE_INT = {("schedule", "epochs_per_stage"), ("schedule", "fade_in_epochs"),
                     ("run", "seed"), ("model", "shape_modes"), ("augment", "pca_samples")}
_POSITIVE_NUMBER = {("optim", "lr"), ("model", "offset_scale_mm"), ("loss", "focal_a")}
_NON_NEGATIVE_NUMBER = {("data", "padding_mm"), ("loss", "focal_c"), ("loss", "seg_weight"),
                        ("loss", "surface_weight"),
                        ("optim", "weight_decay"), ("optim", "grad_clip"),
                        ("augment", "intensity_scale"), ("augment", "intensity_shift"),
                        ("augment", "noise_std"), ("augment", "rotation_deg"),
                        ("augment", "translation_mm")}
_BOOL = {("model", "segmentation"), ("schedule", "progressive"), ("run", "amp"),
         ("model", "pose"), ("model", "seg_features")}


# Settings that change where and how fast a run trains, never what it learns: a run may
# be resumed or reused with other values of these.
RUN_ONLY_SETTINGS = frozenset({("run", "device"), ("run", "num_threads"),
                               ("run", "num_workers")})


def default_config() -> dict[str, dict[str, Any]]:
    """A deep copy of :data:`DEFAULTS`."""
    return copy.deepcopy(DEFAULTS)


def with_defaults(saved: dict) -> dict[str, dict[str, Any]]:
    """A config saved by a run (maybe before some settings existed) over today's defaults.

    Nothing is checked: a setting the saved config lacks takes its default, so an older
    run compares equal to a new config that leaves that setting alone.
    """
    complete = default_config()
    for section, values in (saved or {}).items():
        complete.setdefault(section, {}).update(copy.deepcopy(values))
    return complete


def _hint(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(options)}"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _merge(raw: Any, problems: list[str], source: str) -> dict[str, dict[str, Any]]:
    config = default_config()
    if not isinstance(raw, dict):
        problems.append(f"{source}: the config must be a JSON object; got {type(raw).__name__}")
        return config
    for section, values in raw.items():
        if section not in DEFAULTS:
            problems.append(f"{source}: unknown section {section!r}{_hint(section, DEFAULTS)}")
            continue
        if not isinstance(values, dict):
            problems.append(f"{source}: section {section!r} must be an object; "
                            f"got {type(values).__name__} {values!r}")
            continue
        for key, value in values.items():
            if key not in DEFAULTS[section]:
                problems.append(f"{source}: unknown key {section}.{key}"
                                f"{_hint(key, DEFAULTS[section])}")
                continue
            config[section][key] = value
    return config


def _check_values(config: dict, problems: list[str], source: str) -> None:
    def bad(section, key, expected):
        value = config[section][key]
        problems.append(f"{source}: {section}.{key} must be {expected}; "
                        f"got {type(value).__name__} {value!r}")

    for (section, key), choices in _CHOICES.items():
        value = config[section][key]
        if value not in choices:
            message = (f"{source}: {section}.{key} must be one of "
                       f"{', '.join(map(repr, choices))}; got {type(value).__name__} {value!r}")
            if isinstance(value, str):
                close = difflib.get_close_matches(value.lower(), list(choices), n=1,
                                                  cutoff=0.5)
                if close:
                    message += f"; did you mean {close[0]!r}?"
            problems.append(message)
    for section, key in _POSITIVE_INT:
        if not (_is_int(config[section][key]) and config[section][key] > 0):
            bad(section, key, "a positive integer")
    for section, key in _NON_NEGATIVE_INT:
        if not (_is_int(config[section][key]) and config[section][key] >= 0):
            bad(section, key, "an integer >= 0")
    for section, key in _POSITIVE_NUMBER:
        if not (_is_number(config[section][key]) and config[section][key] > 0):
            bad(section, key, "a number > 0")
    for section, key in _NON_NEGATIVE_NUMBER:
        if not (_is_number(config[section][key]) and config[section][key] >= 0):
            bad(section, key, "a number >= 0")
    for section, key in _BOOL:
        if not isinstance(config[section][key], bool):
            bad(section, key, "true or false")

    # Data: spacing, scales
    spacing = config["data"]["spacing"]
    spacing_list = spacing if isinstance(spacing, list) else [spacing]
    if len(spacing_list) not in (1, 3) or not all(_is_number(v) and v > 0 for v in spacing_list):
        bad("data", "spacing", "a number > 0 or a list of three (mm)")
    scales = config["data"]["scales"]
    if scales is not None:
        if (not isinstance(scales, list) or not scales
                or not all(_is_int(v) and v > 0 for v in scales)
                or any(b <= a for a, b in zip(scales, scales[1:]))):
            bad("data", "scales", "null or a list of increasing positive integers")

    # Model
    name = config["model"]["name"]
    if not isinstance(name, str) or not name:
        bad("model", "name", "a model name")
    else:
        from .models import MODEL_NAMES
        if name not in MODEL_NAMES and not name.startswith("shapeworks_progressive."):
            problems.append(f"{source}: model.name {name!r} is unknown"
                            f"{_hint(name, MODEL_NAMES)}")
    scale = config["augment"]["scale"]
    if not (_is_number(scale) and 0 <= scale < 0.5):
        bad("augment", "scale", "a number in [0, 0.5)")
    variance = config["augment"]["pca_variance"]
    if not (_is_number(variance) and 0 < variance <= 1):
        bad("augment", "pca_variance", "a fraction in (0, 1]")
    if config["model"]["seg_features"] is True and config["model"]["segmentation"] is False:
        problems.append(f"{source}: model.seg_features needs model.segmentation true")
    dropout = config["model"]["dropout"]
    if not (_is_number(dropout) and 0 <= dropout < 1):
        bad("model", "dropout", "a number in [0, 1)")

    # Loss: scale weights
    weights = config["loss"]["scale_weights"]
    if weights is not None:
        if (not isinstance(weights, list) or not weights
                or not all(_is_number(v) and v >= 0 for v in weights)):
            bad("loss", "scale_weights", "null or a list of numbers >= 0")
        elif scales is not None and isinstance(scales, list) and len(weights) != len(scales):
            problems.append(f"{source}: loss.scale_weights has {len(weights)} weights but "
                            f"data.scales has {len(scales)} scales")

    # Run: threads
    for key in ("num_threads", "num_workers"):
        value = config["run"][key]
        if value is not None and not (_is_int(value) and value > 0):
            bad("run", key, "null or a positive integer")


def validate_config(raw: Any, *, source: str = "config") -> dict[str, dict[str, Any]]:
    """Merge ``raw`` over the defaults and check every value.

    Parameters
    ----------
    raw : dict
        Parsed JSON, any subset of :data:`DEFAULTS`.
    source : str, default: "config"
        Name used in messages (usually the file path).

    Returns
    -------
    dict
        The complete config.

    Raises
    ------
    ConfigError
        Listing every unknown key (with the nearest known name) and every bad value.
    """
    problems: list[str] = []
    config = _merge(raw, problems, source)
    _check_values(config, problems, source)
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: str | os.PathLike | None = None, *,
                overrides: dict | None = None) -> dict[str, dict[str, Any]]:
    """Read a JSON config file (or none), apply ``overrides`` and validate.

    ``overrides`` is a nested dict like a config file; its keys win over the file's.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ConfigError
        When the file is not valid JSON or any value is invalid (all problems at once).
    """
    raw: dict = {}
    source = "config"
    if path is not None:
        path = Path(path).resolve()
        source = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON: {err}") from err
    if overrides:
        raw = copy.deepcopy(raw) if isinstance(raw, dict) else raw
        if isinstance(raw, dict):
            for section, values in overrides.items():
                if isinstance(raw.get(section), dict) and isinstance(values, dict):
                    raw[section] = {**raw[section], **values}
                else:
                    raw[section] = values
    return validate_config(raw, source=source)


def stage_plan(config: dict, num_scales: int) -> list[tuple[int, int]]:
    """Stages as ``(active_scales, epochs)`` pairs.

    Progressive: stage ``k`` (1-based) trains scales ``1..k``, ``epochs_per_stage`` epochs
    for all but the last stage, which gets ``final_epochs``. Not progressive: one stage
    with every scale and the same total number of epochs.
    """
    schedule = config["schedule"]
    per_stage, final = schedule["epochs_per_stage"], schedule["final_epochs"]
    if schedule["progressive"] and num_scales > 1:
        plan = [(k, per_stage) for k in range(1, num_scales)] + [(num_scales, final)]
        return [(k, epochs) for k, epochs in plan if epochs > 0]
    return [(num_scales, per_stage * (num_scales - 1) + final)]


def total_epochs(config: dict, num_scales: int) -> int:
    """Sum of the epochs of :func:`stage_plan`."""
    return sum(epochs for _, epochs in stage_plan(config, num_scales))
