"""A weight-only DequantizeLinear graph runs with ``session.disable_quant_qdq``: onnxruntime then folds
its constant weights once at load instead of dequantizing them on every run (it keeps them unfolded
by default, to fuse DQ with a following Q into int8 kernels; with no Q there is nothing to fuse).
The toolkit decides from the graph, the bundle manifest carries it, the runtime sets it; outputs
are the same either way (the speed is measured in benchmarks/recurrent.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from edgeq_runtime import Session
from onnx import TensorProto, helper, numpy_helper

from edgeq.data import load_data
from edgeq.export import export_bundle
from edgeq.graph.session import WEIGHT_ONLY_DQ_CONFIG, cpu_session, session_config
from edgeq.quantize.api import QuantizeInputs, quantize
from edgeq.quantize.config import Int8Config, WeightOnlyConfig

RNG = np.random.default_rng(3)
KEY = "session.disable_quant_qdq"


def _convnet() -> onnx.ModelProto:
    w = numpy_helper.from_array(RNG.normal(size=(8, 3, 3, 3)).astype(np.float32) * 0.2, "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Relu", ["c"], ["y"], name="relu")], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_only_weight_only_dq_graphs_get_the_entry() -> None:
    float_model = _convnet()
    assert session_config(float_model) == {}
    weight_only = quantize(float_model, WeightOnlyConfig(weights="int8")).model
    assert "DequantizeLinear" in {n.op_type for n in weight_only.graph.node}
    assert session_config(weight_only) == WEIGHT_ONLY_DQ_CONFIG
    data = load_data({"x": RNG.normal(size=(8, 3, 8, 8)).astype(np.float32)}, _convnet())
    w8a8 = quantize(_convnet(), Int8Config(), QuantizeInputs(data=data)).model
    assert "QuantizeLinear" in {n.op_type for n in w8a8.graph.node}
    assert session_config(w8a8) == {}  # Q/DQ pairs must stay for onnxruntime's int8 fusions


def test_bundle_carries_it_and_the_runtime_sets_it(tmp_path: Path) -> None:
    path = tmp_path / "w8.onnx"
    weight_only = quantize(_convnet(), WeightOnlyConfig(weights="int8")).model
    onnx.save(weight_only, path)
    export_bundle(path, "x86-cpu", output=tmp_path / "bundle", progress=False)
    x = RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)
    with Session(tmp_path / "bundle") as session:
        assert session.manifest is not None and session.manifest.target["ort_session_config"] == {KEY: "1"}
        options = session._backend._session.get_session_options()  # type: ignore[union-attr]
        assert options.get_session_config_entry(KEY) == "1"
        got = session.run({"x": x})["y"]
    expected = cpu_session(weight_only).run(None, {"x": x})[0]  # without the entry
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
