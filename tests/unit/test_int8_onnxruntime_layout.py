"""int8 for onnxruntime's CPU kernels: the zero-point rewrite of re-centered tensors is exact,
onnxruntime then fuses every conv into QLinearConv, and reduce range removes int16 saturation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgeq import metrics
from edgeq.cli import main
from edgeq.data import load_data
from edgeq.errors import ConfigError
from edgeq.graph.passes.zero_point_centers import CentersToZeroPoints
from edgeq.graph.trt_lint import lint_tensorrt
from edgeq.quantize import Int8Config, QuantizeInputs, quantize
from edgeq.quantize.schemes.int8.layer_weights import weight_qmax
from tests.unit.int8_graphs import images, mobilenet_block, run


def _optimized_nodes(model: onnx.ModelProto, path) -> list[onnx.NodeProto]:
    """The graph onnxruntime actually runs, with every optimization (and Q/DQ fusion) on."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(path)
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return list(onnx.load(str(path)).graph.node)


def _run(model: onnx.ModelProto, x: np.ndarray, fused: bool = False) -> np.ndarray:
    return run(model, {"input": x}, exact=not fused)[0]


def _quantize(model: onnx.ModelProto, config: Int8Config) -> onnx.ModelProto:
    data = load_data({"input": images(48)}, model, batch_size=8)
    return quantize(model, config, QuantizeInputs(data=data, progress=False)).model


@pytest.fixture(scope="module")
def block() -> onnx.ModelProto:
    return mobilenet_block(head_relu6=True)


@pytest.fixture(scope="module")
def tensorrt_int8(block) -> onnx.ModelProto:
    return _quantize(block, Int8Config())


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def test_zero_points_are_the_same_numbers_without_pads(tensorrt_int8):
    trt = tensorrt_int8
    assert sum(n.op_type == "Pad" for n in trt.graph.node) >= 1  # re-centering made the padding explicit
    converted = onnx.ModelProto()
    converted.CopyFrom(trt)
    rewrite = CentersToZeroPoints()
    assert rewrite.apply(converted)
    onnx.checker.check_model(converted, full_check=True)
    # expand and depthwise ReLU6 outputs and the head's (read by the mean); the stem's also feeds
    # the residual Add, so it was never re-centered
    assert sorted(rewrite.converted) == ["d6_equalized_centered", "e6_equalized_centered", "hr_centered"]
    assert rewrite.pads_removed == 1
    assert not any(n.op_type == "Pad" for n in converted.graph.node)
    for tensor in rewrite.converted:
        q = next(n for n in converted.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)
        assert int(_initializer(converted, q.input[2])) == -128
        assert np.isclose(float(_initializer(converted, q.input[1])) * 128 * 2, 6.0, rtol=1e-6)  # c = hi / 2
    # The mean keeps reading centered values: one Sub after it.
    assert sum(n.op_type == "Sub" for n in converted.graph.node) == 1
    # Exact arithmetic, up to float rounding of the shifted biases (a code may flip at a tie).
    x = images(64, seed=11)
    before, after = _run(trt, x), _run(converted, x)
    assert metrics.sqnr_db(before, after) > 80.0
    # TensorRT would refuse it: its explicit quantization needs zero points of 0.
    assert any("zero point" in str(v) for v in lint_tensorrt(converted))


def test_rewrite_leaves_other_graphs_alone(block):
    plain = onnx.ModelProto()
    plain.CopyFrom(block)
    assert not CentersToZeroPoints().apply(plain)
    assert plain == block


def test_onnxruntime_layout_fuses_every_conv(block, tmp_path):
    model = _quantize(block, Int8Config(layout="onnxruntime"))
    onnx.checker.check_model(model, full_check=True)
    x = images(64, seed=7)
    assert metrics.sqnr_db(_run(block, x), _run(model, x)) > 28.0
    nodes = _optimized_nodes(model, tmp_path / "optimized.onnx")
    int8_convs = {n.name.split("_token")[0] for n in nodes if n.op_type == "QLinearConv"}
    # The padded depthwise (was behind an explicit Pad) and the project conv before the residual
    # Add (had a float output) now run in int8; no Pad is left.
    assert {"dw", "project", "head"} <= int8_convs, int8_convs
    assert not any(n.op_type == "Pad" for n in nodes)
    assert [n.op_type for n in nodes if n.name.startswith("fc")] == ["QGemm"]  # int32 bias: the classifier fuses too


def test_tensorrt_layout_keeps_float_conv_before_residual_add(tensorrt_int8, tmp_path):
    """The contrast that motivates the layout: TensorRT fuses the Add into the conv, onnxruntime cannot."""
    nodes = _optimized_nodes(tensorrt_int8, tmp_path / "optimized.onnx")
    int8_convs = {n.name.split("_token")[0] for n in nodes if n.op_type == "QLinearConv"}
    assert "project" not in int8_convs
    assert any(n.op_type == "Pad" for n in nodes)


