"""Scales for the standard DequantizeLinear form stay positive (TensorRT refuses others)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeq.numerics.codecs import get_codec
from edgeq.numerics.weight_only import run
from edgeq.quantize.api import quantize
from edgeq.quantize.config import WeightOnlyConfig


@pytest.mark.parametrize("weights", ["int4", "int2", "int8"])
def test_positive_scales_cover_the_block_and_stay_positive(weights):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 96))
    w[:, 5] = 9.0  # a dominant positive value in every first block
    codec = get_codec(weights, symmetric=True, positive_scales=True)
    result = run("rtn", codec, w, 32)
    scales = np.asarray(result.quantized.scales)
    assert np.all(scales > 0)
    # Independent float64 reference: positive side has 2^(b-1)-1 levels, negative 2^(b-1).
    half = 2 ** (int(weights[3:]) - 1)
    blocks = w.reshape(16, 3, 32)
    expected = np.maximum(blocks.max(-1).clip(0) / (half - 1), (-blocks.min(-1)).clip(0) / half)
    assert np.all(scales <= expected * (1 + 1e-6))  # clipping search may only shrink
    signed = np.asarray(run("rtn", get_codec(weights, symmetric=True), w, 32).quantized.scales)
    assert (signed < 0).any()  # the MatMulNBits form keeps the signed trick


def test_qdq_format_writes_positive_scales_that_onnxruntime_runs():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 48)).astype(np.float32)
    w[3, :] = 7.0
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 48])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out = quantize(model, WeightOnlyConfig(weights="int4", block_size=32, onnx_format="qdq")).model
    onnx.checker.check_model(out, full_check=True)
    dq = [n for n in out.graph.node if n.op_type == "DequantizeLinear"]
    assert dq
    inits = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    for node in dq:
        assert np.all(inits[node.input[1]].astype(np.float64) > 0), node.name
    # onnxruntime computes exactly what the stored codes and scales say (float64 reference).
    (node,) = dq
    codes = inits[node.input[0]].astype(np.float64)  # int4 [K, N], signed
    block = next(a.i for a in node.attribute if a.name == "block_size")
    weight = codes * np.repeat(inits[node.input[1]].astype(np.float64), block, axis=0)[: codes.shape[0]]
    x = rng.standard_normal((2, 64)).astype(np.float32)
    options = ort.SessionOptions()  # no DQ+MatMul fusion: that kernel may quantize activations
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(out.SerializeToString(), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(got, x.astype(np.float64) @ weight, rtol=1e-4, atol=1e-4)
    # And it is a faithful 4-bit copy of the float weight.
    assert np.linalg.norm(weight - w) / np.linalg.norm(w) < 0.2
