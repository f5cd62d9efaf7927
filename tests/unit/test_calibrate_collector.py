"""The collector and calibrate(): tensors exposed as outputs, batch-by-batch observers, the table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeq.calibrate import (
    CalibrationTable,
    HessianObserver,
    activation_inputs,
    all_activations,
    calibrate,
    collect,
)
from edgeq.calibrate.collector import expose_tensors
from edgeq.data import load_data
from edgeq.errors import ConfigError, DataError
from edgeq.graph.io import model_sha256


def _mlp(path: Path | None = None) -> onnx.ModelProto:
    """x -> MatMul(W1) -> Relu -> Gemm(W2): activations x and relu feed quantizable nodes."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(6, 5)).astype(np.float32), "W1")
    w2 = numpy_helper.from_array(rng.normal(size=(5, 3)).astype(np.float32), "W2")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("Gemm", ["r", "W2"], ["y"], name="fc2"),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        onnx.save(model, str(path))
    return model


def _reference_activations(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    h = x.astype(np.float64) @ inits["W1"]
    r = np.maximum(h, 0)
    return {"x": x.astype(np.float64), "h": h, "r": r, "y": r @ inits["W2"]}


class Recorder:
    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.values: list[np.ndarray] = []

    def update(self, x: np.ndarray) -> None:
        self.shapes.append(x.shape)
        self.values.append(x.copy())

    def merge(self, other: object) -> None:
        raise NotImplementedError


def test_default_and_all_tensor_sets() -> None:
    model = _mlp()
    assert activation_inputs(model) == ["x", "r"]
    assert activation_inputs(model, nodes="fc2") == ["r"]
    assert all_activations(model) == ["x", "h", "r", "y"]
    with pytest.raises(ConfigError, match="--nodes"):
        activation_inputs(model, nodes="(")


def test_exposed_model_is_valid_and_runs() -> None:
    import onnxruntime as ort

    exposed = expose_tensors(_mlp(), ["h", "r", "x"])
    onnx.checker.check_model(exposed, full_check=True)
    assert [o.name for o in exposed.graph.output] == ["y", "h", "r"]
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": np.ones((2, 6), np.float32)})
    assert [o.shape for o in out] == [(2, 3), (2, 5), (2, 5)]


def test_collect_feeds_each_batch_once() -> None:
    model = _mlp()
    x = np.random.default_rng(1).normal(size=(10, 6)).astype(np.float32)
    source = load_data({"x": x}, model, batch_size=4)
    recorders = {"h": Recorder(), "x": Recorder()}
    assert collect(model, source, {"h": [recorders["h"]], "x": [recorders["x"]]}) == 10
    assert recorders["h"].shapes == [(4, 5), (4, 5), (2, 5)]  # one batch at a time, never the whole set
    reference = _reference_activations(model, x)
    np.testing.assert_allclose(np.concatenate(recorders["h"].values), reference["h"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate(recorders["x"].values), x)


def test_collect_gives_gptq_hessian() -> None:
    model = _mlp()
    x = np.random.default_rng(2).normal(size=(9, 6)).astype(np.float32)
    observer = HessianObserver()
    collect(model, load_data({"x": x}, model, batch_size=4), {"r": [observer]})
    r = _reference_activations(model, x)["r"]
    np.testing.assert_allclose(observer.hessian, r.T @ r / 9, rtol=1e-5, atol=1e-6)


def test_calibrate_minmax_table_against_reference(tmp_path: Path) -> None:
    path = tmp_path / "mlp.onnx"
    model = _mlp(path)
    x = np.random.default_rng(3).normal(size=(32, 6)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    table = calibrate(path, tmp_path / "calib.npz", method="minmax", batch_size=5, progress=False)
    reference = _reference_activations(model, x)
    assert table.samples == 32 and table.model_sha256 == model_sha256(path) and list(table.tensors) == ["x", "r"]
    for name in ("x", "r"):
        item = table[name]
        assert item.min == pytest.approx(reference[name].min(), rel=1e-6, abs=1e-6)
        assert item.max == pytest.approx(reference[name].max(), rel=1e-6)
        assert item.amax == item.thresholds["minmax"] == pytest.approx(np.abs(reference[name]).max(), rel=1e-6)
        assert set(item.thresholds) == {"minmax", "percentile", "entropy", "mse"}
    again = CalibrationTable.from_json(table.to_json())
    assert again == table
    table.check_model(path)


def test_calibrate_explicit_tensors_and_errors(tmp_path: Path) -> None:
    model = _mlp()
    x = np.random.default_rng(4).normal(size=(8, 6)).astype(np.float32)
    table = calibrate(model, load_data({"x": x}, model), tensors=["h", "y"], progress=False, method="percentile")
    assert list(table.tensors) == ["h", "y"] and table.method == "percentile"
    with pytest.raises(ConfigError, match="tensor 'W1' is a constant"):
        calibrate(model, load_data({"x": x}, model), tensors=["W1"], progress=False)
    with pytest.raises(ConfigError, match="tensor 'nope' is not produced"):
        calibrate(model, load_data({"x": x}, model), tensors=["nope"], progress=False)
    with pytest.raises(ConfigError, match="nothing to calibrate"):
        calibrate(model, load_data({"x": x}, model), nodes="^conv", progress=False)
    with pytest.raises(ConfigError, match="--method"):
        calibrate(model, load_data({"x": x}, model), method="kl", progress=False)
    with pytest.raises(DataError, match="float64, the model expects float32"):
        calibrate(model, {"x": x.astype(np.float64)}, progress=False)  # type: ignore[arg-type]


def test_overflowing_model_is_reported() -> None:
    big = numpy_helper.from_array(np.full((2, 2), 3e38, np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"), helper.make_node("MatMul", ["h", "W"], ["y"], name="mm2")],
        "overflow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 2])],
        [big],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(DataError, match="produced no finite values"):
        calibrate(model, load_data({"x": np.ones((2, 2), np.float32)}, model), progress=False)
