"""compare: two models x two seeds on the tiny synthetic ellipsoid project (CPU, 1 thread).

The project is ``test_predict.make_consistent_project`` (4 train, 1 val, 1 test subjects,
64 particles in 4 scales). Each run trains in its own process, as the command does.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from shapeworks_progressive.cli import main
from shapeworks_progressive.compare import (METRICS, check_targets, compare, epoch_plan,
                                            format_markdown, parse_models, parse_seeds,
                                            variant_config)
from shapeworks_progressive.config import default_config
from shapeworks_progressive.errors import ConfigError

from test_predict import TINY_CONFIG, make_consistent_project

EPOCHS = 2


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    path, _ = make_consistent_project(folder / "project")
    config = folder / "tiny_config.json"
    config.write_text(json.dumps(TINY_CONFIG))
    out = folder / "compare"
    result = compare(path, "deepssm,progressive", seeds=2, config=config, out_dir=out,
                     epochs=EPOCHS, progress=False)
    return path, config, out, result


def test_table_has_a_row_per_model_and_every_metric(compared):
    _, _, out, result = compared
    assert sorted(result.trained) == ["deepssm/seed0", "deepssm/seed1", "progressive/seed0",
                                      "progressive/seed1"]
    with open(out / "compare.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["model"] for r in rows] == ["deepssm", "progressive"]
    assert [r["seeds"] for r in rows] == ["2", "2"]
    for metric in METRICS:
        assert f"{metric}_mean" in rows[0] and f"{metric}_std" in rows[0]
    # Dice only where there is a segmentation output
    assert rows[0]["dice_mean"] == "" and 0 < float(rows[1]["dice_mean"]) <= 1
    markdown = (out / "compare.md").read_text()
    assert "| `deepssm` | 2 |" in markdown and "| `progressive` | 2 |" in markdown
    assert "## Targets" in markdown and "test surface distance (mm)" in markdown
    # the JSON (NaN written as null) gives the same Markdown
    content = json.loads((out / "compare.json").read_text())
    assert format_markdown(content) == markdown
    assert (out / "compare_surface_distance.png").stat().st_size > 1000


def test_mean_and_std_follow_the_per_run_values(compared):
    _, _, out, _ = compared
    content = json.loads((out / "compare.json").read_text())
    assert content["budget"] == {"epochs": EPOCHS, "seeds": [0, 1]}
    assert content["epoch_plans"]["deepssm"] == {"total": 2, "base": 2, "fine_tune": 0}
    with open(out / "compare.csv", newline="") as handle:
        table = {r["model"]: r for r in csv.DictReader(handle)}
    for model in ("deepssm", "progressive"):
        runs = [r for r in content["runs"] if r["model"] == model]
        assert sorted(r["seed"] for r in runs) == [0, 1]
        assert all(r["epochs"] == EPOCHS for r in runs)
        for metric in ("surface_mm", "particle_rmse_mm", "train_seconds_per_epoch",
                       "predict_seconds_per_subject", "peak_memory_mib"):
            values = np.array([r[metric] for r in runs], dtype=float)
            assert np.all(np.isfinite(values)) and np.all(values > 0), (model, metric)
            assert float(table[model][f"{metric}_mean"]) == pytest.approx(values.mean())
            assert float(table[model][f"{metric}_std"]) == pytest.approx(values.std(ddof=1))
    # the seeds really differ, and the test distance is the run's own evaluation
    progressive = [r for r in content["runs"] if r["model"] == "progressive"]
    assert progressive[0]["surface_mm"] != progressive[1]["surface_mm"]
    summary = json.loads((out / "progressive" / "seed0" / "evaluation" /
                          "summary.json").read_text())
    assert progressive[0]["surface_mm"] == pytest.approx(
        summary["finest"]["surface_mean_mm"]["mean"])
    # parameters: the same architecture for both seeds, Base-DeepSSM counts its decoder
    deep = [r for r in content["runs"] if r["model"] == "deepssm"]
    assert deep[0]["parameters"] == deep[1]["parameters"] > 64 * 3


def test_finished_runs_are_reused_without_retraining(compared, capsys):
    path, config, out, first = compared
    best = out / "progressive" / "seed1" / "best.pt"
    before = best.stat().st_mtime_ns
    status = main(["compare", str(path), "--models", "progressive,deepssm", "--seeds", "2",
                   "--config", str(config), "--out", str(out), "--epochs", str(EPOCHS),
                   "--no-progress"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "0 run(s) trained, 4 reused" in printed and "| `progressive` | 2 |" in printed
    assert best.stat().st_mtime_ns == before
    content = json.loads((out / "compare.json").read_text())
    assert content["models"] == ["progressive", "deepssm"]
    table = {row["model"]: row for row in content["table"]}
    old = {row["model"]: row for row in first.table}
    assert table["progressive"]["surface_mm_mean"] == pytest.approx(
        old["progressive"]["surface_mm_mean"])


def test_a_foreign_folder_is_never_cleared(compared, tmp_path):
    path, config, _, _ = compared
    foreign = tmp_path / "out" / "progressive" / "seed0"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a compare run folder"):
        compare(path, "progressive", seeds=1, config=config, out_dir=tmp_path / "out",
                epochs=EPOCHS, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_unknown_model_lists_the_choices(tmp_path, capsys):
    with pytest.raises(ConfigError) as info:
        parse_models("deepssm,progresive,unet")
    message = str(info.value)
    assert "'progresive'" in message and "did you mean 'progressive'" in message
    assert "'unet'" in message
    for name in ("deepssm", "tl-deepssm", "single-scale", "progressive-no-seg",
                 "progressive-shallow", "progressive-no-surface", "deepssm-surface"):
        assert name in message
    status = main(["compare", str(tmp_path / "missing.swproj"), "--models", "unet"])
    assert status == 2
    assert "choices: deepssm, tl-deepssm" in capsys.readouterr().err


def test_every_model_gets_the_same_epoch_budget():
    config = default_config()
    plans = {m: epoch_plan(m, 72, config, 4) for m in parse_models(
        "deepssm,tl-deepssm,single-scale,progressive,progressive-no-seg,progressive-shallow,"
        "deepssm-surface")}
    assert plans["progressive"] == {"total": 72, "epochs_per_stage": 12, "final_epochs": 36}
    assert plans["deepssm"] == plans["deepssm-surface"] == {"total": 72, "base": 70,
                                                           "fine_tune": 2}
    assert plans["tl-deepssm"] == {"total": 72, "ae": 32, "t_flank": 32, "joint": 8}
    for epochs in range(1, 80):  # every budget is spent exactly, the image encoder trains
        for model in plans:
            plan = epoch_plan(model, epochs, config, 4)
            spent = sum(v for k, v in plan.items() if k not in ("total", "epochs_per_stage"))
            assert spent + 3 * plan.get("epochs_per_stage", 0) == epochs, (model, plan)
            assert min(plan.values()) >= 0
        tl = epoch_plan("tl-deepssm", epochs, config, 4)
        assert tl["t_flank"] + tl["joint"] >= 1


def test_targets_are_judged_from_the_table():
    def row(model, surface, std, seconds, predict):
        return {"model": model, "surface_mm_mean": surface, "surface_mm_std": std,
                "train_seconds_per_epoch_mean": seconds,
                "predict_seconds_per_subject_mean": predict}

    met = check_targets([row("deepssm", 2.0, 0.2, 10.0, 0.5),
                         row("progressive", 1.6, 0.1, 14.0, 0.8)])
    assert [t["met"] for t in met] == [True, True, True, True]
    assert "20.0% lower" in met[0]["text"] and "0.100 mm vs 0.200 mm" in met[1]["text"]
    assert "1.40 x" in met[2]["text"]
    missed = check_targets([row("deepssm", 2.0, 0.2, 10.0, 0.5),
                            row("progressive", 1.8, 0.3, 16.0, 1.2)])
    assert [t["met"] for t in missed] == [False, False, False, False]
    # The two parts of the first target are judged apart: lower, but a wider spread
    wider = check_targets([row("deepssm", 2.0, 0.01, 10.0, 0.5),
                           row("progressive", 1.0, 0.05, 10.0, 0.5)])
    assert [t["met"] for t in wider[:2]] == [True, False]
    assert "50.0% lower" in wider[0]["text"] and "5.0% vs 0.5%" in wider[1]["text"]
    worse = check_targets([row("deepssm", 2.0, 0.2, 10.0, 0.5),
                           row("progressive", 2.2, 0.1, 10.0, 0.5)])
    assert worse[0]["met"] is False and "10.0% higher" in worse[0]["text"]
    one_seed = check_targets([row("deepssm", 2.0, math.nan, 10.0, 0.5),
                              row("progressive", 1.0, math.nan, 1.0, 0.1)])
    assert one_seed[0]["met"] is True and one_seed[1]["met"] is None
    assert check_targets([row("progressive", 1.0, math.nan, 1.0, 0.1)])[0]["met"] is None


def test_a_run_saved_before_a_setting_existed_is_still_reused():
    from shapeworks_progressive.compare import _identity

    config = default_config()
    spec = {"model": "progressive", "seed": 0, "config": config, "plan": {"total": 2},
            "run_dir": "a"}
    older = json.loads(json.dumps(spec))
    for key in ("pca_samples", "pca_sampler", "pca_variance"):
        del older["config"]["augment"][key]
    del older["config"]["run"]["num_workers"]
    assert _identity(older) == _identity(spec)
    changed = json.loads(json.dumps(spec))
    changed["config"]["augment"]["pca_samples"] = 3
    assert _identity(changed) != _identity(spec)
    workers = json.loads(json.dumps(spec))
    workers["config"]["run"]["num_workers"] = 2  # does not change the samples
    assert _identity(workers) == _identity(spec)


def test_the_table_names_every_setting_that_differs_from_the_defaults(compared):
    _, _, out, _ = compared
    text = (out / "compare.md").read_text()
    assert "- Base config: the defaults, except " in text
    assert '`data.spacing` 2.0' in text and '`model.channels` 2' in text
    assert "num_threads" not in text.split("- Base config:")[1].split("\n")[0]


def test_seed_counts_per_model():
    models = ["deepssm", "tl-deepssm", "progressive"]
    assert parse_seeds(3, models) == {"deepssm": 3, "tl-deepssm": 3, "progressive": 3}
    assert parse_seeds("1,deepssm=3,progressive=3", models) == {
        "deepssm": 3, "tl-deepssm": 1, "progressive": 3}
    assert parse_seeds({"progressive": 2}, models)["progressive"] == 2
    with pytest.raises(ConfigError, match="'single-scale', which is not among"):
        parse_seeds("2,single-scale=3", models)
    with pytest.raises(ConfigError, match="got 0 for tl-deepssm"):
        parse_seeds("0,deepssm=1,progressive=1", models)
    with pytest.raises(ConfigError, match="'deepssm=x' is not N or MODEL=N"):
        parse_seeds("deepssm=x", models)


def test_the_surface_term_is_off_where_the_method_has_none():
    base = default_config()
    plan = {"epochs_per_stage": 1, "final_epochs": 2}
    weights = {m: variant_config(base, m, plan, seed=0, num_particles=16)["loss"]
               ["surface_weight"] for m in ("progressive", "progressive-no-seg",
                                            "progressive-no-surface", "deepssm",
                                            "deepssm-surface")}
    assert weights == {"progressive": 5.0, "progressive-no-seg": 5.0,
                       "progressive-no-surface": 0.0, "deepssm": 0.0,
                       "deepssm-surface": 5.0}
    assert base["loss"]["surface_weight"] == 5.0  # the base config is not changed


def test_seed_lists_that_say_two_things_are_refused():
    models = ["deepssm", "tl-deepssm", "progressive"]
    assert parse_seeds("deepssm=2", models) == {"deepssm": 2, "tl-deepssm": 1,
                                                "progressive": 1}
    with pytest.raises(ConfigError, match="2 bare counts"):
        parse_seeds("1,2", models)
    with pytest.raises(ConfigError, match="names 'deepssm' twice"):
        parse_seeds("1,deepssm=2,deepssm=3", models)
    with pytest.raises(ConfigError, match="empty item"):
        parse_seeds(",deepssm=2", models)


def test_runs_of_another_budget_are_kept_and_the_call_refused(compared):
    path, config, out, _ = compared
    best = out / "progressive" / "seed0" / "best.pt"
    before = best.stat().st_mtime_ns
    with pytest.raises(ConfigError) as info:
        compare(path, "progressive", seeds=1, config=config, out_dir=out,
                epochs=EPOCHS + 1, progress=False)
    message = str(info.value)
    assert "seed0 holds a run trained with other settings" in message
    assert f"plan.total: {EPOCHS} then, {EPOCHS + 1} now" in message
    assert "--retrain-changed" in message
    assert best.stat().st_mtime_ns == before


def test_retrain_changed_trains_the_changed_run_again(compared, tmp_path):
    import shutil

    path, config, out, _ = compared
    shutil.copytree(out / "progressive" / "seed0", tmp_path / "progressive" / "seed0")
    result = compare(path, "progressive", seeds=1, config=config, out_dir=tmp_path,
                     epochs=1, retrain_changed=True, progress=False)
    assert result.trained == ["progressive/seed0"]
    assert result.runs[0]["epochs"] == 1


def test_a_bad_out_or_device_is_an_error_before_any_work(compared, tmp_path, capsys):
    path, config, _, _ = compared
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        compare(path, "progressive", seeds=1, config=config, out_dir=a_file / "compare",
                epochs=1, progress=False)
    assert a_file.read_text() == "mine"
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    status = main(["compare", str(path), "--models", "progressive", "--seeds", "1",
                   "--config", str(config), "--out", str(tmp_path / "c"), "--device", "cuda"])
    err = capsys.readouterr().err
    assert status == 2 and "--device) is 'cuda'" in err and "Traceback" not in err
    status = main(["compare", str(path), "--models", "progressive", "--seeds", "1",
                   "--config", str(config), "--out", str(tmp_path / "c"),
                   "--predict-device", "cuda"])
    err = capsys.readouterr().err
    assert status == 2 and "--predict-device is 'cuda'" in err
    assert not (tmp_path / "c").exists()


def test_the_report_says_what_a_small_budget_changed(compared):
    _, _, out, _ = compared
    markdown = (out / "compare.md").read_text()
    deepssm_line = next(line for line in markdown.splitlines()
                        if line.startswith("- `deepssm`"))
    assert "no fine-tuning at this budget" in deepssm_line
    assert "not judged. not judged" not in markdown
    with open(out / "compare.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(row["parameters_mean"].isdigit() for row in rows)


def test_pca_samples_that_cannot_fit_are_refused_before_any_run(compared, tmp_path):
    path, config, _, _ = compared
    settings = {**json.loads(config.read_text())}
    settings["augment"] = {**settings.get("augment", {}), "pca_samples": 10 ** 9}
    with pytest.raises(ConfigError, match="augment.pca_samples 1000000000"):
        compare(path, "progressive", seeds=1, config=settings, out_dir=tmp_path / "c",
                epochs=1, progress=False)
    assert not (tmp_path / "c").exists()
