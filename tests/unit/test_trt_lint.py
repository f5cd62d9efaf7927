"""The TensorRT lint catches each planted violation by name, and passes edgeq's own graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeq.cli import main
from edgeq.data import load_data
from edgeq.graph.trt_lint import LintViolation, lint_tensorrt
from edgeq.quantize import Int8Config, QuantizeInputs, quantize
from tests.unit.int8_graphs import images, mobilenet_block


def _conv_add_graph(
    zero_point: int = 0,
    act_scale: np.ndarray | float = 0.05,
    quantize_residual: bool = True,
    weight_axis: int = 0,
    zp_type: type = np.int8,
) -> onnx.ModelProto:
    """x -Q/DQ-> Conv(DQ int8 weight) -> Add(residual r) -> y."""
    scale = np.asarray(act_scale, np.float32)
    inits = [
        numpy_helper.from_array(scale, "x_scale"),
        numpy_helper.from_array(np.full(scale.shape, zero_point, zp_type), "x_zp"),
        numpy_helper.from_array(np.ones((4, 4, 1, 1), np.int8), "w_q"),
        numpy_helper.from_array(np.full(4, 0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(4, np.int8), "w_zp"),
        numpy_helper.from_array(np.zeros(4, np.float32), "b"),
        numpy_helper.from_array(np.array(0.05, np.float32), "r_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "r_zp"),
    ]
    q_attrs = {"axis": 1} if scale.ndim else {}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="x_Q", **q_attrs),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="x_DQ", **q_attrs),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="w_DQ", axis=weight_axis),
        helper.make_node("Conv", ["x_dq", "w", "b"], ["c"], name="conv"),
    ]
    residual = "r"
    if quantize_residual:
        nodes += [
            helper.make_node("QuantizeLinear", ["r", "r_scale", "r_zp"], ["r_q"], name="r_Q"),
            helper.make_node("DequantizeLinear", ["r_q", "r_scale", "r_zp"], ["r_dq"], name="r_DQ"),
        ]
        residual = "r_dq"
    nodes.append(helper.make_node("Add", ["c", residual], ["y"], name="residual_add"))
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 3, 3]) for n in ("x", "r")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _rules(model: onnx.ModelProto) -> dict[str, str]:
    return {v.rule: v.node for v in lint_tensorrt(model)}


def test_clean_graph_has_no_violations():
    model = _conv_add_graph()
    onnx.checker.check_model(model, full_check=True)
    assert lint_tensorrt(model) == []


def test_asymmetric_zero_point_is_caught():
    rules = _rules(_conv_add_graph(zero_point=3))
    assert rules.get("asymmetric-zero-point") in ("x_Q", "x_DQ")


def test_per_channel_activation_is_caught():
    violations = lint_tensorrt(_conv_add_graph(act_scale=np.full(4, 0.05, np.float32)))
    nodes = {v.node for v in violations if v.rule == "per-channel-activation"}
    assert nodes == {"x_Q", "x_DQ"}


def test_unquantized_residual_is_caught():
    assert _rules(_conv_add_graph(quantize_residual=False)) == {"unquantized-residual": "residual_add"}


def test_lint_reads_onnx_ir_models_as_it_reads_protobuf():
    import onnx_ir as ir

    for model in (_conv_add_graph(zero_point=3, quantize_residual=False), _conv_add_graph(weight_axis=1)):
        assert lint_tensorrt(ir.serde.deserialize_model(model)) == lint_tensorrt(model) != []


def test_wrong_weight_axis_is_caught():
    assert _rules(_conv_add_graph(weight_axis=1)).get("weight-axis") == "w_DQ"


def test_uint8_is_caught():
    rules = _rules(_conv_add_graph(zp_type=np.uint8))
    assert "unsupported-type" in rules


def test_unquantized_conv_input_and_float_pooling_are_caught():
    model = _conv_add_graph()
    conv = next(n for n in model.graph.node if n.name == "conv")
    conv.input[0] = "x"  # weight quantized, input not
    assert _rules(model).get("unquantized-input") == "conv"
    # MaxPool feeding a Q without a DQ in front of it runs in float.
    pool_graph = helper.make_graph(
        [
            helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[2, 2]),
            helper.make_node("QuantizeLinear", ["p", "s", "z"], ["p_q"], name="p_Q"),
            helper.make_node("DequantizeLinear", ["p_q", "s", "z"], ["y"], name="p_DQ"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 3, 3])],
        [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")],
    )
    assert _rules(helper.make_model(pool_graph, opset_imports=[helper.make_opsetid("", 17)])) == {"float-pooling": "pool"}


def test_quantized_bias_and_weight_range_are_caught():
    model = _conv_add_graph()
    for t in model.graph.initializer:
        if t.name == "w_q":
            t.CopyFrom(numpy_helper.from_array(np.full((4, 4, 1, 1), -128, np.int8), "w_q"))
    model.graph.initializer.extend([numpy_helper.from_array(np.zeros(4, np.int32), "b_q"), numpy_helper.from_array(np.full(4, 1e-4, np.float32), "b_s")])
    model.graph.node.insert(0, helper.make_node("DequantizeLinear", ["b_q", "b_s"], ["b_dq"], name="b_DQ", axis=0))
    next(n for n in model.graph.node if n.name == "conv").input[2] = "b_dq"
    rules = _rules(model)
    assert rules.get("quantized-bias") == "conv"
    assert rules.get("weight-range") == "w_DQ"


def test_edgeq_int8_graph_passes_and_cli_reports(tmp_path, capsys):
    model = mobilenet_block()
    data = load_data({"input": images(32)}, model, batch_size=8)
    result = quantize(model, Int8Config(), QuantizeInputs(data=data, progress=False))
    assert lint_tensorrt(result.model) == []
    good = tmp_path / "good.onnx"
    onnx.save(result.model, str(good))
    assert main(["inspect", str(good), "--lint", "tensorrt"]) == 0
    assert "follows TensorRT" in capsys.readouterr().out
    bad = tmp_path / "bad.onnx"
    onnx.save(_conv_add_graph(zero_point=5, quantize_residual=False), str(bad))
    assert main(["inspect", str(bad), "--lint", "tensorrt"]) == 1
    out = capsys.readouterr().out
    assert "asymmetric-zero-point" in out and "residual_add" in out


def test_unknown_lint_target_is_one_line_error(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(_conv_add_graph(), str(path))
    assert main(["inspect", str(path), "--lint", "openvino"]) == 2
    assert "--lint" in capsys.readouterr().err


@pytest.mark.parametrize("rule", ["asymmetric-zero-point"])
def test_violation_is_serializable(rule):
    v = LintViolation(rule, "n", "m")
    assert LintViolation.from_json(v.to_json()) == v
