"""Compare Progressive DeepSSM with its ablations and the DeepSSM baselines on one project.

:func:`compare` is what ``shapeworks-progressive compare`` does. Every model variant is
trained for every seed on the **same prepared data** (one :func:`~shapeworks_progressive.
dataset.prepare_dataset` call: same split, grid, intensity normalization, registration of
val/test images, particle order), saved in the same checkpoint format, predicted on the
test split with :func:`~shapeworks_progressive.predict.predict` and measured with
:func:`~shapeworks_progressive.evaluation.evaluate_run`.

Model variants (:data:`MODELS`)
-------------------------------
``progressive``          the default config: coarse-to-fine scales, segmentation side task,
                         deep supervision on every active scale
``progressive-no-seg``   the same with ``model.segmentation`` false
``progressive-shallow``  the same with ``loss.deep_supervision = "shallow"`` (loss on the
                         newest scale only)
``progressive-no-surface`` the same with ``loss.surface_weight = 0``: the particle distance
                         alone, the loss DeepSSM trains with
``single-scale``         the same network with **one scale holding every particle**
                         (``scale_sizes = [N]``): the global head predicts all ``N``
                         particles and one point-wise head refines them; no coarse scales,
                         so no progression and no deep supervision
``deepssm``              Base-DeepSSM (PCA head, frozen PCA decoder, then fine-tuning of the
                         decoder), :func:`~shapeworks_progressive.baselines.train_deepssm`,
                         with the particle loss alone (no surface term), as published
``deepssm-surface``      Base-DeepSSM trained with the progressive model's surface term
                         too (not published): what the loss alone buys a PCA network
``tl-deepssm``           TL-DeepSSM in its three stages,
                         :func:`~shapeworks_progressive.baselines.train_tl_deepssm`

Epoch budget
------------
Every model gets the same total number of epochs ``E`` (``--epochs``; default the config's
progressive schedule, 3 x 15 + 45 = 90 with the defaults), split by :func:`epoch_plan`:
progressive variants keep the config's ratio of ``epochs_per_stage`` to ``final_epochs``;
single-scale trains one stage of ``E``; Base-DeepSSM trains ``E - f`` base epochs and
``f = min(2, E // 10)`` fine-tuning epochs (ShapeWorks' default is 2); TL-DeepSSM splits
``E`` as ShapeWorks' 100 / 100 / 25 (autoencoder / T-flank / joint). The seeds are
``0 .. seeds - 1`` (``run.seed``: weights, data order, augmentation); the data is prepared
once with the config's own ``run.seed``.

Measurements (per run = one model and one seed)
-----------------------------------------------
* ``surface_mm``: symmetric mean surface distance (mm) of the finest scale, mean over
  the test subjects (ShapeWorks DeepSSM's test distance; see :mod:`evaluation`).
* ``particle_rmse_mm``: finest-scale particle RMSE (mm), mean over test subjects.
* ``dice``: Dice of the predicted segmentation, mean over test subjects (models with a
  segmentation output only).
* ``train_seconds_per_epoch``: the trainer's own per-epoch seconds (training pass plus
  the validation pass for the progressive trainer and Base-DeepSSM; TL-DeepSSM's log
  counts the training pass only), averaged over all epochs of the run.
* ``train_seconds``: the sum of those per-epoch seconds over every epoch of the run, a
  resumed run's earlier epochs included; ``train_wall_seconds`` is the wall time of the
  process that finished the run (for a resumed run, only what came after the resume).
* ``predict_seconds_per_subject``: wall time per test subject from ``predictions.json``
  (registration to the reference, network, writing the files), on ``predict_device``.
* ``parameters``: every parameter of the network, frozen ones included (Base-DeepSSM's
  PCA decoder).
* ``peak_memory_mib``: each training runs in its own Python process, so this is that
  process's peak resident memory (``resource.getrusage(...).ru_maxrss``; the prepared
  data arrays included) on CPU, or ``torch.cuda.max_memory_allocated`` on a GPU. Without
  isolation (``isolate=False``) the figure is the whole process's peak so far.

Across seeds every metric is given as mean and sample standard deviation (``ddof=1``;
undefined for one seed).

Run folders and reuse
---------------------
``<out>/<model>/seed<k>/`` is a normal run folder (``best.pt``, logs, ``predictions/``,
``evaluation/``) plus ``compare_spec.json`` (what the run is: model, seed, complete config,
epoch plan, data settings), ``compare_train.json`` (written when training finished:
times, memory, parameter count) and ``compare_eval.json`` (the test metrics and the
``best.pt`` they were measured with). A later call reuses a run whose spec matches and
whose training finished (no retraining), resumes an unfinished one with a matching spec,
and re-predicts only when ``best.pt`` changed. A run folder with a different spec is
kept and the call refused before any training (naming the settings that differ), unless
``retrain_changed`` asks to clear it and train it again.

Outputs in ``<out>``: ``compare.md`` (table and the issue's targets), ``compare.csv``,
``compare.json`` (everything, per run and aggregated) and ``compare_surface_distance.png``.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import difflib
import io
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import RUN_ONLY_SETTINGS, default_config, with_defaults
from .errors import ConfigError
from .fileio import atomic_path, atomic_write_text, json_safe

__all__ = ["MODELS", "METRICS", "parse_models", "parse_seeds", "epoch_plan", "variant_config",
           "compare", "aggregate", "check_targets", "format_markdown", "machine_info",
           "source_version", "CompareResult", "SPEC_NAME", "TRAIN_NAME", "EVAL_NAME"]

logger = logging.getLogger("shapeworks_progressive.compare")

MODELS: dict[str, str] = {
    "deepssm": "Base-DeepSSM (PCA head, frozen PCA decoder, then fine-tuning)",
    "tl-deepssm": "TL-DeepSSM (autoencoder, T-flank, joint)",
    "single-scale": "progressive network, one scale of all particles",
    "progressive": "Progressive DeepSSM (the base config)",
    "progressive-no-seg": "Progressive DeepSSM without the segmentation task",
    "progressive-shallow": "Progressive DeepSSM, loss on the newest scale only",
    "progressive-no-surface": "Progressive DeepSSM without the surface term (particle "
                              "distance only, as DeepSSM)",
    "deepssm-surface": "Base-DeepSSM trained with the surface term too (not published)",
}
_DEEPSSM = ("deepssm", "deepssm-surface")
_PROGRESSIVE = ("progressive", "progressive-no-seg", "progressive-shallow",
                "progressive-no-surface")

#: Metric key -> (column title, digits)
METRICS: dict[str, tuple[str, int]] = {
    "surface_mm": ("test surface distance (mm)", 3),
    "particle_rmse_mm": ("particle RMSE (mm)", 3),
    "dice": ("Dice", 3),
    "train_seconds_per_epoch": ("train s/epoch", 2),
    "predict_seconds_per_subject": ("predict s/subject", 3),
    "parameters": ("parameters", 0),
    "peak_memory_mib": ("peak memory (MiB)", 0),
}

SPEC_NAME = "compare_spec.json"
TRAIN_NAME = "compare_train.json"
EVAL_NAME = "compare_eval.json"
_RUNS_FOLDER = "progressive_runs"


# ------------------------------------------------------------------------- choices


def parse_models(models: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"deepssm,progressive"`` (or a list) -> checked model names, in order, each once.

    Raises
    ------
    ConfigError
        Naming every unknown model, the nearest known name and all choices.
    """
    if isinstance(models, str):
        models = models.split(",")
    names: list[str] = []
    problems: list[str] = []
    for raw in models:
        name = str(raw).strip().lower()
        if not name:
            continue
        if name not in MODELS:
            close = difflib.get_close_matches(name, list(MODELS), n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown model {raw.strip()!r} for --models{hint}; choices: "
                            f"{', '.join(MODELS)}")
        elif name not in names:
            names.append(name)
    if not names and not problems:
        problems.append(f"--models is empty; choices: {', '.join(MODELS)}")
    if problems:
        raise ConfigError(problems)
    return names


