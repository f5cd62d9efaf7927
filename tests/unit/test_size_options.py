"""Size options are bounded by the model before anything is allocated in proportion to them."""

from __future__ import annotations

import resource

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgeq.cli import main


@pytest.fixture
def model(tmp_path):
    w = numpy_helper.from_array(np.ones((96, 32), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 96])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 32])], [w],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    np.savez(tmp_path / "d.npz", x=np.ones((4, 96), np.float32))
    return path


@pytest.mark.parametrize("extra", [[], ["--method", "gptq", "--data", "{d}"], ["--budget", "4KB", "--data", "{d}"]])
def test_a_block_larger_than_every_row_is_refused_with_the_bound(model, tmp_path, capsys, extra):
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    argv = ["quantize", str(model), "-o", str(tmp_path / "q.onnx"), "--block-size", "1048576", "--quiet"]
    code = main(argv + [a.format(d=tmp_path / "d.npz") for a in extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--block-size: 1048576" in err[0] and "at most 128" in err[0]  # rows of 96 -> 128
    assert not (tmp_path / "q.onnx").exists()
    # nothing near the 22 GB a padded 2**20 block would ask for (maxrss is in KiB)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 512 * 1024


def test_the_bound_itself_is_accepted(model, tmp_path, capsys):
    assert main(["quantize", str(model), "-o", str(tmp_path / "q.onnx"), "--block-size", "128", "--quiet"]) == 0


def dynamic_model(tmp_path):
    w = numpy_helper.from_array(np.ones((16, 16), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["b", "s", 16])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["b", "s", 16])], [w])
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_batch_too_large_for_memory_is_one_line_before_allocation(tmp_path, capsys):
    from edgeq_runtime.cli import main as run_main

    model = dynamic_model(tmp_path)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert main(["profile", str(model), "--batch", "100000000000", "--iterations", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would take" in err[0] and "lower --batch" in err[0], err
    assert run_main(["bench", str(model), "--batch", "100000000000", "--iterations", "2"]) == 2
    assert "would take" in capsys.readouterr().err
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 512 * 1024


def test_an_export_shape_too_large_for_memory_is_one_line(tmp_path, capsys):
    path = dynamic_model(tmp_path)
    argv = ["export", str(path), "--target", "x86-cpu", "-o", str(tmp_path / "b"), "--shape", "x:100000x100000x16", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would take" in err[0], err
    assert not (tmp_path / "b").exists()
