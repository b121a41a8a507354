"""Atomic writes and strict-JSON values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from shapeworks_progressive.fileio import atomic_path, atomic_write_text, json_safe


def test_json_safe_gives_strict_json():
    value = {1: np.float32(2.5), "nan": math.nan, "inf": np.float64(np.inf), "n": np.int64(3),
             "flag": np.bool_(True), "path": Path("a/b"), "seq": (np.arange(2), [np.nan])}
    text = json.dumps(json_safe(value), allow_nan=False)
    assert json.loads(text) == {"1": 2.5, "nan": None, "inf": None, "n": 3, "flag": True,
                                "path": "a/b", "seq": [[0, 1], [None]]}


def test_failed_write_leaves_the_target_and_no_temporary_file(tmp_path):
    target = atomic_write_text(tmp_path / "x.json", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
