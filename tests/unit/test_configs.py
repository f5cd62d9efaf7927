"""Stage contracts: configs refuse bad values when built, and one calibration-table reader with
one precedence serves ``edgeq quantize`` and ``edgeq export`` alike."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeq.calibrate import calibrate
from edgeq.calibrate.table import BOTH_GIVEN_NOTE
from edgeq.cli import main
from edgeq.errors import ConfigError
from edgeq.quantize.config import Int8Config, MixedPrecisionConfig, WeightOnlyConfig

RNG = np.random.default_rng(11)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: WeightOnlyConfig(weights="int3"), "--weights: unknown value 'int3'"),
        (lambda: WeightOnlyConfig(method="best"), "--method: unknown value 'best'"),
        (lambda: WeightOnlyConfig(onnx_format="gguf"), "--format: unknown value 'gguf'"),
        (lambda: WeightOnlyConfig(block_size=24), "--block-size: 24 is not a power of two"),
        (lambda: WeightOnlyConfig(accuracy_level=5), "--accuracy-level: 5"),
        (lambda: WeightOnlyConfig(exclude="("), "--exclude: '(' is not a valid regular expression"),
        (lambda: WeightOnlyConfig(gptq_damp=-1.0), "gptq_damp"),
        (lambda: Int8Config(op_types=("Relu",)), "--op-types: Relu cannot be int8 QDQ"),
        (lambda: Int8Config(op_types=()), "--op-types: give at least one"),
        (lambda: Int8Config(layout="openvino"), "--layout: 'openvino'"),
        (lambda: Int8Config(reduce_range=True), "--reduce-range is for --layout onnxruntime"),
        (lambda: Int8Config(smoothquant_alpha=1.5), "--smoothquant: alpha 1.5"),
        (lambda: Int8Config(activation_method="kl"), "activation method 'kl'"),
        (lambda: Int8Config(weight_clipping="p99"), "weight clipping 'p99'"),
        (lambda: Int8Config(exclude="[a-"), "--exclude: '[a-' is not a valid regular expression"),
        (lambda: MixedPrecisionConfig(), "exactly one of --budget"),
        (lambda: MixedPrecisionConfig(avg_bits=3.0, budget_bytes=10), "exactly one of --budget"),
        (lambda: MixedPrecisionConfig(avg_bits=float("nan")), "--avg-bits: nan"),
        (lambda: MixedPrecisionConfig(budget_bytes=0), "--budget: 0 bytes"),
        (lambda: MixedPrecisionConfig(avg_bits=3.0, block_size=8), "--block-size: 8"),
        (lambda: MixedPrecisionConfig(avg_bits=3.0, method="best"), "--method: unknown value 'best'"),
        (lambda: MixedPrecisionConfig(avg_bits=3.0, candidates=("int3",)), "--candidates: unknown format 'int3'"),
        (lambda: MixedPrecisionConfig(avg_bits=3.0, candidates=("fp16",)), "use 'float'"),
        (lambda: MixedPrecisionConfig(avg_bits=3.0, candidates=()), "--candidates: give at least one"),
        (lambda: MixedPrecisionConfig(avg_bits=3.0, exclude="("), "--exclude: '(' is not a valid regular expression"),
    ],
)
def test_configs_refuse_bad_values_on_construction(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_good_configs_round_trip_through_json() -> None:
    for config in (
        WeightOnlyConfig(weights="nf4", block_size=64, exclude="^lm_head$"),  # type: ignore[arg-type]
        Int8Config(op_types=["Conv", "Gemm"], layout="onnxruntime", reduce_range=True),  # type: ignore[arg-type]
        MixedPrecisionConfig(candidates=("int4", "float"), avg_bits=4.5, method="gptq"),  # type: ignore[arg-type]
    ):
        assert type(config).from_json(config.to_json()) == config


# -- one table reader, one precedence -----------------------------------------------------------


def _mlp(path: Path) -> Path:
    w1 = numpy_helper.from_array(RNG.normal(size=(16, 32)).astype(np.float32) * 0.2, "w1")
    w2 = numpy_helper.from_array(RNG.normal(size=(32, 8)).astype(np.float32) * 0.2, "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _convnet(path: Path) -> Path:
    w = numpy_helper.from_array(RNG.normal(size=(8, 3, 3, 3)).astype(np.float32) * 0.2, "w")
    w2 = numpy_helper.from_array(RNG.normal(size=(8, 8, 3, 3)).astype(np.float32) * 0.2, "w2")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
         helper.make_node("Relu", ["c"], ["r"], name="relu1"),
         helper.make_node("Conv", ["r", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
         helper.make_node("GlobalAveragePool", ["c2"], ["y"], name="pool")], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 1, 1])], [w, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _calibrated(model: Path, data: Path, tmp_path: Path, scale: float = 1.0) -> Path:
    """A table for ``model`` measured on ``data`` scaled by ``scale`` (so its ranges differ)."""
    arrays = {k: v * scale for k, v in np.load(data).items()}
    table = calibrate(model, arrays, method="entropy", tensors="all", progress=False)
    return table.save(tmp_path / "calib.json")


def test_quantize_with_data_and_table_uses_the_data_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _mlp(tmp_path / "m.onnx")
    data = tmp_path / "d.npz"
    np.savez(data, x=RNG.normal(size=(32, 16)).astype(np.float32))
    table = _calibrated(model, data, tmp_path, scale=3.0)
    base = ["quantize", str(model), "--weights", "int8", "--activations", "int8", "--data", str(data), "--quiet"]
    assert main([*base, "-o", str(tmp_path / "data.onnx"), "--summary", str(tmp_path / "data.json")]) == 0
    assert main([*base, "--calib", str(table), "-o", str(tmp_path / "both.onnx"), "--summary", str(tmp_path / "both.json")]) == 0
    assert (tmp_path / "both.onnx").read_bytes() == (tmp_path / "data.onnx").read_bytes()  # the data decided
    notes = json.loads((tmp_path / "both.json").read_text())["_data"]["notes"]
    assert notes[0] == BOTH_GIVEN_NOTE
    assert BOTH_GIVEN_NOTE not in json.loads((tmp_path / "data.json").read_text())["_data"]["notes"]
    assert main([*base[:-3], "--calib", str(table), "-o", str(tmp_path / "table.onnx"), "--quiet"]) == 0
    assert (tmp_path / "table.onnx").read_bytes() != (tmp_path / "data.onnx").read_bytes()  # the table alone is used


def test_implicit_export_with_data_and_table_uses_the_data_and_says_so(tmp_path: Path) -> None:
    from edgeq.export.bundle import export_bundle

    model = _convnet(tmp_path / "conv.onnx")
    data = tmp_path / "d.npz"
    np.savez(data, x=RNG.normal(size=(8, 3, 16, 16)).astype(np.float32))
    table = _calibrated(model, data, tmp_path, scale=3.0)
    common: dict[str, Any] = {"weights": "int8", "activations": "int8", "dla": True, "progress": False}
    from_data = export_bundle(model, "jetson-agx-orin", data=data, output=tmp_path / "data", **common)
    both = export_bundle(model, "jetson-agx-orin", data=data, calib=table, output=tmp_path / "both", **common)
    cache = "calibration.cache"
    assert (tmp_path / "both" / cache).read_text() == (tmp_path / "data" / cache).read_text()
    assert BOTH_GIVEN_NOTE in both.notes and BOTH_GIVEN_NOTE not in from_data.notes
    export_bundle(model, "jetson-agx-orin", calib=table, output=tmp_path / "table", **common)
    assert (tmp_path / "table" / cache).read_text() != (tmp_path / "data" / cache).read_text()


@pytest.mark.parametrize("fault", ["missing", "not json", "nan", "other model"])
def test_the_same_bad_table_gives_the_same_error_in_quantize_and_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: str
) -> None:
    model = _mlp(tmp_path / "m.onnx")
    data = tmp_path / "d.npz"
    np.savez(data, x=RNG.normal(size=(8, 16)).astype(np.float32))
    bad = tmp_path / "bad.json"
    if fault == "not json":
        bad.write_text("{")
    elif fault in ("nan", "other model"):
        other = _mlp(tmp_path / "other.onnx") if fault == "other model" else model
        text = _calibrated(other, data, tmp_path).read_text()
        bad.write_text(text.replace('"min": ', '"min": NaN, "was": ', 1) if fault == "nan" else text)
    errors = []
    for command in (["quantize", str(model), "--weights", "int8", "--activations", "int8", "-o", str(tmp_path / "q.onnx")],
                    ["export", str(model), "--target", "x86-cpu", "--weights", "int8", "--activations", "int8",
                     "-o", str(tmp_path / "b")]):
        assert main([*command, "--calib", str(bad)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: ")
        errors.append(lines[0])
    assert errors[0] == errors[1]
    assert not (tmp_path / "q.onnx").exists() and not (tmp_path / "b").exists()
