"""Several outputs of one command land together or not at all."""

from __future__ import annotations

import os

import pytest

from edgeq.fileio import OutputSet


def test_all_outputs_land_on_success(tmp_path):
    with OutputSet() as out:
        out.path(tmp_path / "m.onnx").write_bytes(b"model")
        out.path(tmp_path / "s.json").write_text("{}")
        assert not (tmp_path / "m.onnx").exists()  # nothing visible before the commit
    assert (tmp_path / "m.onnx").read_bytes() == b"model"
    assert (tmp_path / "s.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "s.json"]


def test_nothing_lands_when_the_block_fails(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"old")
    with pytest.raises(RuntimeError), OutputSet() as out:
        out.path(tmp_path / "m.onnx").write_bytes(b"new")
        raise RuntimeError("interrupted")
    assert (tmp_path / "m.onnx").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_a_failing_rename_puts_back_the_ones_already_done(tmp_path, monkeypatch):
    (tmp_path / "a").write_text("old a")
    out = OutputSet()
    out.path(tmp_path / "a").write_text("new a")
    out.path(tmp_path / "b").write_text("new b")
    real = os.replace
    calls = {"n": 0}

    def flaky(src, dst):
        if str(dst).endswith("/b"):
            raise PermissionError("read-only")
        calls["n"] += 1
        return real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(PermissionError):
        out.commit()
    monkeypatch.setattr(os, "replace", real)
    assert (tmp_path / "a").read_text() == "old a"
    assert not (tmp_path / "b").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert calls["n"] >= 2  # a was replaced and then restored


def test_a_folder_is_not_a_file_output(tmp_path):
    from edgeq.errors import ConfigError

    with pytest.raises(ConfigError, match="is a folder"), OutputSet() as out:
        out.path(tmp_path)
