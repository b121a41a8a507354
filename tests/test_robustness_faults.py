"""Robustness, faults: killed runs, failures, half-written files, unusable GPUs.

- a ``train`` process killed after its first checkpoint resumes with ``--resume`` and
  ends with the same epochs and log as an uninterrupted run;
- a failure exits non-zero with its cause and never prints the success lines;
- a write that fails midway leaves the target untouched and no temporary file
  (projects, particle files, checkpoints);
- a GPU that torch reports but cannot use is found by a tiny probe and named in the
  error; the CPU is used only when asked for.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from shapeworks_progressive import fileio
from shapeworks_progressive.checkpoints import load_checkpoint, load_model, save_checkpoint
from shapeworks_progressive.cli import main
from shapeworks_progressive.errors import DeviceError
from shapeworks_progressive.particles import read_particles, write_particles
from shapeworks_progressive.project import Project
from shapeworks_progressive.training import select_device

from test_predict import TINY_CONFIG, make_consistent_project, train_tiny

RESUME_CONFIG = dict(TINY_CONFIG, schedule={"epochs_per_stage": 1, "final_epochs": 6})
TOTAL_EPOCHS = 3 + 6  # 4 scales: one epoch for each of the first three stages, then 6


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _log(run_dir) -> list[dict]:
    with open(run_dir / "train_log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _temporary_files(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


def test_killed_train_resumes_and_ends_like_an_uninterrupted_run(tmp_path):
    path, _ = make_consistent_project(tmp_path)
    config = tmp_path / "resume.json"
    config.write_text(json.dumps(RESUME_CONFIG))
    killed = tmp_path / "killed"
    code = ("import sys; from shapeworks_progressive.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    process = subprocess.Popen(
        [sys.executable, "-c", code, "train", str(path), "--config", str(config), "--out",
         str(killed), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.monotonic() + 120
    while not (killed / "last.pt").is_file() and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL  # killed, not finished
    done_at_kill = load_checkpoint(killed / "last.pt")["train_state"]["epochs_done"]
    assert 1 <= done_at_kill < TOTAL_EPOCHS

    assert main(["train", str(path), "--out", str(killed), "--resume", "--no-progress"]) == 0
    straight = tmp_path / "straight"
    assert main(["train", str(path), "--config", str(config), "--out", str(straight),
                 "--no-progress"]) == 0
    resumed_log, straight_log = _log(killed), _log(straight)
    assert [r["epoch"] for r in resumed_log] == [str(e) for e in range(1, TOTAL_EPOCHS + 1)]
    assert [r["epoch"] for r in resumed_log] == [r["epoch"] for r in straight_log]
    last_resumed, last_straight = resumed_log[-1], straight_log[-1]
    # Alone, a resumed run matches to the last bit at every kill point (1 to 8 epochs
    # done). Inside the full suite one run in many differed by 3e-4 relative (the killed
    # part ran in a fresh process, the straight run in the test process), so the
    # tolerance is 1e-3. Training with another seed changes these numbers by about 30%,
    # so a resume that lost the RNG, optimizer or schedule state still fails.
    for key in last_straight:
        if key.startswith(("train_", "val_")) and last_straight[key]:
            assert float(last_resumed[key]) == pytest.approx(float(last_straight[key]),
                                                             rel=1e-3), key
    assert _temporary_files(killed) == []


def test_failure_exits_non_zero_with_its_cause_and_no_success_line(tmp_path, capsys):
    path, _ = make_consistent_project(tmp_path)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the run folder should be", encoding="utf-8")
    code = main(["train", str(path), "--config", str(config), "--out",
                 str(blocker / "run"), "--no-progress"])
    assert code == 1
    captured = capsys.readouterr()
    assert "error:" in captured.err and "not_a_folder" in captured.err
    assert "best checkpoint" not in captured.out and "run folder" not in captured.out


def _write_half_then_fail(monkeypatch):
    """Make every text write put half its text in the file, then fail (disk full)."""
    original = Path.write_text

    def broken(self, data, *args, **kwargs):
        original(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", broken)


def test_failed_writes_leave_targets_untouched_and_no_temporary_file(tmp_path, monkeypatch):
    path, _ = make_consistent_project(tmp_path)
    particles_path = tmp_path / "ell_0_world.particles"
    particles_before = particles_path.read_bytes()
    project_before = path.read_bytes()
    project = Project.load(path)
    project.subjects[0].extra["split"] = "test"

    _write_half_then_fail(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        write_particles(particles_path, np.zeros((64, 3)))
    with pytest.raises(OSError, match="No space left"):
        project.save(overwrite=True)
    with pytest.raises(OSError, match="No space left"):
        fileio.atomic_write_text(tmp_path / "new_file.json", "{}")
    monkeypatch.undo()

    assert particles_path.read_bytes() == particles_before
    assert path.read_bytes() == project_before
    assert not (tmp_path / "new_file.json").exists()
    assert _temporary_files(tmp_path) == []
    assert read_particles(particles_path).shape == (64, 3)


def test_failed_checkpoint_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path, _ = make_consistent_project(tmp_path)
    run_dir = tmp_path / "run"
    train_tiny(path, run_dir)
    before = (run_dir / "last.pt").read_bytes()
    original_save = torch.save

    def half_save(obj, target, *args, **kwargs):
        original_save({"partial": torch.zeros(3)}, target)
        with open(target, "r+b") as handle:
            handle.truncate(10)
        raise OSError(28, "No space left on device")

    model, meta = load_model(run_dir / "last.pt")
    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(run_dir / "last.pt", model=model, config=meta["config"],
                        prediction=meta["prediction"], kind="last")
    monkeypatch.undo()
    assert (run_dir / "last.pt").read_bytes() == before
    assert _temporary_files(run_dir) == []
    assert load_checkpoint(run_dir / "last.pt")["kind"] == "last"


@pytest.fixture
def fake_gpu(monkeypatch):
    """torch reports one CUDA GPU that cannot run anything (this torch is a CPU build)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Fake GPU 9000")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    if torch.backends.cuda.is_built():  # a real CUDA build: make the probe itself fail
        original_ones = torch.ones

        def ones(*args, device=None, **kwargs):
            if device is not None and torch.device(device).type == "cuda":
                raise RuntimeError("CUDA error: no kernel image is available for execution")
            return original_ones(*args, device=device, **kwargs)

        monkeypatch.setattr(torch, "ones", ones)


