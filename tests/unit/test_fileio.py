"""Atomic writes: complete or absent, and with the permissions an ordinary write would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from edgeq_runtime import _fileio as runtime_fileio

from edgeq import fileio


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_and_folders_get_the_umask_mode(tmp_path, umask_022):
    assert _mode(fileio.atomic_write_text(tmp_path / "report.json", "{}")) == 0o644
    assert _mode(runtime_fileio.atomic_write_text(tmp_path / "result.json", "{}")) == 0o644
    with fileio.atomic_directory(tmp_path / "bundle") as folder:
        (folder / "model.onnx").write_bytes(b"x")
    assert _mode(tmp_path / "bundle") == 0o755


def test_a_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "calib.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), fileio.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["calib.json"]
