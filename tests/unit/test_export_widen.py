"""Widening: INT2/NF4/contrib MatMuls into containers TensorRT parses, computing exactly the same."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeq.export.widen import convert_contrib_matmuls, widen_weights
from edgeq.graph.passes.lower_opset import lower_opset

RNG = np.random.default_rng(1)
K, N, BLOCK = 64, 16, 32
X = RNG.normal(size=(3, K)).astype(np.float32)


def _run(model: onnx.ModelProto) -> np.ndarray:
    """Plain kernels: onnxruntime's DQ+MatMul fusions have arithmetic of their own."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": X})[0]


def _model(nodes, inits, opset, contrib=False) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, N])], inits)
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if contrib else [])
    return helper.make_model(graph, opset_imports=imports)


def _int2_dq_model(signed: bool = True) -> onnx.ModelProto:
    if signed:
        w = numpy_helper.from_array(RNG.integers(-2, 2, size=(K, N)).astype(np.int8).astype(ml_dtypes.int2), "w")
        inputs = ["w", "s"]
        extra = []
    else:
        w = numpy_helper.from_array(RNG.integers(0, 4, size=(K, N)).astype(np.uint8).astype(ml_dtypes.uint2), "w")
        z = numpy_helper.from_array(RNG.integers(0, 4, size=(K // BLOCK, N)).astype(np.uint8).astype(ml_dtypes.uint2), "z")
        inputs = ["w", "s", "z"]
        extra = [z]
    s = numpy_helper.from_array(RNG.random((K // BLOCK, N)).astype(np.float32) * 0.1, "s")
    nodes = [helper.make_node("DequantizeLinear", inputs, ["wd"], axis=0, block_size=BLOCK, name="dq"),
             helper.make_node("MatMul", ["x", "wd"], ["y"], name="mm")]
    return _model(nodes, [w, s, *extra], 25)


@pytest.mark.parametrize("signed", [True, False])
def test_int2_blocks_widen_to_int4_exactly(signed):
    model = _int2_dq_model(signed)
    reference = _run(model)
    report = widen_weights(model, "int4")
    assert lower_opset(model, 17).after == 21  # INT4 blocks need 21; INT2 needed 25
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_array_equal(_run(model), reference)
    kinds = {t.name: t.data_type for t in model.graph.initializer}
    assert TensorProto.INT2 not in kinds.values() and TensorProto.UINT2 not in kinds.values()
    assert (TensorProto.INT4 if signed else TensorProto.UINT4) in kinds.values()
    node = report.nodes[0]
    assert node.container == "int4" and node.weights == K * N
    assert node.bytes_after - node.bytes_before == K * N // 2 - K * N // 4 + (0 if signed else (K // BLOCK) * N // 4)
    assert "outputs unchanged" in report.describe()


def test_int2_blocks_widen_to_float():
    model = _int2_dq_model()
    reference = _run(model)
    report = widen_weights(model, "float")
    assert lower_opset(model, 17).after == 17
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_array_equal(_run(model), reference)
    assert report.nodes[0].bytes_after == K * N * 2  # fp16 on the device
    assert all(t.data_type == TensorProto.FLOAT for t in model.graph.initializer)


@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("bias", [False, True])
def test_matmulnbits_becomes_dequantizelinear_int4(bits, bias):
    blob = BLOCK * bits // 8
    inits = [numpy_helper.from_array(RNG.integers(0, 256, size=(N, K // BLOCK, blob)).astype(np.uint8), "wb"),
             numpy_helper.from_array(RNG.random(N * K // BLOCK).astype(np.float32), "sc")]
    inputs = ["x", "wb", "sc"]
    if bias:
        inits.append(numpy_helper.from_array(RNG.random(N).astype(np.float32), "bias"))
        inputs += ["", "", "bias"]
    node = helper.make_node("MatMulNBits", inputs, ["y"], domain="com.microsoft", K=K, N=N, bits=bits,
                            block_size=BLOCK, name="mnb")
    model = _model([node], inits, 21, contrib=True)
    reference = _run(model)
    report = convert_contrib_matmuls(model)
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_allclose(_run(model), reference, rtol=1e-6, atol=1e-6)
    assert [n.op_type for n in model.graph.node] == ["DequantizeLinear", "MatMul"] + (["Add"] if bias else [])
    assert [o.domain for o in model.opset_import] == [""]
    assert report.nodes[0].container == "int4"


def test_matmulnbits_with_zero_points_goes_to_float():
    blob = BLOCK // 2
    inits = [numpy_helper.from_array(RNG.integers(0, 256, size=(N, K // BLOCK, blob)).astype(np.uint8), "wb"),
             numpy_helper.from_array(RNG.random(N * K // BLOCK).astype(np.float32), "sc"),
             numpy_helper.from_array(RNG.integers(0, 256, size=(N * ((K // BLOCK + 1) // 2),)).astype(np.uint8), "zp")]
    node = helper.make_node("MatMulNBits", ["x", "wb", "sc", "zp"], ["y"], domain="com.microsoft", K=K, N=N,
                            bits=4, block_size=BLOCK)
    model = _model([node], inits, 21, contrib=True)
    reference = _run(model)
    report = convert_contrib_matmuls(model)
    np.testing.assert_allclose(_run(model), reference, rtol=1e-6, atol=1e-6)
    assert report.nodes[0].container == "float"  # TensorRT takes no zero points


@pytest.mark.parametrize("quant_type", [0, 1])  # fp4, nf4
def test_bnb4_widens_to_float_exactly(quant_type):
    block = 64
    inits = [numpy_helper.from_array(RNG.integers(0, 256, size=((N * K + 1) // 2,)).astype(np.uint8), "wb"),
             numpy_helper.from_array(RNG.random((N * K + block - 1) // block).astype(np.float32), "am")]
    node = helper.make_node("MatMulBnb4", ["x", "wb", "am"], ["y"], domain="com.microsoft", K=K, N=N,
                            block_size=block, quant_type=quant_type)
    model = _model([node], inits, 21, contrib=True)
    reference = _run(model)
    report = widen_weights(model, "int4")  # NF4/FP4 have no int4 form: float it is
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_array_equal(_run(model), reference)
    assert report.nodes[0].source == ("nf4" if quant_type else "fp4") + " MatMulBnb4"
    assert report.nodes[0].container == "float"
    assert report.bytes_after == K * N * 2 and report.bytes_before < report.bytes_after


def test_nothing_to_widen_leaves_the_model_alone():
    w = numpy_helper.from_array(RNG.normal(size=(K, N)).astype(np.float32), "w")
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [w], 17)
    before = model.SerializeToString()
    assert widen_weights(model, "int4").nodes == []
    assert model.SerializeToString() == before