def parse_seeds(seeds: int | str | dict, models: list[str]) -> dict[str, int]:
    """Seed counts per model from ``3``, ``"3"`` or ``"1,deepssm=3,progressive=3"``.

    A bare number is the count of every model not named (at most one bare number; 1 when
    there is none, so ``"deepssm=3"`` gives the others one seed each); ``model=N`` sets one
    model's count (seeds ``0 .. N - 1``), once per model. A dict maps model names to counts
    (the others get 1).

    Raises
    ------
    ConfigError
        A count below 1, a malformed or empty item, two bare numbers, a model named twice,
        or a model name that is not in ``models``.
    """
    default, named, problems = 1, {}, []
    if isinstance(seeds, dict):
        named = dict(seeds)
    elif isinstance(seeds, str):
        bare = []
        for item in (part.strip() for part in seeds.split(",")):
            if not item:
                raise ConfigError(f"--seeds {seeds!r} has an empty item; write N or "
                                  "N,MODEL=N,...")
            key, sep, value = item.partition("=")
            try:
                if sep:
                    key = key.strip().lower()
                    if key in named:
                        problems.append(f"--seeds names {key!r} twice")
                    named[key] = int(value)
                else:
                    bare.append(int(key))
            except ValueError:
                raise ConfigError(f"--seeds item {item!r} is not N or MODEL=N") from None
        if len(bare) > 1:
            problems.append(f"--seeds {seeds!r} has {len(bare)} bare counts; give one (the "
                            "count of every model not named) and MODEL=N for the others")
        default = bare[0] if bare else 1
    else:
        default = int(seeds)
    problems += [f"--seeds names {name!r}, which is not among the models compared "
                 f"({', '.join(models)})" for name in named if name not in models]
    counts = {name: int(named.get(name, default)) for name in models}
    problems += [f"--seeds must be >= 1; got {count} for {name}"
                 for name, count in counts.items() if count < 1]
    if problems:
        raise ConfigError(problems)
    return counts