def test_unusable_gpu_is_named_and_never_silently_replaced(fake_gpu):
    for name in ("auto", "cuda"):
        with pytest.raises(DeviceError, match=r"'Fake GPU 9000' \(cuda:0\) is not usable"):
            select_device(name)
    assert select_device("cpu") == torch.device("cpu")


def test_unusable_gpu_stops_train_and_predict_before_work(fake_gpu, tmp_path, capsys):
    path, _ = make_consistent_project(tmp_path)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(dict(TINY_CONFIG, run={"num_threads": 1})))
    for device in ("auto", "cuda"):
        out = tmp_path / f"run_{device}"
        code = main(["train", str(path), "--config", str(config), "--out", str(out),
                     "--device", device, "--no-progress"])
        assert code == 2
        err = capsys.readouterr().err
        assert "Fake GPU 9000" in err and "'cpu'" in err
        assert not (out / "last.pt").exists()
    cpu_run = tmp_path / "run_cpu"
    assert main(["train", str(path), "--config", str(config), "--out", str(cpu_run),
                 "--device", "cpu", "--no-progress"]) == 0
    capsys.readouterr()
    code = main(["predict", str(path), "--model", str(cpu_run), "--no-progress"])
    assert code == 2
    assert "Fake GPU 9000" in capsys.readouterr().err
    assert not (cpu_run / "predictions").exists()
