"""Streaming models: state inputs the data leaves out carry the state from chunk to chunk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeq.calibrate.streaming import StreamingSource, open_data, state_pairs
from edgeq.data.state import StatePair
from edgeq.errors import DataError
from edgeq.evaluate import compare_models
from edgeq.quantize.api import QuantizeInputs, quantize
from edgeq.quantize.config import Int8Config, WeightOnlyConfig

H, FEATURES = 16, 12


def stateful_lstm(path: Path) -> onnx.ModelProto:
    """A VAD-like cell: Conv -> LSTM with h/c state in and hn/cn out -> MatMul -> Sigmoid."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((FEATURES, 1, 3)) * 0.5).astype(np.float32), "conv_w"),
        numpy_helper.from_array((rng.standard_normal((1, 4 * H, FEATURES)) * 0.4).astype(np.float32), "W"),
        numpy_helper.from_array((rng.standard_normal((1, 4 * H, H)) * 0.4).astype(np.float32), "R"),
        numpy_helper.from_array((rng.standard_normal((H, 1)) * 0.5).astype(np.float32), "head"),
        numpy_helper.from_array(np.array([2, 0, 1], np.int64), "perm_unused"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w"], ["features"], name="conv", pads=[1, 1]),  # [1, FEATURES, T]
        helper.make_node("Transpose", ["features"], ["sequence"], perm=[2, 0, 1]),  # [T, 1, FEATURES]
        helper.make_node("LSTM", ["sequence", "W", "R", "", "", "h", "c"], ["Y", "hn", "cn"], name="lstm", hidden_size=H),
        helper.make_node("Squeeze", ["Y", "axis1"], ["y"]),  # [T, 1, H]
        helper.make_node("MatMul", ["y", "head"], ["logit"], name="head_matmul"),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),
    ]
    graph = helper.make_graph(
        nodes, "vad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "time"]), helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 1, H]),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 1, H])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["time", 1, 1]), helper.make_tensor_value_info("hn", TensorProto.FLOAT, [1, 1, H]),
         helper.make_tensor_value_info("cn", TensorProto.FLOAT, [1, 1, H])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return model


def _chunks(n: int = 6, t: int = 10) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, 1, 1, t)).astype(np.float32)


def test_state_pairs_and_carried_state(tmp_path: Path) -> None:
    model = stateful_lstm(tmp_path / "vad.onnx")
    assert state_pairs(model) == [StatePair("h", "hn"), StatePair("c", "cn")]
    chunks = _chunks()
    source = open_data({"x": chunks}, model, tmp_path / "vad.onnx")
    assert isinstance(source, StreamingSource) and "zeros at the first chunk" in source.notes[-1]
    session = ort.InferenceSession(str(tmp_path / "vad.onnx"), providers=["CPUExecutionProvider"])
    h = c = np.zeros((1, 1, H), np.float32)
    for feeds, chunk in zip(source, chunks, strict=True):  # twice: every pass restarts the stream
        np.testing.assert_array_equal(feeds["h"], h)
        np.testing.assert_array_equal(feeds["c"], c)
        _, h, c = session.run(None, {"x": chunk, "h": h, "c": c})
    assert np.abs(h).max() > 0.05  # the state really moved
    assert [f["h"].max() for f in source] == [f["h"].max() for f in source]
    # Data with the state inputs is used as it is.
    given = open_data({"x": chunks, "h": np.zeros((6, 1, 1, H), np.float32), "c": np.zeros((6, 1, 1, H), np.float32)}, model)
    assert not isinstance(given, StreamingSource)
    with pytest.raises(DataError, match=r"holds state input.* h but not c"):
        open_data({"x": chunks, "h": np.zeros((6, 1, 1, H), np.float32)}, model)


def test_streaming_calibration_and_compare(tmp_path: Path) -> None:
    path = tmp_path / "vad.onnx"
    model = stateful_lstm(path)
    source = open_data({"x": _chunks(16)}, model, path)
    result = quantize(model, Int8Config(), QuantizeInputs(data=source, progress=False))
    rows = {n.name: n for n in result.summary.nodes}
    assert rows["conv"].quantized and rows["lstm"].quantized and "weight-only int8" in rows["lstm"].scheme
    onnx.save(result.model, str(tmp_path / "int8.onnx"))
    onnx.save(quantize(model, WeightOnlyConfig(weights="int8", block_size=16)).model, str(tmp_path / "w8.onnx"))
    compared = compare_models(path, [tmp_path / "int8.onnx", tmp_path / "w8.onnx"], {"x": _chunks(8)}, layers=False, latency=False)
    assert compared.samples == 8
    for variant in compared.variants:
        assert variant.metrics, variant
    # Each model carries its own state: the SQNR is that of the two streams run side by side.
    chunks = _chunks(8)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cand = ort.InferenceSession(str(tmp_path / "w8.onnx"), providers=["CPUExecutionProvider"])
    zero = np.zeros((1, 1, H), np.float32)
    states = {"ref": (zero, zero), "cand": (zero, zero)}
    signal = noise = 0.0
    for chunk in chunks:
        p_ref, *states["ref"] = ref.run(None, {"x": chunk, "h": states["ref"][0], "c": states["ref"][1]})
        p_cand, *states["cand"] = cand.run(None, {"x": chunk, "h": states["cand"][0], "c": states["cand"][1]})
        signal += float(np.sum(p_ref.astype(np.float64) ** 2))
        noise += float(np.sum((p_ref.astype(np.float64) - p_cand) ** 2))
    expected = 10 * np.log10(signal / noise)
    assert compared.variants[1].metrics["sqnr_db"] == pytest.approx(expected, abs=0.05)
    same = compare_models(path, [path], {"x": chunks}, layers=False, latency=False)
    assert same.variants[0].metrics["sqnr_db"] == 200.0