def epoch_plan(model: str, epochs: int, config: dict, num_scales: int) -> dict[str, int]:
    """How a model spends a total budget of ``epochs`` epochs.

    Parameters
    ----------
    model : str
        A name of :data:`MODELS`.
    epochs : int
        Total epochs every model gets.
    config : dict
        Complete base config (its ``schedule`` ratio is kept by the progressive variants).
    num_scales : int
        Scales of the prepared data.

    Returns
    -------
    dict
        ``total`` plus the model's stage epochs: ``epochs_per_stage``/``final_epochs``
        (progressive variants and single-scale), ``base``/``fine_tune`` (deepssm, its
        surface variant) or
        ``ae``/``t_flank``/``joint`` (tl-deepssm). They always sum to ``total``.
    """
    epochs = int(epochs)
    if epochs < 1:
        raise ConfigError(f"--epochs must be >= 1; got {epochs}")
    if model in _PROGRESSIVE:
        schedule = config["schedule"]
        per, final = int(schedule["epochs_per_stage"]), int(schedule["final_epochs"])
        if not schedule["progressive"] or num_scales == 1:
            return {"total": epochs, "epochs_per_stage": 0, "final_epochs": epochs}
        configured = per * (num_scales - 1) + final
        per = int(epochs * per / configured) if configured else 0
        return {"total": epochs, "epochs_per_stage": per,
                "final_epochs": epochs - per * (num_scales - 1)}
    if model == "single-scale":
        return {"total": epochs, "epochs_per_stage": 0, "final_epochs": epochs}
    if model in _DEEPSSM:
        fine_tune = min(2, epochs // 10)
        return {"total": epochs, "base": epochs - fine_tune, "fine_tune": fine_tune}
    if model == "tl-deepssm":
        ae = round(epochs * 4 / 9)  # < epochs, so the image encoder always trains
        joint = max(1, round(epochs / 9))
        return {"total": epochs, "ae": ae, "t_flank": epochs - ae - joint, "joint": joint}
    parse_models([model])
    raise AssertionError(model)  # parse_models raised


def variant_config(base: dict, model: str, plan: dict, *, seed: int,
                   num_particles: int) -> dict:
    """The complete config of one run: ``base`` with the variant's changes and the seed.

    ``progressive-no-seg`` sets ``model.segmentation`` false, ``progressive-shallow``
    ``loss.deep_supervision`` ``"shallow"``, ``progressive-no-surface``
    ``loss.surface_weight`` 0, ``single-scale`` ``data.scales`` ``[N]``; the schedule
    follows ``plan``. The baselines keep the base config (their trainers use its ``optim``,
    ``augment`` and ``run`` sections) but train with the particle loss alone, as published
    (Base-DeepSSM: ``loss.surface_weight`` 0), except ``deepssm-surface``, which keeps
    the base config's surface term.
    """
    config = copy.deepcopy(base)
    config["run"]["seed"] = int(seed)
    if model in _PROGRESSIVE or model == "single-scale":
        config["model"]["name"] = "progressive"
        config["schedule"]["epochs_per_stage"] = int(plan["epochs_per_stage"])
        config["schedule"]["final_epochs"] = int(plan["final_epochs"])
    if model == "progressive-no-seg":
        config["model"]["segmentation"] = False
    elif model == "progressive-shallow":
        config["loss"]["deep_supervision"] = "shallow"
    elif model in ("progressive-no-surface", "deepssm"):
        config["loss"]["surface_weight"] = 0.0
    elif model == "single-scale":
        config["data"]["scales"] = [int(num_particles)]
        config["schedule"]["progressive"] = False
        config["loss"]["scale_weights"] = None
    return config


# ------------------------------------------------------------------------- one run


def _one_scale(data):
    """The prepared data seen as one scale of all its particles (same arrays)."""
    return dataclasses.replace(data, scale_sizes=[int(len(data.particle_order))])


def _parameter_count(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _peak_memory(device) -> dict[str, float | None]:
    import resource

    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    if sys.platform == "darwin":  # bytes on macOS
        rss_kib /= 1024
    gpu = None
    if device.type == "cuda":
        import torch

        gpu = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return {"peak_rss_mib": rss_kib / 1024, "peak_gpu_mib": gpu}


def train_run(spec: dict, *, progress: bool = True) -> dict:
    """Train one (model, seed) run as ``spec`` says; write and return ``compare_train.json``.

    Parameters
    ----------
    spec : dict
        From :func:`compare`: ``model``, ``seed``, ``config`` (complete), ``plan``,
        ``project``, ``cache_dir``, ``data`` (prepare_dataset settings), ``run_dir``,
        ``isolated``.
    progress : bool, default: True

    Returns
    -------
    dict
        ``epochs``, ``train_seconds``, ``train_seconds_per_epoch``, ``parameters``,
        ``peak_rss_mib``, ``peak_gpu_mib``, ``peak_memory_mib``, ``memory_scope``,
        ``device``, ``stages``, ``best_val_rmse_mm``, ``finished``, ``trained_with``
        (:func:`source_version`).
    """
    import torch

    from .augmentation import augment_from_config, with_augmented
    from .baselines import (TLSettings, build_deepssm, build_tl_deepssm, train_deepssm,
                            train_tl_deepssm)
    from .dataset import prepare_dataset
    from .training import build_model, prediction_metadata, select_device, train_model

    model_name, config, plan = spec["model"], spec["config"], spec["plan"]
    run_dir = Path(spec["run_dir"])
    resume = bool(spec.get("resume"))
    if config["run"]["num_threads"]:
        torch.set_num_threads(int(config["run"]["num_threads"]))
    device = select_device(config["run"]["device"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    settings = spec["data"]
    data = prepare_dataset(spec["project"], spec["cache_dir"], spacing=tuple(settings["spacing"]),
                           padding_mm=settings["padding_mm"], scales=settings["scales"],
                           seed=settings["seed"], progress=False)
    train, val = data.split("train"), data.split("val")
    augmented = augment_from_config(data, config, spec["cache_dir"])
    if augmented is not None:
        train = with_augmented(train, augmented)
    started = time.perf_counter()

    # Train the variant
    if model_name in _DEEPSSM:
        view = _one_scale(data)
        model, _ = build_deepssm(view, augmented=augmented, seed=int(config["run"]["seed"]))
        result = train_deepssm(model, train, val, config, run_dir, epochs=plan["base"],
                               fine_tune_epochs=plan["fine_tune"],
                               prediction=prediction_metadata(view), device=device,
                               resume=resume, progress=progress)
        stages, best_val = result.stages, result.best_val_rmse
    elif model_name == "tl-deepssm":
        view = _one_scale(data)
        model = build_tl_deepssm(view, seed=int(config["run"]["seed"]))
        tl = TLSettings(ae_epochs=plan["ae"], tf_epochs=plan["t_flank"],
                        joint_epochs=plan["joint"])
        result = train_tl_deepssm(model, train, val, config, run_dir, tl,
                                  prediction=prediction_metadata(view), device=device,
                                  resume=resume, progress=progress)
        stages, best_val = result.stages, result.best_val_rmse
    else:
        view = _one_scale(data) if model_name == "single-scale" else data
        model = build_model(config, view)
        resume = resume and (run_dir / "last.pt").is_file()
        result = train_model(model, train, val, config, run_dir,
                             prediction=prediction_metadata(view), resume=resume,
                             device=device, progress=progress)
        seconds = sum(float(row["seconds"]) for row in result.history)
        stages = [{"name": "progressive" if model_name != "single-scale" else "single",
                   "epochs": len(result.history), "best_epoch": result.best_epoch,
                   "best_val_rmse": result.best_val_rmse, "seconds": round(seconds, 3),
                   "seconds_per_epoch": seconds / max(len(result.history), 1)}]
        best_val = result.best_val_rmse
    wall = time.perf_counter() - started

    # What it cost
    epochs = int(sum(int(s["epochs"]) for s in stages))
    seconds = float(sum(float(s["seconds"]) for s in stages))
    memory = _peak_memory(device)
    record = {
        "finished": True,
        "model": model_name,
        "seed": int(config["run"]["seed"]),
        "device": str(device),
        "epochs": epochs,
        "train_seconds": round(seconds, 3),
        "train_wall_seconds": round(wall, 3),
        "train_seconds_per_epoch": seconds / max(epochs, 1),
        "parameters": _parameter_count(model),
        **memory,
        "peak_memory_mib": memory["peak_gpu_mib"] if device.type == "cuda"
        else memory["peak_rss_mib"],
        "memory_scope": "run process" if spec.get("isolated") else "whole process so far",
        "stages": stages,
        "best_val_rmse_mm": best_val,
        "trained_with": source_version(),
    }
    atomic_write_text(run_dir / TRAIN_NAME, json.dumps(json_safe(record), indent=1) + "\n")
    logger.info("%s seed %d: %d epochs, %.2f s/epoch, %d parameters, peak %.0f MiB", model_name,
                record["seed"], epochs, record["train_seconds_per_epoch"],
                record["parameters"], record["peak_memory_mib"])
    return record


def _train_isolated(spec: dict, spec_path: Path, *, progress: bool) -> dict:
    """:func:`train_run` in a fresh Python process (so its peak memory is its own)."""
    command = [sys.executable, "-m", "shapeworks_progressive.compare", str(spec_path)]
    if not progress:
        command.append("--no-progress")
    env = dict(os.environ)
    if logger.getEffectiveLevel() <= logging.DEBUG:
        env["SHAPEWORKS_PROGRESSIVE_LOG"] = "DEBUG"
    completed = subprocess.run(command, env=env, check=False)
    record_path = Path(spec["run_dir"]) / TRAIN_NAME
    if completed.returncode != 0 or not record_path.is_file():
        raise RuntimeError(f"training {spec['model']} seed {spec['seed']} in "
                           f"{spec['run_dir']} failed (exit status {completed.returncode}); "
                           f"its messages are above; command: {' '.join(command)}")
    return json.loads(record_path.read_text(encoding="utf-8"))


def _identity(spec: dict) -> dict:
    """The part of a spec that decides whether a finished run can be reused.

    The config is first completed with today's defaults, so a run saved before a setting
    existed matches a spec that leaves that setting at its default.
    """
    same = json.loads(json.dumps(json_safe({k: v for k, v in spec.items()
                                             if k not in ("resume", "isolated", "run_dir")})))
    same["config"] = with_defaults(same.get("config"))
    for section, key in RUN_ONLY_SETTINGS:
        same["config"][section].pop(key, None)
    return same


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def source_version() -> dict:
    """This package's version and, when it runs from a git checkout, the commit.

    Written into every run's ``compare_train.json``, so a table made from runs trained
    at different times says which code trained each.
    """
    from . import __version__

    commit = None
    try:
        completed = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                                   capture_output=True, text=True, timeout=10, check=False)
        if completed.returncode == 0:
            commit = completed.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"version": __version__, "commit": commit}


def _run_state(spec: dict) -> str:
    """``new``, ``reuse``, ``resume`` or ``changed`` (trained with other settings).

    Raises
    ------
    ConfigError
        The folder is not empty and is not a compare run folder.
    """
    run_dir = Path(spec["run_dir"])
    if not (run_dir.is_dir() and any(run_dir.iterdir())):
        return "new"
    saved = _read_json(run_dir / SPEC_NAME)
    if saved is None:
        raise ConfigError(f"{run_dir} is not empty and holds no {SPEC_NAME}; it is not a "
                          "compare run folder. Choose another --out")
    if _identity(saved) != _identity(spec):
        return "changed"
    finished = _read_json(run_dir / TRAIN_NAME)
    if finished and finished.get("finished") and (run_dir / "best.pt").is_file():
        return "reuse"
    return "resume"


def _identity_difference(saved: dict | None, spec: dict, most: int = 3) -> str:
    """The first settings that differ between a saved spec and a new one, in words."""
    def flat(value, prefix=""):
        if isinstance(value, dict):
            for key, item in value.items():
                yield from flat(item, f"{prefix}{key}.")
        else:
            yield prefix.rstrip("."), value

    old = dict(flat(_identity(saved or {})))
    new = dict(flat(_identity(spec)))
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    words = [f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in keys[:most]]
    if len(keys) > most:
        words.append(f"{len(keys) - most} more")
    return "; ".join(words) or "unreadable spec"


def _prepare_run_dir(spec: dict, state: str) -> str:
    """``reuse``, ``resume`` or ``new`` for a run folder in ``state`` (:func:`_run_state`).

    A changed run is cleared (only reached when :func:`compare` was asked to retrain it).
    """
    run_dir = Path(spec["run_dir"])
    if state in ("reuse", "resume"):
        return state
    if state == "changed":
        logger.warning("%s was trained with other settings; training it again", run_dir)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return "new"


def _check_devices(train_device: str, predict_device: str) -> None:
    """Fail before any work when the training or prediction device cannot be used."""
    from .training import select_device

    select_device(train_device)
    if predict_device != train_device:
        select_device(predict_device, setting="--predict-device")


def _checkpoint_signature(path: Path) -> list:
    stat = path.stat()
    return [int(stat.st_mtime_ns), int(stat.st_size)]


def _finest_mean(summary: dict, metric: str) -> float:
    stats = summary.get("finest", {}).get(metric) or {}
    value = stats.get("mean") if stats.get("n") else None
    return float(value) if value is not None else math.nan


def predict_and_evaluate(project, run_dir: Path, *, device: str = "cpu",
                         warp_method: str = "displacement", seed: int = 0,
                         progress: bool = False) -> dict:
    """Predict the test split with a run's ``best.pt`` and evaluate it (reused when done).

    Returns (and writes as ``compare_eval.json``) ``surface_mm``, ``particle_rmse_mm``,
    ``dice`` (means over test subjects, finest scale, NaN where not measurable),
    ``surface_p95_mm``, ``floor_surface_mm``, ``predict_seconds_per_subject`` (mean),
    ``predict_seconds_max``, ``registration_seconds_per_subject``, ``per_subject``
    (finest surface distance per test subject, mm), ``n_test`` and ``checkpoint``.
    """
    from .evaluation import evaluate_run
    from .predict import predict

    run_dir = Path(run_dir)
    best = run_dir / "best.pt"
    signature = _checkpoint_signature(best)
    saved = _read_json(run_dir / EVAL_NAME)
    if (saved and saved.get("checkpoint") == signature
            and saved.get("warp_method") == warp_method and saved.get("device") == device):
        return saved
    predicted = predict(project, run_dir, subjects=["test"], write_project=False,
                        device=device, seed=seed, progress=progress)
    manifest = json.loads(predicted.manifest_path.read_text(encoding="utf-8"))
    entries = manifest["subjects"].values()
    seconds = [float(e["seconds"]) for e in entries]
    registration = [float(e["registration_seconds"]) for e in entries]
    evaluation = evaluate_run(project, run_dir, method=warp_method, save_meshes=False,
                              progress=progress)
    summary = evaluation.summary
    record = {
        "checkpoint": signature,
        "warp_method": warp_method,
        "device": device,
        "n_test": int(summary.get("n_subjects", 0)),
        "surface_mm": _finest_mean(summary, "surface_mean_mm"),
        "particle_rmse_mm": _finest_mean(summary, "particle_rmse_mm"),
        "dice": _finest_mean(summary, "dice"),
        "surface_p95_mm": _finest_mean(summary, "surface_p95_mm"),
        "floor_surface_mm": _finest_mean(summary, "floor_surface_mean_mm"),
        "predict_seconds_per_subject": float(np.mean(seconds)) if seconds else math.nan,
        "predict_seconds_max": float(np.max(seconds)) if seconds else math.nan,
        "registration_seconds_per_subject": (float(np.mean(registration)) if registration
                                             else math.nan),
        "per_subject": {name: values.get("surface_mean_mm")
                        for name, values in summary.get("per_subject", {}).items()},
    }
    atomic_write_text(run_dir / EVAL_NAME, json.dumps(json_safe(record), indent=1) + "\n")
    return record


# ------------------------------------------------------------------------- aggregate


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return math.nan, math.nan, 0
    std = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    return float(finite.mean()), std, int(finite.size)


def aggregate(runs: list[dict], models: list[str]) -> list[dict]:
    """One row per model: ``<metric>_mean`` and ``<metric>_std`` over its seeds.

    Parameters
    ----------
    runs : list of dict
        Per run: ``model``, ``seed``, ``epochs`` and every key of :data:`METRICS`.
    models : list of str
        Row order.

    Returns
    -------
    list of dict
        ``model``, ``seeds`` (count), ``epochs``, then mean and sample std (``ddof=1``,
        NaN for one seed) of every metric; NaN values (e.g. Dice without a segmentation
        output) are left out of both.
    """
    rows = []
    for model in models:
        selected = [r for r in runs if r["model"] == model]
        row: dict[str, Any] = {"model": model, "seeds": len(selected),
                               "epochs": selected[0]["epochs"] if selected else None}
        for metric in METRICS:
            mean, std, _ = _mean_std([r.get(metric) for r in selected])
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean, std
        rows.append(row)
    return rows


def check_targets(rows: list[dict]) -> list[dict]:
    """The issue's targets for ``progressive`` against ``deepssm``, one entry each.

    Surface distance and its spread across seeds are judged apart, then training time
    per epoch and prediction time.

    Returns
    -------
    list of dict
        ``target``, ``met`` (True, False, or None when it cannot be judged) and ``text``
        (the numbers, in words).
    """
    by_model = {row["model"]: {k: (_number(v) if k.endswith(("_mean", "_std")) else v)
                               for k, v in row.items()} for row in rows}
    prog, deep = by_model.get("progressive"), by_model.get("deepssm")
    targets = []

    def add(target, met, text):
        targets.append({"target": target, "met": met, "text": text})

    name = "surface distance >= 15% below Base-DeepSSM's"
    spread_name = "smaller spread of the surface distance across seeds than Base-DeepSSM's"
    if prog is None or deep is None:
        add(name, None, "not judged: run both progressive and deepssm")
        add(spread_name, None, "not judged: run both progressive and deepssm")
    else:
        p, d = prog["surface_mm_mean"], deep["surface_mm_mean"]
        ps, ds = prog["surface_mm_std"], deep["surface_mm_std"]
        reduction = 1 - p / d if math.isfinite(p) and math.isfinite(d) and d > 0 else math.nan
        if not math.isfinite(reduction):
            add(name, None, "not judged: a surface distance is missing")
        else:
            change = (f"{100 * reduction:.1f}% lower" if reduction >= 0
                      else f"{-100 * reduction:.1f}% higher")
            add(name, bool(reduction >= 0.15),
                f"progressive {p:.3f} mm vs Base-DeepSSM {d:.3f} mm: {change} (target: "
                f">= 15% lower)")
        if not (math.isfinite(ps) and math.isfinite(ds)):
            add(spread_name, None, "not judged: the spread needs two or more seeds of each")
        else:
            relative = (f"; relative to the mean {100 * ps / p:.1f}% vs {100 * ds / d:.1f}%"
                        if p > 0 and d > 0 else "")
            add(spread_name, bool(ps < ds),
                f"sample std {ps:.3f} mm vs {ds:.3f} mm across seeds{relative}")
    name = "train time per epoch <= 1.5 x Base-DeepSSM's (same grid)"
    if prog is None or deep is None:
        add(name, None, "not judged: run both progressive and deepssm")
    else:
        p, d = prog["train_seconds_per_epoch_mean"], deep["train_seconds_per_epoch_mean"]
        ratio = p / d if d > 0 else math.nan
        add(name, bool(ratio <= 1.5) if math.isfinite(ratio) else None,
            f"{p:.2f} s vs {d:.2f} s per epoch: {ratio:.2f} x (target <= 1.5 x)")
    name = "prediction, registration included, < 1 s per subject"
    if prog is None:
        add(name, None, "not judged: run progressive")
    else:
        p = prog["predict_seconds_per_subject_mean"]
        add(name, bool(p < 1.0) if math.isfinite(p) else None,
            f"{p:.3f} s per subject (mean over test subjects and seeds)")
    return targets


# ------------------------------------------------------------------------- writing


def _number(value) -> float:
    """A metric as a float; None (NaN written to JSON) becomes NaN."""
    return math.nan if value is None else float(value)


def _cell(mean: float | None, std: float | None, digits: int) -> str:
    mean, std = _number(mean), _number(std)
    if not math.isfinite(mean):
        return "-"
    if digits == 0:
        text = f"{mean:,.0f}"
        return text if not math.isfinite(std) or std == 0 else f"{text} ± {std:,.0f}"
    text = f"{mean:.{digits}f}"
    return text if not math.isfinite(std) else f"{text} ± {std:.{digits}f}"


def format_markdown(result: dict) -> str:
    """The Markdown of ``compare.md`` from the content of ``compare.json``."""
    rows = result["table"]
    lines = [f"# Model comparison on `{Path(result['project']).name}`", ""]
    budget = result["budget"]
    lines += [f"{budget['epochs']} epochs per model, seeds {_format_seeds(budget['seeds'])}, "
              f"test split of "
              f"{result['n_test']} subject(s); mean ± sample std across seeds (each seed: "
              "mean over test subjects, finest scale). Lower is better except Dice.", ""]
    header = ["model", "seeds"] + [title for title, _ in METRICS.values()]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    for row in rows:
        cells = [f"`{row['model']}`", str(row["seeds"])]
        cells += [_cell(row[f"{m}_mean"], row[f"{m}_std"], digits)
                  for m, (_, digits) in METRICS.items()]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Targets", ""]
    for target in result["targets"]:
        if target["met"] is None:  # the text says why, starting "not judged"
            lines.append(f"- {target['target']}: {target['text']}.")
            continue
        verdict = "**met**" if target["met"] else "**not met**"
        lines.append(f"- {target['target']}: {verdict}. {target['text']}.")
    lines += ["", "## How it was measured", ""]
    for model, plan in result["epoch_plans"].items():
        stages = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in plan.items()
                           if k != "total")
        lines.append(f"- `{model}`: {MODELS[model]}; {plan['total']} epochs ({stages})"
                     + _plan_caveat(model, plan, result["data"]["scale_sizes"]))
    changed = _changed_settings(result.get("base_config") or {})
    lines += [
        "- Base config: " + ("the defaults, except "
                             + ", ".join(f"`{k}` {v}" for k, v in changed)
                             if changed else "the defaults")
        + " (the variants change it as above).",
        "- Same prepared data for every run (split, grid, normalization, registration of "
        f"val/test images): cache `{result['data']['cache']}`.",
        "- Train s/epoch: the trainer's logged seconds per epoch (training and validation "
        "passes; TL-DeepSSM: training pass only, and its autoencoder epochs see no images).",
        f"- Predict s/subject: registration, network and writing, on "
        f"`{result['predict_device']}`, from `predictions.json`.",
        "- Parameters: all, frozen included. Peak memory: "
        + ("each training's own process (ru_maxrss, prepared data included) on CPU, "
           "torch.cuda.max_memory_allocated on GPU." if result["isolated"] else
           "the process's peak so far (runs were not isolated)."),
        f"- Machine: {result['machine']['summary']}; {result['date']}.",
    ]
    return "\n".join(lines) + "\n"


def _plan_caveat(model: str, plan: dict, scale_sizes: list) -> str:
    """Words for a plan that a small budget made different from what the model's name says."""
    if plan.get("fine_tune") == 0:
        return "; no fine-tuning at this budget (it takes 1 epoch from 10 epochs up)"
    if (model in _PROGRESSIVE and plan.get("epochs_per_stage") == 0
            and len(scale_sizes) > 1):
        return ("; too few epochs for one stage per scale, so every scale trained together "
                "(not progressive)")
    return ""


def _changed_settings(config: dict) -> list[tuple[str, str]]:
    """``(section.key, JSON value)`` of every setting that differs from the defaults.

    :data:`~shapeworks_progressive.config.RUN_ONLY_SETTINGS` are left out: they do not
    change what a run learns.
    """
    defaults = default_config()
    changed = []
    for section, values in config.items():
        for key, value in values.items():
            if (section, key) in RUN_ONLY_SETTINGS:
                continue
            if defaults.get(section, {}).get(key) != value:
                changed.append((f"{section}.{key}", json.dumps(value)))
    return changed


def _write_csv(path: Path, rows: list[dict]) -> Path:
    columns = ["model", "seeds", "epochs"]
    for metric in METRICS:
        columns += [f"{metric}_mean", f"{metric}_std"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(k, row[k]) for k in columns})
    return atomic_write_text(path, buffer.getvalue())