def test_reduce_range_bounds_dense_weights_only(block):
    model = _quantize(block, Int8Config(layout="onnxruntime", reduce_range=True))
    producers = {o: n for n in model.graph.node for o in n.output}
    seen = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            values = _initializer(model, producers[node.input[1]].input[0])
            seen[node.name] = int(np.abs(values.astype(np.int32)).max())
    assert seen["dw"] > 64  # depthwise: onnxruntime accumulates in 32 bits, full int8 kept
    assert all(v <= 64 for name, v in seen.items() if name != "dw"), seen
    # Fused kernels and the exact Q/DQ definition agree (on any x86 CPU, VNNI or not).
    x = images(64, seed=5)
    assert metrics.sqnr_db(_run(model, x), _run(model, x, fused=True)) > 30.0
    assert metrics.sqnr_db(_run(block, x), _run(model, x)) > 25.0


def test_weight_qmax_rule():
    from onnx import helper

    dense = helper.make_node("Conv", ["x", "w"], ["y"], group=1)
    depthwise = helper.make_node("Conv", ["x", "w"], ["y"], group=8)
    gemm = helper.make_node("Gemm", ["x", "w"], ["y"])
    assert weight_qmax(dense, np.zeros((8, 4, 1, 1)), True) == 64
    assert weight_qmax(depthwise, np.zeros((8, 1, 3, 3)), True) == 127
    assert weight_qmax(gemm, np.zeros((10, 32)), True) == 64
    assert weight_qmax(gemm, np.zeros((10, 32)), False) == 127


def test_layout_options_are_checked(block):
    with pytest.raises(ConfigError, match="--layout"):
        _quantize(block, Int8Config(layout="openvino"))
    with pytest.raises(ConfigError, match="--reduce-range"):
        _quantize(block, Int8Config(reduce_range=True))


def test_cli_layout(tmp_path, block, capsys):
    model = tmp_path / "block.onnx"
    onnx.save(block, str(model))
    data = tmp_path / "calib.npz"
    np.savez(data, input=images(32))
    out = tmp_path / "cpu.onnx"
    args = ["quantize", str(model), "--weights", "int8", "--activations", "int8", "--data", str(data), "-o", str(out), "--quiet"]
    assert main([*args, "--layout", "onnxruntime", "--reduce-range"]) == 0
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)
    assert main([*args, "--layout", "cuda"]) == 2
    assert "--layout" in capsys.readouterr().err
    out.unlink()
    assert main(["quantize", str(model), "--weights", "int4", "--layout", "onnxruntime", "-o", str(out)]) == 2
    assert not out.exists()


def test_calibration_table_serves_the_onnxruntime_layout(block):
    """A table from edgeq calibrate holds the conv side of residual Adds too (layout onnxruntime
    quantizes it), so --calib works without samples."""
    from edgeq.calibrate import calibrate

    table = calibrate(block, {"input": images(32)}, method="entropy", progress=False)
    assert {"p", "a0"} <= set(table.tensors)  # project conv output and the residual it is added to
    model = quantize(block, Int8Config(layout="onnxruntime"), QuantizeInputs(calibration=table, progress=False)).model
    onnx.checker.check_model(model, full_check=True)
    assert any(n.op_type == "QuantizeLinear" and n.input[0] == "p" for n in model.graph.node)
    x = images(32, seed=3)
    assert metrics.sqnr_db(_run(block, x), _run(model, x)) > 20.0


def test_export_for_cpu_targets_uses_the_onnxruntime_layout(block, tensorrt_int8, tmp_path):
    from edgeq.export.bundle import export_bundle

    model = tmp_path / "block.onnx"
    onnx.save(block, str(model))
    data = tmp_path / "calib.npz"
    np.savez(data, input=images(32))

    def zero_points(bundle) -> set[int]:
        exported = onnx.load(str(bundle / "model.onnx"))
        assert not any(n.op_type == "Pad" for n in exported.graph.node)
        return {int(_initializer(exported, n.input[2])) for n in exported.graph.node if n.op_type == "QuantizeLinear"}

    export_bundle(model, "x86-cpu", weights="int8", activations="int8", data=data, output=tmp_path / "x86", progress=False)
    assert -128 in zero_points(tmp_path / "x86")
    exported = onnx.load(str(tmp_path / "x86" / "model.onnx"))
    producers = {o: n for n in exported.graph.node for o in n.output}
    project = next(n for n in exported.graph.node if n.name == "project")
    assert np.abs(_initializer(exported, producers[project.input[1]].input[0]).astype(int)).max() <= 64  # x86: reduced range
    export_bundle(model, "arm64-cpu", weights="int8", activations="int8", data=data, output=tmp_path / "arm", progress=False)
    exported = onnx.load(str(tmp_path / "arm" / "model.onnx"))
    producers = {o: n for n in exported.graph.node for o in n.output}
    project = next(n for n in exported.graph.node if n.name == "project")
    assert np.abs(_initializer(exported, producers[project.input[1]].input[0]).astype(int)).max() > 64  # ARM: full int8

    # A model quantized for TensorRT: rewritten exactly, and the bundle still matches it.
    trt_path = tmp_path / "trt.onnx"
    onnx.save(tensorrt_int8, str(trt_path))
    result = export_bundle(trt_path, "x86-cpu", output=tmp_path / "from-trt", progress=False)
    assert any(note.startswith("for onnxruntime:") and "zero point -128" in note for note in result.notes)
    assert -128 in zero_points(tmp_path / "from-trt")
    assert all(v["cosine"] > 0.9999 for v in result.verification["outputs"].values())


