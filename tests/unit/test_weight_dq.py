"""Weight-only codes on convolutions, LSTM/GRU/RNN W and R, and weights inside If/Loop bodies.

Each graph edgeq writes passes the full onnx checker and runs in onnxruntime, bit for bit equal
to the same graph with its weights dequantized in numpy float64 (``dq_reference``), and close
to the float model; every node appears in the summary.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from dq_reference import count_ops, reference_model, run
from onnx import TensorProto, helper, numpy_helper

from edgeq.graph.passes.weight_dq import weight_bytes_all
from edgeq.quantize.api import quantize
from edgeq.quantize.config import WeightOnlyConfig

RNG = np.random.default_rng(0)


def _model(
    nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[str], inits: list[onnx.TensorProto],
    opset: int = 17, shape: list[int] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, shape) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model)  # output shapes: the full check wants them
    onnx.checker.check_model(model, full_check=True)
    return model


def _tensor(name: str, shape: tuple[int, ...], scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def recurrent_model(op: str, direction: str, bias: bool, seq_lens: bool, initial: bool, t: int = 5, n: int = 3, i: int = 40, h: int = 16) -> onnx.ModelProto:
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    d = 2 if direction == "bidirectional" else 1
    inits = [_tensor("W", (d, gates * h, i)), _tensor("R", (d, gates * h, h))]
    names = ["X", "W", "R", "B" if bias else "", "seq" if seq_lens else "", "h0" if initial else ""]
    if bias:
        inits.append(_tensor("B", (d, 2 * gates * h), 0.1))
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [t, n, i])]
    if seq_lens:
        inputs.append(helper.make_tensor_value_info("seq", TensorProto.INT32, [n]))
    if initial:
        inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, [d, n, h]))
        if op == "LSTM":
            names.append("c0")
            inputs.append(helper.make_tensor_value_info("c0", TensorProto.FLOAT, [d, n, h]))
    while names and not names[-1]:
        names.pop()
    outputs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    node = helper.make_node(op, names, outputs, name=f"my_{op}", hidden_size=h, direction=direction)
    return _model([node], inputs, outputs, inits)


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if value.type.tensor_type.elem_type == TensorProto.INT32:
            feeds[value.name] = np.array([5, 2, 4][: shape[0]], np.int32)
        else:
            feeds[value.name] = RNG.standard_normal(shape).astype(np.float32)
    return feeds


def _check(model: onnx.ModelProto, config: WeightOnlyConfig, shrink: float, tolerance: float) -> tuple[onnx.ModelProto, object]:
    result = quantize(model, config)
    out = result.model
    onnx.checker.check_model(out, full_check=True)
    reference, folded = reference_model(out)
    assert folded == count_ops(out.graph, "DequantizeLinear") > 0
    feeds = _feeds(model)
    got, expected, fp32 = run(out, feeds), run(reference, feeds), run(model, feeds)
    for a, b, f in zip(got, expected, fp32, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        # close to float: relative RMS error of the outputs (int8 ~1 %, int4 ~10 % on random weights)
        assert np.sqrt(np.mean((a - f) ** 2)) <= tolerance * max(np.sqrt(np.mean(f**2)), 1e-3)
    assert weight_bytes_all(out) <= shrink * weight_bytes_all(model)
    return out, result.summary


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize(("bias", "seq_lens", "initial"), [(True, True, True), (False, False, False), (True, False, True), (False, True, False)])
@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_recurrent_weights_match_numpy_dequantized(op: str, direction: str, bias: bool, seq_lens: bool, initial: bool, weights: str) -> None:
    model = recurrent_model(op, direction, bias, seq_lens, initial)
    config = WeightOnlyConfig(weights=weights, block_size=16)  # 40 inputs: a partial last block
    shrink = 0.30 if weights == "int8" else 0.25
    out, summary = _check(model, config, shrink if not bias else shrink + 0.15, 0.03 if weights == "int8" else 0.3)
    (row,) = [n for n in summary.nodes if n.op_type == op]
    assert row.quantized and row.weight == "W, R"
    block = "block40" if weights == "int8" else "block16"  # int8: one block per row of W (40 inputs)
    assert f"{weights} {block} along axis 2" in row.scheme
    dq = [n for n in out.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == 2 and all(helper.get_attribute_value(a) == 2 for n in dq for a in n.attribute if a.name == "axis")


def conv_model(op: str, group: int, rank: int = 2) -> onnx.ModelProto:
    c_in, c_out, k = 8, 12, 3
    spatial = [9] * rank
    if op == "Conv":
        weight = _tensor("Wc", (c_out, c_in // group, *[k] * rank))
    else:
        weight = _tensor("Wc", (c_in, c_out // group, *[k] * rank))
    inits = [weight, _tensor("Bc", (c_out,), 0.1)]
    node = helper.make_node(op, ["X", "Wc", "Bc"], ["Y"], name=f"my_{op}", group=group, pads=[1] * (2 * rank))
    return _model([node], [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, c_in, *spatial])], ["Y"], inits)


@pytest.mark.parametrize(("op", "group", "rank"), [("Conv", 1, 2), ("Conv", 2, 2), ("Conv", 1, 1), ("ConvTranspose", 1, 2), ("ConvTranspose", 4, 2)])
@pytest.mark.parametrize(("weights", "symmetric"), [("int8", True), ("int8", False), ("int4", True)])
def test_conv_weights_per_output_channel(op: str, group: int, rank: int, weights: str, symmetric: bool) -> None:
    model = conv_model(op, group, rank)
    out, summary = _check(model, WeightOnlyConfig(weights=weights, symmetric=symmetric), 0.35 if weights == "int8" else 0.25, 0.03 if weights == "int8" else 0.3)
    (row,) = [n for n in summary.nodes if n.op_type == op]
    axis = 1 if op == "ConvTranspose" and group == 1 else 0
    assert row.quantized and f"per-channel (axis {axis})" in row.scheme
    opset = out.opset_import[0].version
    assert opset == (13 if weights == "int8" else 21) or opset == 17  # int8 per-channel runs at the model's own opset 17


def if_model() -> onnx.ModelProto:
    """An If whose then-branch reads an outer initializer (MatMul) and whose else-branch holds a Constant weight (Gemm)."""
    then_graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W_outer"], ["then_out"], name="then_matmul")], "then_body", [],
        [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, None)],
    )
    else_graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["W_inner"], value=_tensor("W_inner", (16, 64))),
            helper.make_node("Gemm", ["X", "W_inner"], ["else_out"], name="else_gemm", transB=1),
        ],
        "else_body", [], [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, None)],
    )
    node = helper.make_node("If", ["cond"], ["Y"], name="branch", then_branch=then_graph, else_branch=else_graph)
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [3, 64]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])]
    return _model([node], inputs, ["Y"], [_tensor("W_outer", (64, 16))])


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_if_branches_outer_and_inner_weights(weights: str) -> None:
    model = if_model()
    result = quantize(model, WeightOnlyConfig(weights=weights, block_size=16))
    out = result.model
    onnx.checker.check_model(out, full_check=True)
    rows = {n.name: n for n in result.summary.nodes}
    assert rows["then_matmul"].quantized and rows["then_matmul"].subgraph == "branch.then_branch"
    assert rows["else_gemm"].quantized and rows["else_gemm"].subgraph == "branch.else_branch"
    assert "in branch.then_branch" in result.summary.format_text()
    assert {t.name for t in out.graph.initializer}.isdisjoint({"W_outer"})  # the float weight is gone
    reference, folded = reference_model(out)
    assert folded == 2
    x = RNG.standard_normal((3, 64)).astype(np.float32)
    for cond in (True, False):
        feeds = {"X": x, "cond": np.array(cond)}
        np.testing.assert_allclose(run(out, feeds)[0], run(reference, feeds)[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(run(out, feeds)[0], run(model, feeds)[0], atol=0.3 if weights == "int8" else 2.0)
    assert weight_bytes_all(out) < 0.4 * weight_bytes_all(model)


def test_loop_body_weight() -> None:
    """A Loop body's MatMul on an outer-scope weight: found, quantized, run for three iterations."""
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["carried", "W_loop"], ["mm"], name="body_matmul"),
            helper.make_node("Tanh", ["mm"], ["next"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("carried", TensorProto.FLOAT, [2, 32])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("next", TensorProto.FLOAT, [2, 32])],
    )
    trip = numpy_helper.from_array(np.array(3, np.int64), "trip")
    node = helper.make_node("Loop", ["trip", "", "X"], ["Y"], name="loop", body=body)
    model = _model([node], [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 32])], ["Y"], [_tensor("W_loop", (32, 32), 0.2), trip], shape=[2, 32])
    result = quantize(model, WeightOnlyConfig(weights="int8"))
    (row,) = [n for n in result.summary.nodes if n.name == "body_matmul"]
    assert row.quantized and row.subgraph == "loop.body"
    reference, folded = reference_model(result.model)
    assert folded == 1
    feeds = {"X": RNG.standard_normal((2, 32)).astype(np.float32)}
    np.testing.assert_allclose(run(result.model, feeds)[0], run(reference, feeds)[0], rtol=1e-5, atol=1e-6)