def _csv_value(column: str, value):
    """A CSV cell: empty for NaN; counts (parameters) as whole numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    if column == "parameters_mean" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _plot(path: Path, runs: list[dict], models: list[str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(1.4 * len(models) + 2.5, 6.0), 4.2))
    ax = figure.subplots()
    rng = np.random.default_rng(0)
    for index, model in enumerate(models, start=1):
        selected = [r for r in runs if r["model"] == model]
        subjects = [v for r in selected for v in r.get("per_subject", {}).values()
                    if v is not None and math.isfinite(v)]
        if subjects:
            ax.boxplot([subjects], positions=[index], widths=0.5, showfliers=False)
            ax.scatter(index + rng.uniform(-0.15, 0.15, len(subjects)), subjects, s=6,
                       color="0.6", zorder=2)
        means = [r["surface_mm"] for r in selected if math.isfinite(r["surface_mm"])]
        ax.scatter([index] * len(means), means, marker="D", s=30, color="C3", zorder=3,
                   label="seed mean" if index == 1 else None)
    ax.set_xticks(range(1, len(models) + 1), models, rotation=20)
    ax.set_ylabel("test surface distance (mm)")
    ax.set_title("finest scale: test subjects of all seeds (grey), seed means (red)",
                 fontsize=9)
    if any(math.isfinite(r["surface_mm"]) for r in runs):
        ax.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110)
    return path


def _nan_floats(value):
    """Inverse of :func:`json_safe` for metrics: None -> NaN in a run record."""
    return {k: (math.nan if v is None and k in METRICS else v) for k, v in value.items()}


def machine_info(device: str = "cpu") -> dict:
    """CPU model, cores, Python, torch and GPU (when one is used), plus a one-line summary."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "gpu": None}
    if device != "cpu" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    info["summary"] = (f"{cpu}, {info['cores']} cores, torch {info['torch']}"
                       + (f", GPU {info['gpu']}" if info["gpu"] else ""))
    return info


