"""Tests of ``shapeworks-progressive info`` and validation.py, on broken copies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shapeworks_progressive.cli import main
from shapeworks_progressive.project import Project
from shapeworks_progressive.validation import validate_project


def _info(capsys, *args) -> tuple[int, str, str]:
    code = main(["info", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _particles(project_path: Path, name: str, frame: str = "world") -> Path:
    return project_path.parent / "particles" / f"{name}_groomed_{frame}.particles"


def test_left_atrium_summary(capsys, left_atrium_project):
    code, out, _ = _info(capsys, left_atrium_project)
    assert code == 0
    lines = out.splitlines()
    assert "subjects: 4" in lines
    assert "domains: 1" in lines
    assert any(line.startswith("particles in domain 1: 128;") for line in lines)
    assert "groups: age, diabetic, sex" in lines
    assert "problems: none" in lines


def test_console_script_runs(left_atrium_project):
    script = Path(sys.executable).parent / "shapeworks-progressive"
    if not script.exists():
        pytest.skip("console script not installed")
    result = subprocess.run([str(script), "info", str(left_atrium_project)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "subjects: 4" in result.stdout



@pytest.mark.parametrize("module", ["shapeworks_progressive", "shapeworks_progressive.cli"])
def test_python_dash_m_runs(left_atrium_project, module):
    result = subprocess.run([sys.executable, "-m", module, "info", str(left_atrium_project)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "subjects: 4" in result.stdout


def test_ctrl_c_is_one_line_and_status_130(capsys, monkeypatch, left_atrium_project):
    from shapeworks_progressive.cli import info

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(info, "run", interrupted)
    code = main(["info", str(left_atrium_project)])
    err = capsys.readouterr().err
    assert code == 130
    assert "--resume" in err and "Traceback" not in err

def test_ellipsoid_example_world_disagrees_with_its_transforms(capsys, ellipsoid_project):
    # The example's world files are centred local particles; its stored alignments are
    # from another grooming run, so world != alignment . local by tens of mm.
    code, out, _ = _info(capsys, ellipsoid_project)
    assert code == 1
    assert "3 problem(s):" in out
    assert out.count("world particles disagree") == 3
    assert "subject 'ellipsoid_00_DT'" in out


def test_missing_file(capsys, left_atrium_copy):
    _particles(left_atrium_copy, "LA_02", "local").unlink()
    (left_atrium_copy.parent / "groomed" / "LA_03_groomed.vtk").unlink()
    code, out, _ = _info(capsys, left_atrium_copy)
    assert code == 1
    assert "2 problem(s):" in out
    assert (f"subject 'LA_02', {_particles(left_atrium_copy, 'LA_02', 'local')}: "
            "local particle file of domain '1' is missing") in out
    assert "subject 'LA_03'" in out and "groomed file of domain '1' is missing" in out


def test_particle_counts_differ(capsys, left_atrium_copy):
    for frame in ("local", "world"):
        path = _particles(left_atrium_copy, "LA_01", frame)
        lines = path.read_text().splitlines()
        path.write_text("\n".join(lines[:100]) + "\n")
    code, out, _ = _info(capsys, left_atrium_copy)
    assert code == 1
    assert "particles in domain 1: 128;" in out
    assert out.count("holds 100 particles for domain '1', while the other particle files "
                     "hold 128") == 2
    assert "subject 'LA_01'" in out


def test_empty_particle_file(capsys, left_atrium_copy):
    _particles(left_atrium_copy, "LA_04").write_text("")
    code, out, _ = _info(capsys, left_atrium_copy)
    assert code == 1
    assert f"subject 'LA_04', {_particles(left_atrium_copy, 'LA_04')}: world particles" in out
    assert "is empty" in out


def test_nan_particles(capsys, left_atrium_copy):
    path = _particles(left_atrium_copy, "LA_03")
    lines = path.read_text().splitlines()
    lines[7] = "nan 1.0 2.0"
    lines[9] = "1.0 inf 2.0"
    path.write_text("\n".join(lines) + "\n")
    code, out, _ = _info(capsys, left_atrium_copy)
    assert code == 1
    assert "world particles hold NaN or Inf in 2 of 128 rows (rows 7, 9)" in out
    assert "subject 'LA_03'" in out


def test_world_disagrees_with_transforms(capsys, left_atrium_copy):
    path = _particles(left_atrium_copy, "LA_02")
    world = np.loadtxt(path)
    world[5] += [0.0, 0.05, 0.0]  # 50 micrometres: beyond the 1 micrometre tolerance
    np.savetxt(path, world, fmt="%.6f")
    code, out, _ = _info(capsys, left_atrium_copy)
    assert code == 1
    assert "1 problem(s):" in out
    assert "subject 'LA_02'" in out and "by up to 0.05 mm (particle 5" in out
    # a looser tolerance accepts it
    code, out, _ = _info(capsys, left_atrium_copy, "--tolerance-mm", "0.1")
    assert code == 0, out


def test_every_problem_is_listed_at_once(capsys, left_atrium_copy):
    _particles(left_atrium_copy, "LA_01", "local").unlink()
    _particles(left_atrium_copy, "LA_02").write_text("")
    path = _particles(left_atrium_copy, "LA_03")
    path.write_text(path.read_text().replace("\n", "\nnan nan nan\n", 1))
    report = validate_project(Project.load(left_atrium_copy))
    kinds = sorted(p.kind for p in report.problems)
    assert kinds == ["empty", "missing", "nonfinite"]
    assert [p.subject for p in sorted(report.problems, key=lambda p: p.kind)] == [
        "LA_02", "LA_01", "LA_03"]
    code, out, _ = _info(capsys, left_atrium_copy)
    assert code == 1 and f"{len(report.problems)} problem(s):" in out


def test_unreadable_project_exits_2(capsys, tmp_path):
    bad = tmp_path / "bad.swproj"
    bad.write_text('{"data": [\n{"name": 1}\n]}')
    code, out, err = _info(capsys, bad)
    assert code == 2
    assert "key 'name': value 1 (int)" in err
    code, _, err = _info(capsys, tmp_path / "missing.swproj")
    assert code == 2 and "project file not found" in err
    broken = tmp_path / "broken.swproj"
    broken.write_text('{"data": [\n')
    code, _, err = _info(capsys, broken)
    assert code == 2 and "line 2" in err


def _image(path: Path, size, spacing) -> None:
    import SimpleITK as sitk

    image = sitk.Image([int(s) for s in size], sitk.sitkInt16)
    image.SetSpacing([float(s) for s in spacing])
    sitk.WriteImage(image, str(path))


def test_images_are_summarised_and_odd_geometry_is_a_note(capsys, left_atrium_copy):
    folder = left_atrium_copy.parent
    content = json.loads(left_atrium_copy.read_text())
    for index, row in enumerate(content["data"]):
        spacing = (2.0, 2.0, 2.0) if index == 0 else (1.0, 1.0, 1.0)
        _image(folder / f"img{index}.nrrd", (6 + index, 5, 4), spacing)
        row["image_mri"] = f"img{index}.nrrd"
    content["data"][1]["split"] = "test"
    path = folder / "with_images.swproj"
    path.write_text(json.dumps(content))
    code, out, _ = _info(capsys, path)
    assert code == 0, out
    assert "images: 4 of 4 subjects (mri 4)" in out
    assert "  LA_04 mri: size 6 x 5 x 4, spacing 2 x 2 x 2 mm, 16-bit signed integer" in out
    assert "notes (1):" in out
    assert "subject 'LA_04'" in out and "spacing 2 x 2 x 2 mm unlike most images" in out
    assert "splits: (none) 3, test 1" in out
    # a missing image is a problem
    (folder / "img2.nrrd").unlink()
    code, out, _ = _info(capsys, path)
    assert code == 1 and "image 'mri' is missing" in out and "subject 'LA_02'" in out


def test_multi_domain_counts_are_reported_per_domain(capsys, tmp_path):
    rng = np.random.default_rng(3)
    rows = []
    for name in ("s0", "s1"):
        row = {"name": name}
        for domain, count in (("femur", 4), ("pelvis", 6)):
            local = rng.normal(size=(count, 3))
            np.savetxt(tmp_path / f"{name}_{domain}_local.particles", local, fmt="%.6f")
            np.savetxt(tmp_path / f"{name}_{domain}_world.particles", local + [0, 0, 10],
                       fmt="%.6f")
            row[f"local_particles_{domain}"] = f"{name}_{domain}_local.particles"
            row[f"world_particles_{domain}"] = f"{name}_{domain}_world.particles"
            row[f"alignment_{domain}"] = "1 0 0 0 0 1 0 0 0 0 1 10 0 0 0 1"
        rows.append(row)
    # groomed_ keys in the first row name the domains
    rows[0] = {"groomed_femur": "", "groomed_pelvis": "", **rows[0]}
    path = tmp_path / "two.swproj"
    path.write_text(json.dumps({"data": rows}))
    report = validate_project(Project.load(path))
    assert report.ok, [str(p) for p in report.problems]
    assert report.particle_counts == {"femur": 4, "pelvis": 6}
    code, out, _ = _info(capsys, path)
    assert code == 0
    assert "domains: femur, pelvis" in out
    assert "particles in domain pelvis: 6;" in out
    np.savetxt(tmp_path / "s1_pelvis_world.particles", np.zeros((6, 3)), fmt="%.6f")
    code, out, _ = _info(capsys, path)
    assert code == 1 and "subject 's1'" in out and "s1_pelvis_world.particles" in out


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as info:
        main(["info", "--help"])
    assert info.value.code == 0
    assert "--tolerance-mm" in capsys.readouterr().out


def test_training_commands_warn_when_info_would_reject_the_project(ellipsoid_project, caplog,
                                                                    capsys):
    import logging

    with caplog.at_level(logging.WARNING):
        code = main(["compare", str(ellipsoid_project), "--models", "deepssm", "--seeds",
                     "1", "--epochs", "1"])
    assert code == 2  # then stopped: the example has no images and no split
    assert "info` finds 3 problem(s)" in caplog.text
    assert "world particles disagree" in caplog.text and "ellipsoid_00_DT" in caplog.text
