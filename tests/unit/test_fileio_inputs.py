"""An output path that names an input (directly, through a symlink or a hard link) is refused."""

from __future__ import annotations

import os

import pytest

from edgeq.errors import ConfigError
from edgeq.fileio import refuse_overwriting_inputs


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"model")
    (tmp_path / "m.onnx.data").write_bytes(b"weights")
    return path


def test_same_path_is_refused(model):
    with pytest.raises(ConfigError, match=r"^-o .*m\.onnx: that is the input"):
        refuse_overwriting_inputs({"-o": model}, [model])


def test_relative_spelling_is_refused(model, monkeypatch):
    monkeypatch.chdir(model.parent)
    with pytest.raises(ConfigError):
        refuse_overwriting_inputs({"--summary": "./sub/../m.onnx"}, [model])


def test_symlink_and_hard_link_are_refused(model, tmp_path):
    (tmp_path / "link.onnx").symlink_to(model)
    os.link(model, tmp_path / "hard.onnx")
    for name in ("link.onnx", "hard.onnx"):
        with pytest.raises(ConfigError, match="that is the input"):
            refuse_overwriting_inputs({"-o": tmp_path / name}, [model])


def test_external_data_file_is_refused(model):
    data = model.with_name("m.onnx.data")
    with pytest.raises(ConfigError, match=r"m\.onnx\.data"):
        refuse_overwriting_inputs({"--json": data}, [model, data])


def test_folder_holding_the_input_is_refused(model):
    with pytest.raises(ConfigError, match="the folder holds the input"):
        refuse_overwriting_inputs({"-o": model.parent}, [model])


def test_other_paths_pass(model, tmp_path):
    refuse_overwriting_inputs({"-o": tmp_path / "out.onnx", "--summary": None}, [model])
    assert model.read_bytes() == b"model"