def test_every_node_in_the_summary_and_nothing_done_warns() -> None:
    model = recurrent_model("LSTM", "bidirectional", True, False, False)
    text = quantize(model, WeightOnlyConfig(weights="int8")).summary.format_text()
    assert "my_LSTM (LSTM)" in text and "warning" not in text
    nf4 = quantize(model, WeightOnlyConfig(weights="nf4")).summary
    (row,) = nf4.nodes
    assert not row.quantized and "nf4 has no DequantizeLinear form" in row.reason
    (warning,) = nf4.warnings
    assert warning.startswith("nothing was compressed") and "--weights int8 or int4" in warning
    excluded = quantize(model, WeightOnlyConfig(weights="int4", exclude="LSTM")).summary
    assert "excluded by --exclude" in excluded.nodes[0].reason and excluded.warnings


def test_bad_inputs_are_one_line_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A subgraph reading a tensor nothing defines, and sequence_lens whose batch the data contradicts."""
    from edgeq.errors import EdgeqError
    from edgeq.quantize.api import quantize_file
    from edgeq.quantize.config import Int8Config

    model = if_model()
    then_branch = next(a.g for a in model.graph.node[0].attribute if a.name == "then_branch")
    then_branch.node[0].input[1] = "W_missing"
    onnx.save(model, str(tmp_path / "bad_if.onnx"))
    with pytest.raises(EdgeqError, match="'then_matmul' \\(MatMul\\) reads 'W_missing', which no input, initializer or node defines"):
        quantize_file(tmp_path / "bad_if.onnx", WeightOnlyConfig(weights="int8"), tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
    lstm = recurrent_model("LSTM", "forward", True, True, False)
    onnx.save(lstm, str(tmp_path / "lstm.onnx"))
    np.savez(tmp_path / "data.npz", X=RNG.standard_normal((5, 3, 40)).astype(np.float32), seq=np.array([5, 2], np.int32))
    with pytest.raises(EdgeqError, match="input 'seq' has 2 samples but 'X' has 5"):
        quantize_file(tmp_path / "lstm.onnx", Int8Config(), tmp_path / "out.onnx", data=tmp_path / "data.npz")
    assert not (tmp_path / "out.onnx").exists()
