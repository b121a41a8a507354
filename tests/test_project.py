"""Tests of project.py: reading and writing ShapeWorks projects."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from shapeworks_progressive.errors import ProjectError
from shapeworks_progressive.particles import read_particles
from shapeworks_progressive.project import Project, Subject, detect_domains, parse_bool
from shapeworks_progressive.transforms import local_to_world


def _json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("which", ["left_atrium", "ellipsoid"])
def test_round_trip_keeps_json_content(which, examples_dir, copy_project):
    source = examples_dir / which / f"{which}.swproj"
    copied = copy_project(source)
    project = Project.load(copied)
    out = project.save(copied.parent / "resaved.swproj")
    original, written = _json(source), _json(out)
    assert written == original
    assert list(written) == list(original)
    assert [list(row) for row in written["data"]] == [list(row) for row in original["data"]]
    # The ellipsoid keeps its "./" prefixes, the unchanged text of every value.
    assert written["data"][0]["shape_1"] == original["data"][0]["shape_1"]


def test_left_atrium_fields(left_atrium_project):
    project = Project.load(left_atrium_project)
    folder = left_atrium_project.parent
    assert project.domains == ["1"]
    assert [s.name for s in project.subjects] == ["LA_04", "LA_03", "LA_02", "LA_01"]
    first = project.subjects[0]
    assert first.shapes == [folder / "LA_04.vtk"]
    assert first.groomed == [folder / "groomed" / "LA_04_groomed.vtk"]
    assert first.world_particles == [folder / "particles" / "LA_04_groomed_world.particles"]
    assert first.groups == {"sex": "M", "age": "Adult", "diabetic": "No"}
    assert first.alignments[0][0, 3] == pytest.approx(13.704221)
    assert first.alignments[0][1, 0] == pytest.approx(-0.122920)
    assert project.parameters("optimize")["number_of_particles"] == "128"
    assert project.parameters("groom")["1"]["alignment_method"] == "Iterative Closest Point"
    assert project.reference_index is None  # the groom section has no reference chosen


def test_left_atrium_world_equals_transformed_local(left_atrium_project):
    project = Project.load(left_atrium_project)
    for subject in project.subjects:
        local = read_particles(subject.local_particles[0])
        world = read_particles(subject.world_particles[0])
        assert local.shape == world.shape == (128, 3)
        mapped = local_to_world(local, subject.alignments[0], subject.procrustes[0])
        assert np.abs(mapped - world).max() < 1e-3
        # the stored alignment is not the identity, so this checks the transform use
        assert np.abs(local - world).max() > 1.0
        np.testing.assert_allclose(subject.world_transform(),
                                   subject.procrustes[0] @ subject.alignments[0])


# ---------------------------------------------------------------- paths


def test_copied_project_reads_from_another_working_directory(left_atrium_project, tmp_path,
                                                              monkeypatch):
    copied = tmp_path / "elsewhere" / "la"
    shutil.copytree(left_atrium_project.parent, copied)
    other = tmp_path / "cwd"
    other.mkdir()
    monkeypatch.chdir(other)
    project = Project.load(copied / "left_atrium.swproj")
    subject = project.subjects[3]
    assert subject.local_particles[0] == copied / "particles" / "LA_01_groomed_local.particles"
    assert read_particles(subject.local_particles[0]).shape == (128, 3)
    # a relative project path is taken from the CWD only to find the file itself
    relative = Project.load(Path("..") / "elsewhere" / "la" / "left_atrium.swproj")
    assert relative.folder == copied
    assert relative.subjects[3].local_particles == subject.local_particles


def test_windows_backslash_paths(left_atrium_copy):
    content = _json(left_atrium_copy)
    for row in content["data"]:
        for key in ("groomed_1", "local_particles_1", "world_particles_1"):
            row[key] = row[key].replace("/", "\\")
    windows = left_atrium_copy.parent / "windows.swproj"
    windows.write_text(json.dumps(content, indent=4))
    project = Project.load(windows)
    folder = left_atrium_copy.parent
    assert project.subjects[0].local_particles == [
        folder / "particles" / "LA_04_groomed_local.particles"]
    assert project.subjects[0].groomed[0].is_file()
    # unchanged values keep their text; saving elsewhere rewrites them with "/"
    assert project.to_dict()["data"][0]["groomed_1"] == "groomed\\LA_04_groomed.vtk"
    out = project.save(folder / "sub" / "moved.swproj")
    assert _json(out)["data"][0]["groomed_1"] == "../groomed/LA_04_groomed.vtk"


def test_save_to_another_folder_rewrites_relative_paths(left_atrium_copy):
    project = Project.load(left_atrium_copy)
    before = [s.world_particles[0] for s in project.subjects]
    out = project.save(left_atrium_copy.parent / "nested" / "deeper" / "copy.swproj")
    row = _json(out)["data"][0]
    assert row["world_particles_1"] == "../../particles/LA_04_groomed_world.particles"
    assert row["alignment_1"] == _json(left_atrium_copy)["data"][0]["alignment_1"]
    reloaded = Project.load(out)
    assert [s.world_particles[0] for s in reloaded.subjects] == before
    assert project.path == out


# ---------------------------------------------------------------- changes and new rows


def test_changed_fields_are_rewritten_and_the_rest_kept(left_atrium_copy):
    project = Project.load(left_atrium_copy)
    folder = left_atrium_copy.parent
    subject = project.subjects[1]
    subject.world_particles[0] = folder / "predicted" / "LA_03_world.particles"
    subject.procrustes[0] = np.diag([2.0, 2.0, 2.0, 1.0])
    subject.groups["sex"] = "F"
    subject.extra["split"] = "test"
    subject.excluded = True
    out = project.save(folder / "changed.swproj")
    original, row = _json(left_atrium_copy)["data"][1], _json(out)["data"][1]
    assert row["world_particles_1"] == "predicted/LA_03_world.particles"
    assert row["procrustes_1"].split()[:6] == ["2.000000", "0.000000", "0.000000",
                                               "0.000000", "0.000000", "2.000000"]
    assert row["group_sex"] == "F"
    assert row["split"] == "test" and row["excluded"] == "true"
    for key in ("name", "shape_1", "groomed_1", "local_particles_1", "alignment_1"):
        assert row[key] == original[key]
    assert list(row)[: len(original)] == list(original)
    # other rows untouched
    assert _json(out)["data"][0] == _json(left_atrium_copy)["data"][0]
    assert Project.load(out).subjects_in_split("test")[0].name == "LA_03"


def test_legacy_feature_and_segmentation_columns(tmp_path):
    (tmp_path / "img").mkdir()
    content = {"data": [
        {"name": "a", "segmentation_femur": "seg\\a.nrrd", "feature_ct": "img/a.nrrd",
         "": "", "name_alt": "x", "notes": "n"},
        {"name": "b", "segmentation_femur": "seg/b.nrrd", "feature_ct": "img/b.nrrd",
         "": "", "name_alt": "y", "notes": ""},
    ], "groom": {"femur": {"alignment_reference_chosen": "1", "blur": None}},
        "custom_section": {"anything": [1, 2]}}
    path = tmp_path / "legacy.swproj"
    path.write_text(json.dumps(content))
    project = Project.load(path)
    assert project.domains == ["femur"]
    assert project.subjects[0].shapes == [tmp_path / "seg" / "a.nrrd"]
    assert project.subjects[0].image == tmp_path / "img" / "a.nrrd"
    assert project.subjects[0].extra == {"notes": "n"}  # "" and name_* are not extras
    assert project.reference_index == 1
    assert project.parameters("groom") == {"femur": {"alignment_reference_chosen": "1"}}
    project.subjects[1].images["ct"] = tmp_path / "img" / "b2.nrrd"
    out = project.save(tmp_path / "out.swproj")
    written = _json(out)
    assert written["data"][0] == content["data"][0]  # unchanged: legacy keys kept
    assert list(written["data"][1]) == ["name", "segmentation_femur", "image_ct", "",
                                        "name_alt", "notes"]
    assert written["data"][1]["image_ct"] == "img/b2.nrrd"
    assert written["groom"] == content["groom"] and written["custom_section"] == {
        "anything": [1, 2]}


def test_new_project_rows_use_shapeworks_columns(tmp_path):
    project = Project.new(tmp_path / "out" / "pred.swproj", domains=("femur",))
    project.add_subject(Subject(
        name="case03_pred",
        local_particles=["p/case03_local.particles"],  # relative: from the project folder
        world_particles=[tmp_path / "out" / "p" / "case03_world.particles"],
        alignments=[np.eye(4)], images={"ct": tmp_path / "images" / "case03.nrrd"},
        groups={"source": "predicted"}, extra={"split": "test"}, excluded=True))
    project.set_parameters("deepssm", {"spacing": (1.0, 1.0, 1.0), "train_epochs": 5,
                                       "train_fine_tuning": False})
    out = project.save()
    written = _json(out)
    row = written["data"][0]
    assert list(row) == ["name", "shape_femur", "groomed_femur", "local_particles_femur",
                         "world_particles_femur", "alignment_femur", "procrustes_femur",
                         "image_ct", "group_source", "excluded", "fixed", "split"]
    assert row["local_particles_femur"] == "p/case03_local.particles"
    assert row["image_ct"] == "../images/case03.nrrd"
    assert row["shape_femur"] == "" and row["excluded"] == "true"
    assert row["procrustes_femur"] == " ".join(
        f"{v:.6f}" for v in np.eye(4).ravel())
    assert written["deepssm"] == {"spacing": "1.000000 1.000000 1.000000",
                                  "train_epochs": "5", "train_fine_tuning": "false"}
    assert written["project"] == {"version": "2"}
    assert all(isinstance(v, str) for v in row.values())
    again = Project.load(out)
    assert again.domains == ["femur"]
    assert again.subjects[0].world_particles == [tmp_path / "out" / "p" / "case03_world.particles"]
    project.save()  # a project we created may be saved again at its own path


def test_saving_onto_the_loaded_file_needs_overwrite(left_atrium_copy):
    before = left_atrium_copy.read_bytes()
    project = Project.load(left_atrium_copy)
    project.subjects[0].name = "renamed"
    with pytest.raises(ProjectError, match="refusing to overwrite"):
        project.save()
    with pytest.raises(ProjectError, match="refusing to overwrite"):
        project.save(left_atrium_copy)
    assert left_atrium_copy.read_bytes() == before
    project.save(overwrite=True)
    assert _json(left_atrium_copy)["data"][0]["name"] == "renamed"


# ---------------------------------------------------------------- domains and values


@pytest.mark.parametrize("row, domains", [
    ({"name": "a", "shape_femur": "", "mesh_pelvis": "", "groomed_x": ""}, ["femur", "pelvis"]),
    ({"groomed_left": "", "groomed_right": "", "local_particles_q": ""}, ["left", "right"]),
    ({"local_particles_1": "a", "world_particles_1": "b"}, ["1"]),
    ({"contour_c": "", "groomed_d": ""}, ["c"]),
])
def test_domain_detection(row, domains):
    assert detect_domains(row) == domains


@pytest.mark.parametrize("text, value", [("true", True), ("FALSE", False), ("1", True),
                                         ("0", False), ("yes", False), ("", False)])
def test_parse_bool_as_shapeworks(text, value):
    assert parse_bool(text) is value


def test_multi_domain_project(tmp_path):
    content = {"data": [{
        "name": "s", "shape_femur": "f.vtk", "shape_pelvis": "p.vtk",
        "local_particles_femur": "fl.particles", "local_particles_pelvis": "pl.particles",
        "world_particles_femur": "fw.particles", "world_particles_pelvis": "pw.particles",
        "alignment_femur": "1 0 0 1 0 1 0 0 0 0 1 0 0 0 0 1",
        "alignment_pelvis": "1 0 0 2 0 1 0 0 0 0 1 0 0 0 0 1",
        "alignment_global": "1 0 0 3 0 1 0 0 0 0 1 0 0 0 0 1"}]}
    path = tmp_path / "two.swproj"
    path.write_text(json.dumps(content))
    project = Project.load(path)
    subject = project.subjects[0]
    assert project.domains == ["femur", "pelvis"]
    assert subject.world_particles == [tmp_path / "fw.particles", tmp_path / "pw.particles"]
    assert subject.world_transform(1)[0, 3] == 2.0
    assert subject.extra == {"alignment_global": "1 0 0 3 0 1 0 0 0 0 1 0 0 0 0 1"}
    assert project.to_dict()["data"] == content["data"]


# ---------------------------------------------------------------- errors


def test_unknown_suffix_is_an_error(tmp_path):
    path = tmp_path / "project.json"
    path.write_text("{}")
    with pytest.raises(ProjectError, match=r"unknown project file type '\.json'"):
        Project.load(path)


def test_missing_project_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.swproj"):
        Project.load(tmp_path / "nothere.swproj")


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.swproj"
    path.write_text('{\n    "data": [\n        {"name": "a",}\n    ]\n}\n')
    with pytest.raises(ProjectError, match=r"bad\.swproj is not valid JSON: .* line 3"):
        Project.load(path)


def test_non_string_values_are_listed(tmp_path):
    path = tmp_path / "typed.swproj"
    content = {"data": [{"name": "a", "excluded": False, "world_particles_1": "a.particles"},
                        {"name": "b", "group_age": 42}],
               "optimize": {"number_of_particles": 128}}
    path.write_text(json.dumps(content))
    with pytest.raises(ProjectError) as info:
        Project.load(path)
    message = str(info.value)
    assert "data row 0 ('a'), key 'excluded': value false (bool)" in message
    assert "data row 1 ('b'), key 'group_age': value 42 (int)" in message
    assert "section 'optimize', key 'number_of_particles': value 128 (int)" in message


def test_malformed_transform_names_row_and_column(tmp_path):
    path = tmp_path / "t.swproj"
    path.write_text(json.dumps({"data": [{"name": "a", "alignment_1": "1 0 0"}]}))
    with pytest.raises(ProjectError, match=r"row 0 \('a'\): column 'alignment_1'.* 3 numbers"):
        Project.load(path)


# ---------------------------------------------------------------- xlsx


def _write_xlsx(path: Path, header: list, rows: list, sheets: dict) -> None:
    from openpyxl import Workbook

    workbook = Workbook()
    data = workbook.active
    data.title = "data"
    data.append(header)
    for row in rows:
        data.append(row)
    for name, table in sheets.items():
        sheet = workbook.create_sheet(name)
        for row in table:
            sheet.append(row)
    workbook.save(path)


def test_xlsx_project_reads_and_round_trips(left_atrium_copy):
    folder = left_atrium_copy.parent
    path = folder / "atrium.xlsx"
    header = ["name", "shape_1", "groomed_1", "local_particles_1", "world_particles_1",
              "alignment_1", "group_age", "split"]
    rows = [[f"LA_0{i}", f"LA_0{i}.vtk", f"groomed/LA_0{i}_groomed.vtk",
             f"particles\\LA_0{i}_groomed_local.particles",
             f"particles/LA_0{i}_groomed_world.particles",
             "1 0 0 5 0 1 0 0 0 0 1 0 0 0 0 1", 40 + i, "train" if i < 4 else "test"]
            for i in range(1, 5)]
    sheets = {"optimize": [["key", "value"], ["number_of_particles", 128],
                           ["relative_weighting", 0.5]],
              "groom": [["key", "value_1"], ["alignment_reference_chosen", 2]],
              "landmarks": [["domain", "name", "visible", "color", "comment"]]}
    _write_xlsx(path, header, rows, sheets)
    project = Project.load(path)
    assert project.domains == ["1"]
    assert len(project.subjects) == 4
    first = project.subjects[0]
    assert first.local_particles == [folder / "particles" / "LA_01_groomed_local.particles"]
    assert first.groups == {"age": "41"}  # numbers are read as text
    assert first.alignments[0][0, 3] == 5.0
    assert [s.name for s in project.subjects_in_split("test")] == ["LA_04"]
    assert project.parameters("optimize") == {"number_of_particles": "128",
                                              "relative_weighting": "0.5"}
    assert project.reference_index == 2

    again = Project.load(project.save(folder / "again.xlsx"))
    assert [s.name for s in again.subjects] == [s.name for s in project.subjects]
    assert again.subjects[2].world_particles == project.subjects[2].world_particles
    assert again.parameters("groom") == {"1": {"alignment_reference_chosen": "2"}}
    assert again.parameters("optimize") == project.parameters("optimize")
    as_json = _json(again.save(folder / "from_xlsx.swproj"))
    assert as_json["data"][0]["group_age"] == "41"
    assert as_json["data"][0]["local_particles_1"] == (
        "particles\\LA_01_groomed_local.particles")


def test_swproj_to_xlsx_and_back_keeps_content(left_atrium_copy):
    project = Project.load(left_atrium_copy)
    xlsx = project.save(left_atrium_copy.parent / "la.xlsx")
    back = Project.load(xlsx).save(left_atrium_copy.parent / "la_back.swproj")
    original, written = _json(left_atrium_copy), _json(back)
    assert written["data"] == original["data"]
    assert written["groom"] == original["groom"]
    assert written["optimize"] == original["optimize"]
    assert written["studio"]["notes"] == original["studio"]["notes"]


def test_null_flat_section_reads_empty_and_is_written_as_object(tmp_path):
    path = tmp_path / "nulls.swproj"
    path.write_text(json.dumps({"data": [{"name": "a"}], "studio": None,
                                "groom": {"1": None}}))
    project = Project.load(path)
    assert project.parameters("studio") == {}
    assert project.parameters("groom") == {"1": {}}
    written = _json(project.save(tmp_path / "out.swproj"))
    assert written["studio"] == {} and written["groom"] == {"1": None}
