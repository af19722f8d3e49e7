"""Atomic writers: the old file or the whole new one, and no temporary file left behind on any error."""

from __future__ import annotations

import numpy as np
import pytest

from fusar_gpt.geo.anchors import Anchors
from fusar_gpt.io_atomic import atomic_dir, atomic_path, replace_dir, write_json, write_jsonl, write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "metrics.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    with pytest.raises(OSError):  # the rename itself fails: a non-empty directory holds the name
        write_json(tmp_path / "busy", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "metrics.json"]


def test_writers_give_whole_files_and_readable_modes(tmp_path):
    write_jsonl(tmp_path / "sub" / "p.jsonl", [{"id": 1}, {"id": 2}])
    assert (tmp_path / "sub" / "p.jsonl").read_text() == '{"id": 1}\n{"id": 2}\n'
    assert (tmp_path / "sub" / "p.jsonl").stat().st_mode & 0o777 == 0o644
    a = Anchors(np.zeros((4, 64), np.float32), np.zeros((4, 2), np.float32), np.ones(4, bool), year=2024)
    torn = Anchors(a.features, a.positions, a.mask, year=2024)
    torn.lonlat = np.array([object()] * 4, dtype=object)  # the npz writer fails half-way through the file
    with pytest.raises(ValueError, match="Object arrays"):
        torn.save(tmp_path / "a.npz")
    assert not list(tmp_path.glob("*.npz")) and not list(tmp_path.glob(".*"))
    a.save(tmp_path / "a.npz")
    assert Anchors.load(tmp_path / "a.npz").year == 2024 and not list(tmp_path.glob(".*"))


def test_a_failed_directory_is_removed_and_an_empty_target_replaced(tmp_path):
    out = tmp_path / "export"
    with pytest.raises(ValueError), atomic_dir(out) as tmp:
        (tmp / "weights").write_text("half")
        raise ValueError("interrupted")
    assert not out.exists() and not list(tmp_path.iterdir())
    out.mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "weights").write_text("whole")
    assert (out / "weights").read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == ["export"]


def test_replace_dir_keeps_the_old_folder_whole_until_the_new_one_is(tmp_path):
    base = tmp_path / "demo-base"
    with replace_dir(base) as tmp:  # no previous version
        (tmp / "weights").write_text("v1")
    assert (base / "weights").read_text() == "v1" and [p.name for p in tmp_path.iterdir()] == ["demo-base"]
    assert base.stat().st_mode & 0o777 == 0o755
    with pytest.raises(RuntimeError), replace_dir(base) as tmp:
        (tmp / "weights").write_text("half")
        assert (base / "weights").read_text() == "v1"  # still the old one while the new one is written
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in base.iterdir()) == ["weights"] and (base / "weights").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["demo-base"]
    with replace_dir(base) as tmp:
        (tmp / "model").write_text("v2")
    assert sorted(p.name for p in base.iterdir()) == ["model"] and (base / "model").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["demo-base"]  # the old version and the temporaries are gone
