from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeq.errors import ModelLoadError
from edgeq.graph.io import load_model, save_model


def _model(weight: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weight.shape[1]])],
        [numpy_helper.from_array(weight, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_external_data_round_trip(tmp_path):
    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    path = save_model(_model(w), tmp_path / "ext.onnx", external_data=True)
    assert (tmp_path / "ext.onnx.data").stat().st_size == w.nbytes
    assert path.stat().st_size < w.nbytes  # the weights are not inline
    loaded = load_model(path)
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.initializer[0]), w)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.ones((1, 64), np.float32)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], x @ w, rtol=1e-5)
    # And back inline.
    inline = save_model(loaded, tmp_path / "inline.onnx", external_data=False)
    assert inline.stat().st_size > w.nbytes


def test_failed_write_leaves_existing_file(tmp_path):
    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous contents")
    broken = _model(np.ones((2, 2), np.float32))
    broken.graph.node[0].input[1] = "does_not_exist"
    with pytest.raises(Exception):  # noqa: B017 - the checker's own error type
        save_model(broken, target)
    assert target.read_bytes() == b"previous contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


def test_directory_without_model(tmp_path):
    with pytest.raises(ModelLoadError, match=r"model\.onnx"):
        load_model(tmp_path)
