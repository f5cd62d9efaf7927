"""What inspect and export say about a bundle: unlisted files, a missing manifest, tampered files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgeq.cli import main


@pytest.fixture
def bundle(tmp_path, capsys):
    w = numpy_helper.from_array(np.ones((16, 16), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    assert main(["export", str(tmp_path / "m.onnx"), "--target", "x86-cpu", "-o", str(tmp_path / "b"), "--quiet"]) == 0
    capsys.readouterr()
    return tmp_path / "b"


def test_inspect_lists_files_the_manifest_does_not(bundle, capsys):
    (bundle / "notes.txt").write_text("mine")
    assert main(["inspect", str(bundle)]) == 0
    assert "notes.txt  not in manifest.json (no checksum)" in capsys.readouterr().out
    assert main(["inspect", str(bundle), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unlisted"] == ["notes.txt"]


def test_inspect_of_a_folder_without_manifest_says_nothing_was_verified(bundle, tmp_path, capsys):
    folder = tmp_path / "plain"
    folder.mkdir()
    shutil.copy(bundle / "model.onnx", folder / "model.onnx")
    assert main(["inspect", str(folder)]) == 0
    assert "no checksums were verified" in capsys.readouterr().err


def test_export_refuses_a_tampered_bundle(bundle, tmp_path, capsys):
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[-5] ^= 1
    (bundle / "model.onnx").write_bytes(bytes(data))
    assert main(["export", str(bundle), "--target", "x86-cpu", "-o", str(tmp_path / "again"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not match manifest.json" in err[0] and "model.onnx" in err[0]
    assert not (tmp_path / "again").exists()