def _centered_graph(consumer_pads: int, pad_scale: float | None) -> onnx.ModelProto:
    """conv -> Clip(-3, 3) -> Q/DQ (scale 3/128) -> [Pad(-3) -> Q/DQ (pad_scale) ->] conv (consumer_pads)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array(-3.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(3.0, np.float32), "hi"),
        numpy_helper.from_array(np.array(3.0 / 128, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c"], name="conv1"),
        helper.make_node("Clip", ["c", "lo", "hi"], ["t"], name="clip"),
        helper.make_node("QuantizeLinear", ["t", "s", "z"], ["tq"], name="q"),
        helper.make_node("DequantizeLinear", ["tq", "s", "z"], ["td"], name="dq"),
    ]
    read = "td"
    if pad_scale is not None:
        inits += [
            numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
            numpy_helper.from_array(np.array(-3.0, np.float32), "pad_value"),
            numpy_helper.from_array(np.array(pad_scale, np.float32), "ps"),
        ]
        nodes += [
            helper.make_node("Pad", ["td", "pads", "pad_value"], ["p"], name="pad"),
            helper.make_node("QuantizeLinear", ["p", "ps", "z"], ["pq"], name="pad_q"),
            helper.make_node("DequantizeLinear", ["pq", "ps", "z"], ["pd"], name="pad_dq"),
        ]
        read = "pd"
    nodes.append(helper.make_node("Conv", [read, "w2"], ["y"], name="conv2", pads=[consumer_pads] * 4))
    graph = helper.make_graph(
        nodes, "centered",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, None, None])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("consumer_pads", "pad_scale", "rewritten"),
    [
        (0, 3.0 / 128, True),  # what edgeq writes: explicit Pad on the same grid
        (1, None, False),  # the conv zero-pads the centered tensor itself: a real -3 is not a real 0
        (0, 6.0 / 128, False),  # the Pad's quantizer is another grid: dropping it would change values
    ],
)
def test_rewrite_only_where_it_is_exact(consumer_pads, pad_scale, rewritten):
    model = _centered_graph(consumer_pads, pad_scale)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32) * 2
    before = _run(model, x)
    assert CentersToZeroPoints().apply(model) is rewritten
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-5, atol=1e-4)


def test_int32_gemm_bias_is_the_float_bias_on_the_accumulator_grid(tensorrt_int8):
    from edgeq.graph.passes.int32_bias import Int32GemmBias

    model = onnx.ModelProto()
    model.CopyFrom(tensorrt_int8)
    producers = {o: n for n in model.graph.node for o in n.output}
    fc = next(n for n in model.graph.node if n.name == "fc")
    act_scale = float(_initializer(model, producers[fc.input[0]].input[1]))
    weight_scale = _initializer(model, producers[fc.input[1]].input[1]).astype(np.float64)
    bias = _initializer(model, fc.input[2]).astype(np.float64)
    x = images(32, seed=4)
    before = _run(model, x)
    rewrite = Int32GemmBias()
    assert rewrite.apply(model) and rewrite.converted == ["fc"]
    onnx.checker.check_model(model, full_check=True)
    producers = {o: n for n in model.graph.node for o in n.output}
    dq = producers[next(n for n in model.graph.node if n.name == "fc").input[2]]
    codes = _initializer(model, dq.input[0])
    assert codes.dtype == np.int32
    np.testing.assert_array_equal(codes, np.rint(bias / (act_scale * weight_scale)).astype(np.int32))
    # The logits move by at most half a step of the accumulator grid.
    assert np.abs(_run(model, x) - before).max() <= 0.5 * act_scale * weight_scale.max() * 1.001 + 1e-6
