"""W8A8 QDQ end to end on small graphs: runs in onnxruntime, passes the checker and the TensorRT lint,
keeps tensor names, reports every node, and beats plain min/max quantization."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgeq import metrics
from edgeq.data import load_data
from edgeq.errors import ConfigError
from edgeq.graph.trt_lint import lint_tensorrt
from edgeq.quantize import Int8Config, QuantizeInputs, quantize
from tests.unit.int8_graphs import images, mlp_with_layernorm, mobilenet_block, run


@pytest.fixture(scope="module")
def block() -> onnx.ModelProto:
    return mobilenet_block()


def _quantize(model: onnx.ModelProto, config: Int8Config, n: int = 48) -> onnx.ModelProto:
    data = load_data({"input": images(n)}, model, batch_size=8)
    return quantize(model, config, QuantizeInputs(data=data, progress=False)).model


def _sqnr(model: onnx.ModelProto, quantized: onnx.ModelProto) -> float:
    x = images(64, seed=7)
    return metrics.sqnr_db(run(model, {"input": x})[0], run(quantized, {"input": x})[0])


def test_int8_graph_is_valid_tensorrt_qdq(block):
    data = load_data({"input": images(48)}, block, batch_size=8)
    result = quantize(block, Int8Config(), QuantizeInputs(data=data, progress=False))
    model = result.model
    onnx.checker.check_model(model, full_check=True)
    assert lint_tensorrt(model) == []
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" not in ops
    # Every compute node reads a DequantizeLinear on its input and weight; biases stay float.
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            assert producers[node.input[0]].op_type == "DequantizeLinear"
            weight_dq = producers[node.input[1]]
            assert weight_dq.op_type == "DequantizeLinear"
            assert inits[weight_dq.input[0]].data_type == onnx.TensorProto.INT8
            assert inits[node.input[2]].data_type == onnx.TensorProto.FLOAT
    # Node outputs keep the float graph's tensor names (compare matches layers by name), except
    # the equalized and re-centered ones, which hold rescaled/shifted values and so get new names.
    outputs = {o for n in model.graph.node for o in n.output}
    assert {"stem_o", "p", "h", "logits", "e_equalized_centered", "d6_equalized_centered"} <= outputs
    assert not {"e", "d", "e6", "d6"} & outputs
    assert _sqnr(block, model) > 30.0
    assert len(result.summary.quantized) == 6 and not result.summary.left_in_float


def test_each_refinement_is_measured_against_plain_minmax(block):
    plain = Int8Config(equalization=False, bias_correction=False, weight_clipping="max", activation_method="minmax", recenter=False)
    plain_sqnr = _sqnr(block, _quantize(block, plain))
    full_sqnr = _sqnr(block, _quantize(block, Int8Config()))
    assert full_sqnr > plain_sqnr, (full_sqnr, plain_sqnr)


def test_summary_explains_every_float_node(block):
    data = load_data({"input": images(16)}, block, batch_size=8)
    config = Int8Config(exclude="^head$", op_types=("Conv",))
    summary = quantize(block, config, QuantizeInputs(data=data, progress=False)).summary
    reasons = {n.name: n.reason for n in summary.left_in_float}
    assert reasons["head"].startswith("excluded by --exclude")
    assert "not in --op-types" in reasons["fc"]
    text = summary.format_text()
    assert "head (Conv): float, excluded" in text
    assert any("BatchNormalization" in note for note in summary.notes)


def test_weight_not_an_initializer_is_reported():
    model = mobilenet_block()
    # The head weight computed at run time (here by an Identity): it cannot be quantized offline.
    head = next(n for n in model.graph.node if n.name == "head")
    model.graph.node.insert(0, onnx.helper.make_node("Identity", ["head.w"], ["head_w_runtime"], name="weight_copy"))
    head.input[1] = "head_w_runtime"
    data = load_data({"input": images(16)}, model, batch_size=8)
    result = quantize(model, Int8Config(), QuantizeInputs(data=data, progress=False))
    reasons = {n.name: n.reason for n in result.summary.left_in_float}
    assert reasons == {"head": "weight is computed, not an initializer"}
    assert lint_tensorrt(result.model) == []


def test_calibration_table_only_path(block, tmp_path):
    from edgeq.calibrate.collector import collect
    from edgeq.calibrate.observers import HistogramObserver
    from edgeq.calibrate.table import CalibrationTable, TensorRange
    from edgeq.graph.passes.fold_batchnorm import FoldBatchNorm
    from edgeq.graph.passes.qdq import plan_qdq

    folded = onnx.ModelProto()
    folded.CopyFrom(block)
    FoldBatchNorm().apply(folded)
    plan = plan_qdq(folded, ["stem", "expand", "dw", "project", "head", "fc"])
    data = load_data({"input": images(32)}, block, batch_size=8)
    observers = {t: [HistogramObserver()] for t in plan.activations}
    collect(folded, data, observers)
    tensors = {}
    for name, (obs,) in observers.items():
        th = obs.thresholds()
        tensors[name] = TensorRange(name, obs.min, obs.max, th["mse"], th)
    table = CalibrationTable("0" * 64, "mse", 32, tensors)
    result = quantize(block, Int8Config(), QuantizeInputs(calibration=table, progress=False))
    assert lint_tensorrt(result.model) == []
    assert _sqnr(block, result.model) > 25.0
    assert any("needs --data" in note for note in result.summary.notes)
    del tensors["a0"]
    with pytest.raises(ConfigError, match="a0"):
        quantize(block, Int8Config(), QuantizeInputs(calibration=CalibrationTable("0" * 64, "mse", 32, tensors), progress=False))


def test_needs_calibration_and_valid_options(block):
    with pytest.raises(ConfigError, match="--data"):
        quantize(block, Int8Config(), QuantizeInputs(progress=False))
    data = load_data({"input": images(8)}, block, batch_size=8)
    with pytest.raises(ConfigError, match="--op-types"):
        quantize(block, Int8Config(op_types=("Relu",)), QuantizeInputs(data=data, progress=False))
    with pytest.raises(ConfigError, match="--exclude"):
        quantize(block, Int8Config(exclude="("), QuantizeInputs(data=data, progress=False))


def test_transformer_matmuls_and_smoothquant():
    model = mlp_with_layernorm()
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((64, 5, 16)).astype(np.float32)
    test = rng.standard_normal((64, 5, 16)).astype(np.float32)
    data = load_data({"x": calib}, model, batch_size=16)
    ref = run(model, {"x": test})[0]
    plain = quantize(model, Int8Config(), QuantizeInputs(data=data, progress=False))
    smooth = quantize(model, Int8Config(smoothquant_alpha=0.5), QuantizeInputs(data=data, progress=False))
    for result in (plain, smooth):
        onnx.checker.check_model(result.model, full_check=True)
        assert lint_tensorrt(result.model) == []
    assert any("smoothquant" in n for n in smooth.summary.notes)
    # The outlier channel (x30) is what SmoothQuant is for: it must help here.
    assert metrics.sqnr_db(ref, run(smooth.model, {"x": test})[0]) > metrics.sqnr_db(ref, run(plain.model, {"x": test})[0])


def test_cli_quantize_int8_writes_model_and_summary(tmp_path, block, capsys):
    import json

    from edgeq.cli import main

    model_path, data_path = tmp_path / "m.onnx", tmp_path / "calib.npz"
    onnx.save(block, str(model_path))
    np.savez(data_path, input=images(24))
    out, summary = tmp_path / "q.onnx", tmp_path / "summary.json"
    code = main(["quantize", str(model_path), "--activations", "int8", "--weights", "int8", "--data", str(data_path),
                 "-o", str(out), "--exclude", "fc", "--summary", str(summary)])
    assert code == 0
    text = capsys.readouterr().out
    assert "fc (Gemm): float, excluded" in text
    doc = json.loads(summary.read_text())
    assert doc["_type"] == "edgeq.QuantizationSummary"
    assert {n["name"] for n in doc["_data"]["nodes"]} == {"stem", "expand", "dw", "project", "head", "fc"}
    assert lint_tensorrt(onnx.load(str(out))) == []
