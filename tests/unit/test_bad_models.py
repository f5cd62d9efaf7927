"""Models that onnx or onnxruntime refuse with a multi-line dump get one line naming what is wrong."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgeq.cli import main


def matmul_model(weight_name: str = "w", with_weight: bool = True) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.ones((16, 16), np.float32), "w")] if with_weight else []
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", weight_name], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def with_location(tmp_path, location: str):
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(matmul_model(), folder / "base.onnx", save_as_external_data=True, location="w.data", size_threshold=0)
    shutil.copy(folder / "w.data", tmp_path / "outside.data")
    (folder / "link.data").symlink_to(tmp_path / "outside.data")
    model = onnx.load(folder / "base.onnx", load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location.format(tmp=tmp_path)
    onnx.save(model, folder / "bad.onnx")
    return folder / "bad.onnx"


@pytest.mark.parametrize("location,says", [
    ("../outside.data", "points outside the directory"),
    ("{tmp}/outside.data", "absolute path"),
    ("link.data", "symbolic link"),
])
@pytest.mark.parametrize("command", ["inspect", "quantize"])
def test_external_data_outside_the_folder_is_one_line(tmp_path, capsys, location, says, command):
    path = with_location(tmp_path, location)
    argv = [command, str(path)] + (["-o", str(tmp_path / "q.onnx")] if command == "quantize" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.onnx: cannot load its external data" in err[0] and says in err[0], err


@pytest.mark.parametrize("command", ["inspect", "quantize", "export"])
def test_a_node_reading_an_undefined_tensor_is_named(tmp_path, capsys, command):
    path = tmp_path / "undefined.onnx"
    onnx.save(matmul_model("nope", with_weight=False), path)
    extra = {"inspect": [], "quantize": ["-o", str(tmp_path / "q.onnx")],
             "export": ["--target", "x86-cpu", "-o", str(tmp_path / "b")]}[command]
    assert main([command, str(path), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {path}: node 'mm' (MatMul) reads 'nope', which no input, initializer or node defines"]


def test_subgraphs_may_read_the_outer_scope(tmp_path, capsys):
    """A name defined outside an If branch is defined inside it: no false alarm."""
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["b"])], "then", [],
                               [helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1, 16])])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 16]),
         helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16])],
    )
    path = tmp_path / "if.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert main(["inspect", str(path)]) == 0


@pytest.mark.parametrize("command", ["profile", "compare", "bench"])
def test_a_model_that_fails_at_run_time_is_one_line_without_onnxruntime_log(tmp_path, capfd, command):
    """onnxruntime logs its own coloured line for a failing kernel; only edgeq's line may reach the user."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([7, 7], np.int64), "s")],
    )
    path = tmp_path / "runfail.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    np.savez(tmp_path / "d.npz", x=np.ones((4, 16), np.float32))
    if command == "bench":
        from edgeq_runtime.cli import main as run_main

        code = run_main(["bench", str(path), "--iterations", "2"])
    elif command == "profile":
        code = main(["profile", str(path), "--iterations", "2"])
    else:
        code = main(["compare", str(path), str(path), "--data", str(tmp_path / "d.npz"), "--no-latency"])
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "Reshape" in err[0], err