# ------------------------------------------------------------------------- compare


@dataclass
class CompareResult:
    """What :func:`compare` wrote.

    Attributes
    ----------
    out_dir : Path
    runs : list of dict
        Per (model, seed): the training and test records merged.
    table : list of dict
        :func:`aggregate` rows.
    targets : list of dict
        :func:`check_targets`.
    markdown_path, csv_path, json_path, figure_path : Path
    trained : list of str
        ``"<model>/seed<k>"`` of runs trained (or resumed) by this call; the rest were
        reused.
    """

    out_dir: Path
    runs: list
    table: list
    targets: list
    markdown_path: Path
    csv_path: Path
    json_path: Path
    figure_path: Path
    trained: list = field(default_factory=list)


def compare(project, models: str | list[str], *, seeds: int | str | dict = 3,
            config: str | os.PathLike | dict | None = None,
            out_dir: str | os.PathLike | None = None, epochs: int | None = None,
            device: str | None = None, predict_device: str = "cpu",
            warp_method: str = "displacement", isolate: bool = True,
            retrain_changed: bool = False, progress: bool = True) -> CompareResult:
    """Train (or reuse), predict and evaluate every model for every seed; write the table.

    Parameters
    ----------
    project : Project or path-like
        The ShapeWorks project with ``train``/``val``/``test`` splits (only read).
    models : str or list of str
        Names of :data:`MODELS`, comma-separated or a list.
    seeds : int, str or dict, default: 3
        Seeds ``0 .. N - 1`` per model: one count for all, or per model (see
        :func:`parse_seeds`, e.g. ``"1,deepssm=3,progressive=3"``).
    config : path-like or dict, optional
        Base training config (file, or a dict like one); missing keys take the defaults.
    out_dir : path-like, optional
        Default ``<project folder>/progressive_runs/compare``.
    epochs : int, optional
        Total epochs of every model; default the config's progressive total.
    device : {"auto", "cpu", "cuda"}, optional
        Overrides the config's ``run.device`` for training.
    predict_device : str, default: "cpu"
        Device of prediction (the issue's speed target is on the CPU).
    warp_method : {"displacement", "shapeworks"}, default: "displacement"
    isolate : bool, default: True
        Train each run in its own Python process (per-run peak memory).
    retrain_changed : bool, default: False
        Train again, in place, the runs in ``out_dir`` that were trained with other
        settings (another budget, config or data). By default they are kept and the call
        is refused.
    progress : bool, default: True

    Returns
    -------
    CompareResult

    Raises
    ------
    ConfigError
        Unknown model names (listing the choices), bad seeds/epochs or config, an
        ``out_dir`` that is a file, a non-empty ``out_dir`` sub-folder that is not a
        compare run, runs trained with other settings (without ``retrain_changed``);
        before any training.
    DeviceError
        The training or prediction device cannot be used; before any data work.
    """
    from .augmentation import check_sample_memory, settings_from_config
    from .config import load_config, total_epochs
    from .dataset import image_problem, prepare_dataset
    from .project import Project
    from .validation import warn_if_invalid

    # Check everything first
    names = parse_models(models)
    seed_counts = parse_seeds(seeds, names)
    if not hasattr(project, "subjects"):
        project = Project.load(Path(project).resolve())
    warn_if_invalid(project)
    overrides = {"run": {"device": device}} if device is not None else None
    if isinstance(config, dict):
        from .config import validate_config

        base = validate_config(config)
        if overrides:
            base["run"].update(overrides["run"])
    else:
        base = load_config(config, overrides=overrides)
    problems = []
    if not project.subjects_in_split("test"):
        problems.append(f"{project.path}: no subject has split 'test'; compare evaluates "
                        "the test split")
    train_names = [subject.name for subject in project.subjects_in_split("train")]
    if len(train_names) < 2:
        problems.append(f"{project.path}: compare needs at least 2 subjects with split "
                        f"'train' (every model uses a PCA of the training shapes); it has "
                        f"{len(train_names)}: {', '.join(train_names) or 'none'}")
    for split in ("train", "val", "test"):
        for subject in project.subjects_in_split(split):
            problem = image_problem(subject, f"subject {subject.name!r} ({split})")
            if problem is not None:
                problems.append(problem)
    if problems:  # all at once, so one run shows the user everything to fix
        raise ConfigError(problems)
    out_dir = Path(os.path.abspath(os.fspath(
        out_dir if out_dir is not None else project.folder / _RUNS_FOLDER / "compare")))
    for folder in (out_dir, *out_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"--out {out_dir}: {folder} is a file, not a folder")
            break
    _check_devices(base["run"]["device"], predict_device)

    # Prepare the data once (cache shared with `train`)
    spacing = base["data"]["spacing"]
    spacing = [float(v) for v in spacing] if isinstance(spacing, list) else [float(spacing)] * 3
    data_settings = {"spacing": spacing, "padding_mm": float(base["data"]["padding_mm"]),
                     "scales": base["data"]["scales"], "seed": int(base["run"]["seed"])}
    cache_dir = project.folder / _RUNS_FOLDER / "cache"
    data = prepare_dataset(project, cache_dir, spacing=tuple(spacing),
                           padding_mm=data_settings["padding_mm"],
                           scales=data_settings["scales"], seed=data_settings["seed"],
                           progress=progress)
    num_scales = len(data.scale_sizes)
    num_particles = int(len(data.particle_order))
    config_scaled = copy.deepcopy(base)
    config_scaled["data"]["scales"] = [int(n) for n in data.scale_sizes]
    budget = int(epochs) if epochs is not None else total_epochs(config_scaled, num_scales)
    plans = {name: epoch_plan(name, budget, config_scaled, num_scales) for name in names}
    augmentation = settings_from_config(config_scaled)
    if augmentation is not None:  # refused here, not in the first training worker
        check_sample_memory(augmentation.count, data)
    for name, plan in plans.items():
        caveat = _plan_caveat(name, plan, list(data.scale_sizes))
        if caveat:
            logger.warning("%s with %d epoch%s%s", name, budget, "" if budget == 1 else "s",
                           caveat)
    logger.info("compare %s on %s: seeds %s, %d epochs each, into %s", ", ".join(names),
                project.path, seed_counts, budget, out_dir)

    # Every run's spec; runs trained with other settings are refused before any training
    specs = []
    for name in names:
        for seed in range(seed_counts[name]):
            run_dir = out_dir / name / f"seed{seed}"
            specs.append({"model": name, "seed": seed, "plan": plans[name],
                          "config": variant_config(config_scaled, name, plans[name],
                                                   seed=seed, num_particles=num_particles),
                          "project": str(project.path), "cache_dir": str(cache_dir),
                          "data": data_settings, "data_cache": data.cache_path and
                          Path(data.cache_path).name, "run_dir": str(run_dir),
                          "isolated": isolate})
    states = [_run_state(spec) for spec in specs]
    changed = [spec for spec, state in zip(specs, states) if state == "changed"]
    if changed and not retrain_changed:
        raise ConfigError(
            [f"{spec['run_dir']} holds a run trained with other settings ("
             f"{_identity_difference(_read_json(Path(spec['run_dir']) / SPEC_NAME), spec)})"
             for spec in changed]
            + [f"compare keeps them: choose another --out for this budget, or pass "
               f"--retrain-changed to train these {len(changed)} run(s) again in place"])

    # Train (or reuse), predict and evaluate every run
    runs: list[dict] = []
    trained: list[str] = []
    for spec, state in zip(specs, states):
        name, seed, run_dir = spec["model"], spec["seed"], Path(spec["run_dir"])
        state = _prepare_run_dir(spec, state)
        if state == "reuse":
            logger.info("%s seed %d: reusing the finished run in %s", name, seed, run_dir)
            record = _read_json(run_dir / TRAIN_NAME)
        else:
            spec["resume"] = state == "resume"
            spec_path = atomic_write_text(run_dir / SPEC_NAME,
                                          json.dumps(json_safe(spec), indent=1) + "\n")
            logger.info("%s seed %d: %s in %s", name, seed,
                        "resuming" if spec["resume"] else "training", run_dir)
            if isolate:
                record = _train_isolated(spec, spec_path, progress=progress)
            else:
                record = train_run(spec, progress=progress)
            trained.append(f"{name}/seed{seed}")
        tested = predict_and_evaluate(project, run_dir, device=predict_device,
                                      warp_method=warp_method, seed=data_settings["seed"],
                                      progress=False)
        merged = {**record, **tested, "model": name, "seed": seed, "run_dir": str(run_dir)}
        runs.append(_nan_floats(merged))

    # Table, targets, files
    table = aggregate(runs, names)
    targets = check_targets(table)
    content = {
        "project": str(project.path),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(base["run"]["device"]),
        "models": names,
        "budget": {"epochs": budget, "seeds": _seed_lists(seed_counts)},
        "epoch_plans": plans,
        "data": {"settings": data_settings, "cache": str(data.cache_path),
                 "grid_size": [int(v) for v in data.grid.size],
                 "grid_spacing_mm": [float(v) for v in data.grid.spacing],
                 "scale_sizes": [int(n) for n in data.scale_sizes],
                 "splits": {s: len(data.split(s)) for s in ("train", "val", "test")}},
        "n_test": len(data.split("test")),
        "predict_device": predict_device,
        "warp_method": warp_method,
        "isolated": bool(isolate),
        "base_config": base,
        "std": "sample standard deviation across seeds (ddof=1)",
        "runs": runs,
        "table": table,
        "targets": targets,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write_text(out_dir / "compare.json",
                                  json.dumps(json_safe(content), indent=1) + "\n")
    csv_path = _write_csv(out_dir / "compare.csv", table)
    markdown_path = atomic_write_text(out_dir / "compare.md", format_markdown(content))
    figure_path = _plot(out_dir / "compare_surface_distance.png", runs, names)
    logger.info("wrote %s, %s, %s and %s", markdown_path, csv_path, json_path, figure_path)
    return CompareResult(out_dir=out_dir, runs=runs, table=table, targets=targets,
                         markdown_path=markdown_path, csv_path=csv_path, json_path=json_path,
                         figure_path=figure_path, trained=trained)


def _seed_lists(counts: dict[str, int]) -> list[int] | dict[str, list[int]]:
    """One list of seeds when every model has the same, else one list per model."""
    lists = {name: list(range(count)) for name, count in counts.items()}
    distinct = {tuple(v) for v in lists.values()}
    return list(distinct.pop()) if len(distinct) == 1 else lists


def _format_seeds(seeds) -> str:
    if isinstance(seeds, dict):
        return ", ".join(f"`{name}` {values}" for name, values in seeds.items())
    return str(seeds)


def _worker_main(argv: list[str]) -> int:
    """``python -m shapeworks_progressive.compare SPEC.json [--no-progress]``: one run."""
    logging.basicConfig(level=os.environ.get("SHAPEWORKS_PROGRESSIVE_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    train_run(spec, progress="--no-progress" not in argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
