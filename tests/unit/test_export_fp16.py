"""The fp16 pass: compute in fp16, statistics and int8 Q/DQ in fp32, float32 at the boundary."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper, parser

from edgeq.graph.passes.fp16 import Fp16Pass
from edgeq.metrics import cosine

RNG = np.random.default_rng(0)

TRANSFORMER = """
<ir_version: 9, opset_import: ["" : 17]>
block (float[2, 8, 16] x, int64[2, 8] mask) => (float[2, 8, 16] y) {
  h = MatMul(x, W)
  h2 = Add(h, B)
  mean = ReduceMean<axes=[-1]>(h2)
  d = Sub(h2, mean)
  sq = Pow(d, two)
  var = ReduceMean<axes=[-1]>(sq)
  ve = Add(var, eps)
  sd = Sqrt(ve)
  n = Div(d, sd)
  g = Mul(n, gamma)
  s = MatMul(g, Wt)
  sc = Div(s, scale)
  mf = Cast<to=1>(mask)
  inv = Sub(one, mf)
  big = Mul(inv, minf)
  mu = Unsqueeze(big, ax1)
  sc2 = Add(sc, mu)
  p = Softmax<axis=-1>(sc2)
  y0 = MatMul(p, g)
  y = Relu(y0)
}
"""


def _transformer() -> onnx.ModelProto:
    model = parser.parse_model(TRANSFORMER)
    inits = {
        "W": RNG.normal(size=(16, 16)).astype(np.float32) * 0.3, "B": np.full(16, 0.1, np.float32),
        "two": np.array(2.0, np.float32), "eps": np.array(1e-12, np.float32), "gamma": np.ones(16, np.float32),
        "Wt": np.eye(16, 8, dtype=np.float32), "scale": np.array(4.0, np.float32), "one": np.array(1.0, np.float32),
        "minf": np.array(np.finfo(np.float32).min, np.float32), "ax1": np.array([1], np.int64),
    }
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in inits.items())
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _convert(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Fp16Pass]:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    fp16 = Fp16Pass()
    fp16.apply(copy)
    onnx.checker.check_model(copy, full_check=True)
    return copy, fp16


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    out = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    out.update({t.name: t.data_type for t in model.graph.initializer})
    return out


def test_transformer_block_keeps_statistics_and_boundary_in_fp32():
    model = _transformer()
    feeds = {"x": RNG.normal(size=(2, 8, 16)).astype(np.float32), "mask": np.ones((2, 8), np.int64)}
    feeds["mask"][0, 5:] = 0  # padded positions: the mask adds float32 min
    reference = _run(model, feeds)[0]
    converted, fp16 = _convert(model)
    out = _run(converted, feeds)[0]
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert cosine(reference.astype(np.float64), out.astype(np.float64)) > 0.9999
    io = {v.name: v.type.tensor_type.elem_type for v in [*converted.graph.input, *converted.graph.output]}
    assert io == {"x": TensorProto.FLOAT, "mask": TensorProto.INT64, "y": TensorProto.FLOAT}
    types = _types(converted)
    producer = {o: n for n in converted.graph.node for o in n.output}
    by_op = {}
    for name, node in producer.items():
        by_op.setdefault(node.op_type, set()).add(types.get(name))
    assert by_op["MatMul"] == {TensorProto.FLOAT16}
    for op in ("Softmax", "ReduceMean", "Pow", "Sqrt"):
        assert by_op[op] == {TensorProto.FLOAT}, op
    # The epsilon is still 1e-12 (fp16 would make it 0), the mask still float32 min.
    assert types["eps"] == TensorProto.FLOAT and types["minf"] == TensorProto.FLOAT
    assert "Softmax 1" in fp16.report.describe()


def test_conv_net_runs_in_fp16_with_constants_halved():
    text = """
    <ir_version: 9, opset_import: ["" : 17]>
    net (float[1, 3, 16, 16] x) => (float[1, 10] y) {
      c = Conv<pads=[1, 1, 1, 1]>(x, w, b)
      r = Clip(c, lo, hi)
      p = GlobalAveragePool(r)
      f = Flatten(p)
      y = Gemm<transB=1>(f, fc, fb)
    }
    """
    model = parser.parse_model(text)
    inits = {"w": RNG.normal(size=(8, 3, 3, 3)).astype(np.float32), "b": RNG.normal(size=8).astype(np.float32),
             "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32),
             "fc": RNG.normal(size=(10, 8)).astype(np.float32), "fb": np.zeros(10, np.float32)}
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in inits.items())
    feeds = {"x": RNG.normal(size=(1, 3, 16, 16)).astype(np.float32)}
    reference = _run(model, feeds)[0]
    converted, fp16 = _convert(model)
    out = _run(converted, feeds)[0]
    assert cosine(reference.astype(np.float64), out.astype(np.float64)) > 0.9999
    assert {t.name: t.data_type for t in converted.graph.initializer}["w"] == TensorProto.FLOAT16
    assert fp16.report.fp16_nodes == 5 and fp16.report.casts_added == 2  # one in, one out


def _qdq_int8_model(opset: int) -> onnx.ModelProto:
    """Q/DQ int8 Conv with a per-channel weight scale far below fp16's range (as BN folding leaves)."""
    w = RNG.integers(-127, 128, size=(4, 3, 3, 3)).astype(np.int8)
    scales = np.array([0.02, 1e-11, 0.01, 0.03], np.float32)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["c"]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], [
        numpy_helper.from_array(np.array(0.02, np.float32), "xs"), numpy_helper.from_array(np.array(0, np.int8), "xz"),
        numpy_helper.from_array(w, "wq"), numpy_helper.from_array(scales, "ws"),
        numpy_helper.from_array(np.zeros(4, np.int8), "wz")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [17, 19])
