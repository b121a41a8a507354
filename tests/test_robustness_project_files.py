"""Robustness, project files: what every command says about a project it cannot use.

Unknown suffixes, malformed JSON, missing sections, non-string values: ``info``,
``train``, ``predict`` and ``evaluate`` exit with status 2 and say where. Windows paths
work. Several domains per subject: ``info`` reports them, ``train``, ``predict`` and
``evaluate`` stop with an error naming the domains (one domain is supported).
"""

from __future__ import annotations

import json

import pytest
import torch

from shapeworks_progressive.cli import main
from shapeworks_progressive.dataset import prepare_dataset

from test_dataset import _make_project
from test_predict import TINY_CONFIG, make_consistent_project, train_tiny

BROKEN = {
    "suffix": ("project.json", '{"data": []}', "unknown project file type '.json'"),
    "json": ("bad.swproj", '{"data": [\n  {"name": "a",}\n]}', "is not valid JSON"),
    "not_object": ("list.swproj", "[]", "must hold a JSON object, not list"),
    "data_not_rows": ("rows.swproj", '{"data": {}}', "'data' must be a list of rows"),
    "non_string": ("typed.swproj", '{"data": [{"name": "a", "split": 1}]}',
                   "key 'split': value 1 (int)"),
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _commands(path, run_dir):
    return {"info": ["info", str(path)],
            "train": ["train", str(path), "--out", str(run_dir / "new")],
            "predict": ["predict", str(path), "--model", str(run_dir), "--device", "cpu"],
            "evaluate": ["evaluate", str(path), "--predictions", str(run_dir)]}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_unreadable_project_exits_2_from_every_command(tmp_path, capsys, case):
    name, text, expected = BROKEN[case]
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    for command, argv in _commands(path, tmp_path / "run").items():
        assert main(argv) == 2, command
        err = capsys.readouterr().err
        assert expected in err and name in err, (command, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing written


def test_malformed_json_names_the_line(tmp_path, capsys):
    path = tmp_path / "bad.swproj"
    path.write_text(BROKEN["json"][1], encoding="utf-8")
    assert main(["info", str(path)]) == 2
    assert "line 2" in capsys.readouterr().err


def test_missing_sections_and_columns(tmp_path, capsys):
    empty = tmp_path / "empty.swproj"
    empty.write_text("{}", encoding="utf-8")
    assert main(["info", str(empty)]) == 1
    assert "the project has no subjects" in capsys.readouterr().out
    assert main(["train", str(empty), "--out", str(tmp_path / "run")]) == 2
    assert "no subject has split 'train'" in capsys.readouterr().err
    bare = tmp_path / "bare.swproj"
    bare.write_text(json.dumps({"data": [{"name": "a", "split": "train"}]}), encoding="utf-8")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    assert main(["train", str(bare), "--config", str(config), "--out",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "subject 'a' (row 0, train) has no image column" in err
    assert "subject 'a' (row 0, train) has no world particle file" in err
    assert not (tmp_path / "run").exists()


def test_windows_paths_prepare_like_posix_paths(tmp_path):
    path, _ = _make_project(tmp_path / "posix")
    windows = tmp_path / "windows"
    windows.mkdir()
    content = json.loads(path.read_text(encoding="utf-8"))
    for row in content["data"]:
        for key, value in row.items():
            if key.startswith(("shape_", "groomed_", "local_", "world_", "image_")):
                row[key] = "..\\posix\\" + value
    (windows / "tiny.swproj").write_text(json.dumps(content), encoding="utf-8")
    kwargs = dict(spacing=3.0, padding_mm=4.0, progress=False)
    posix = prepare_dataset(path, tmp_path / "cache_posix", **kwargs)
    other = prepare_dataset(windows / "tiny.swproj", tmp_path / "cache_windows", **kwargs)
    assert other.split("train").names == posix.split("train").names
    assert other.grid == posix.grid


def _two_domains(path):
    """The project with every per-domain column doubled as domain 2."""
    content = json.loads(path.read_text(encoding="utf-8"))
    for row in content["data"]:
        for key in [k for k in row if k.endswith("_1")]:
            row[key[:-2] + "_2"] = row[key]
    out = path.with_name("two_domains.swproj")
    out.write_text(json.dumps(content), encoding="utf-8")
    return out


def test_several_domains_are_named_by_train_predict_and_evaluate(tmp_path, capsys):
    path, _ = make_consistent_project(tmp_path)
    run_dir = tmp_path / "run"
    train_tiny(path, run_dir)
    assert main(["predict", str(path), "--model", str(run_dir), "--device", "cpu",
                 "--no-progress", "--no-project"]) == 0
    two = _two_domains(path)
    capsys.readouterr()
    assert main(["info", str(two)]) == 0
    assert "domain 2" in capsys.readouterr().out
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    argvs = {"train": ["train", str(two), "--config", str(config), "--out",
                       str(tmp_path / "run2")],
             "predict": ["predict", str(two), "--model", str(run_dir), "--device", "cpu",
                         "--out", str(tmp_path / "pred2")],
             "evaluate": ["evaluate", str(two), "--predictions", str(run_dir), "--out",
                          str(tmp_path / "eval2")]}
    for command, argv in argvs.items():
        assert main(argv) == 2, command
        err = capsys.readouterr().err
        assert "has 2 domains ['1', '2']" in err, (command, err)
    assert not any((tmp_path / name).exists() for name in ("run2", "pred2", "eval2"))