def test_int8_qdq_layers_keep_fp32_types(opset):
    model = _qdq_int8_model(opset)
    feeds = {"x": RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)}
    reference = _run(model, feeds)[0]
    converted, fp16 = _convert(model)
    np.testing.assert_array_equal(_run(converted, feeds)[0], reference)  # nothing int8 changed type
    assert {t.name: t.data_type for t in converted.graph.initializer}["ws"] == TensorProto.FLOAT
    assert fp16.report.int8_layers_fp32 == 1


def test_weight_only_int4_blocks_run_fp16_with_fp16_scales():
    k, n, block = 64, 16, 32
    codes = RNG.integers(-8, 8, size=(k, n)).astype(np.int8)
    w = helper.make_tensor("w", TensorProto.INT4, [k, n], codes.ravel().tolist())
    s = numpy_helper.from_array((RNG.random((k // block, n)) * 0.02 + 1e-3).astype(np.float32), "s")
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w", "s"], ["wd"], axis=0, block_size=block),
         helper.make_node("MatMul", ["x", "wd"], ["y"])], "wo",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, n])], [w, s])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    feeds = {"x": RNG.normal(size=(2, k)).astype(np.float32)}
    reference = _run(model, feeds)[0]
    converted, _ = _convert(model)
    out = _run(converted, feeds)[0]
    assert cosine(reference.astype(np.float64), out.astype(np.float64)) > 0.9999
    types = {t.name: t.data_type for t in converted.graph.initializer}
    assert types["s"] == TensorProto.FLOAT16 and types["w"] == TensorProto.INT4


def test_constant_shared_between_fp16_and_fp32_readers_gets_a_copy():
    text = """
    <ir_version: 9, opset_import: ["" : 17]>
    g (float[4, 4] x) => (float[4, 4] y, float[4] z) {
      m = MatMul(x, c)
      y = Relu(m)
      z = ReduceSum<keepdims=0>(c, axes)
    }
    """
    model = parser.parse_model(text)
    model.graph.initializer.extend([numpy_helper.from_array(RNG.normal(size=(4, 4)).astype(np.float32), "c"),
                                    numpy_helper.from_array(np.array([0], np.int64), "axes")])
    feeds = {"x": RNG.normal(size=(4, 4)).astype(np.float32)}
    reference = _run(model, feeds)
    converted, _ = _convert(model)
    out = _run(converted, feeds)
    np.testing.assert_array_equal(out[1], reference[1])  # the fp32 reader saw the original
    types = {t.name: t.data_type for t in converted.graph.initializer}
    assert types["c"] == TensorProto.FLOAT and TensorProto.FLOAT16 in types.values()


def test_large_constants_are_clipped_and_reported():
    text = """
    <ir_version: 9, opset_import: ["" : 17]>
    g (float[2, 2] x) => (float[2, 2] y) {
      y = MatMul(x, c)
    }
    """
    model = parser.parse_model(text)
    model.graph.initializer.append(numpy_helper.from_array(np.array([[1e6, 1.0], [2.0, 3.0]], np.float32), "c"))
    _, fp16 = _convert(model)
    assert fp16.report.clipped_values == 1 and "clipped" in fp16.report.describe()
