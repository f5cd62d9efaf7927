"""``--budget`` bounds the whole written file; ``--weight-budget`` keeps the weight-only meaning."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeq.errors import ConfigError
from edgeq.graph.io import save_model
from edgeq.quantize.api import quantize_file
from edgeq.quantize.config import Method, MixedPrecisionConfig, WeightOnlyConfig
from edgeq.quantize.schemes.mixed import scheme
from edgeq.quantize.schemes.mixed.filesize import (
    external_bytes,
    removable_weights,
    stripped_bytes,
    written_bytes,
)
from edgeq.quantize.schemes.mixed.writer import METADATA_KEY
from tests.unit.test_mixed_scheme import _new_initializer_bytes, sequence_model, token_data

HIDDEN, FFN = 64, 96


def matmul_model() -> onnx.ModelProto:
    """x -> MatMul -> Add(bias) -> LayerNorm -> MatMul -> Relu -> MatMul: three matrices, float tensors beside them."""
    rng = np.random.default_rng(5)
    inits = [
        numpy_helper.from_array((rng.standard_normal((HIDDEN, FFN)) / 8).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(FFN).astype(np.float32), "b1"),
        numpy_helper.from_array(np.ones(FFN, np.float32), "gamma"),
        numpy_helper.from_array(np.zeros(FFN, np.float32), "beta"),
        numpy_helper.from_array((rng.standard_normal((FFN, FFN)) / 10).astype(np.float32), "w2"),
        numpy_helper.from_array((rng.standard_normal((FFN, HIDDEN)) / 10).astype(np.float32), "w3"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
        helper.make_node("Add", ["h1", "b1"], ["h2"], name="bias1"),
        helper.make_node("LayerNormalization", ["h2", "gamma", "beta"], ["h3"], name="norm", axis=-1),
        helper.make_node("MatMul", ["h3", "w2"], ["h4"], name="fc2"),
        helper.make_node("Relu", ["h4"], ["h5"], name="relu"),
        helper.make_node("MatMul", ["h5", "w3"], ["y"], name="fc3"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", HIDDEN])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The model, its calibration data and the uniform int4 file the weight-only scheme writes."""
    model, data, uniform = tmp_path / "m.onnx", tmp_path / "calib.npz", tmp_path / "int4.onnx"
    onnx.save(matmul_model(), str(model))
    np.savez(data, x=np.random.default_rng(1).standard_normal((32, HIDDEN)).astype(np.float32))
    quantize_file(model, WeightOnlyConfig(block_size=32), uniform, progress=False)
    return model, data, uniform


def _plan(path: Path) -> dict:
    return json.loads(next(p.value for p in onnx.load(str(path)).metadata_props if p.key == METADATA_KEY))


def _smallest(message: str) -> int:
    found = re.search(r"smallest achievable size [0-9.]+ [kMG]?B \(([0-9,]+) B\)", message)
    assert found, message
    return int(found.group(1).replace(",", ""))


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_a_budget_of_the_uniform_int4_file_bounds_the_whole_mixed_file(files, tmp_path: Path, method: str) -> None:
    model, data, uniform = files
    budget = os.path.getsize(uniform)
    out = tmp_path / "mixed.onnx"
    result = quantize_file(model, MixedPrecisionConfig(budget_bytes=budget, block_size=32, method=Method(method)), out, data=data, progress=False)
    size = os.path.getsize(out)
    assert size <= budget
    assert size == written_bytes(result.model)  # what the scheme checked is what save_model wrote
    plan = _plan(out)
    assert plan["budget_bytes"] == budget and plan["budget_counts"].startswith("the whole written file")
    # The graph, the plan and the float tensors left alone are counted: the matrices get less than the file.
    assert plan["fixed_bytes"] + plan["weight_bytes"] < size
    note = next(n for n in result.summary.notes if n.startswith("mixed precision:"))
    assert f"budget {budget / 1e3:.2f} kB ({budget:,} B)" in note and f"({size:,} B)" in note
    assert f"margin {(budget - size) / 1e3:.2f} kB" in note or f"margin {budget - size:,} B" in note
    # The same number as a weight budget yields a file above it: the meaning the option used to have.
    old = tmp_path / "weights.onnx"
    quantize_file(model, MixedPrecisionConfig(weight_budget_bytes=budget, block_size=32, method=Method(method)), old, data=data, progress=False)
    assert _plan(old)["weight_bytes"] <= budget < os.path.getsize(old)


def test_a_budget_below_the_smallest_file_is_refused_naming_it(files, tmp_path: Path) -> None:
    model, data, _ = files
    config = {"block_size": 32, "candidates": ("int2", "int4", "int8")}
    with pytest.raises(ConfigError) as info:
        quantize_file(model, MixedPrecisionConfig(budget_bytes=1000, **config), tmp_path / "no.onnx", data=data, progress=False)
    message = str(info.value)
    assert "\n" not in message and "for the whole file" in message and not (tmp_path / "no.onnx").exists()
    smallest = _smallest(message)
    # Before measuring, the refusal names a lower bound; after, the exact minimum: that one is written.
    for _ in range(2):
        try:
            result = quantize_file(model, MixedPrecisionConfig(budget_bytes=smallest, **config), tmp_path / "q.onnx", data=data, progress=False)
            break
        except ConfigError as exc:
            assert _smallest(str(exc)) > smallest
            smallest = _smallest(str(exc))
    assert os.path.getsize(tmp_path / "q.onnx") <= smallest
    assert {d.scheme.split()[0] for d in result.summary.nodes if d.quantized} == {"int2"}
    with pytest.raises(ConfigError, match=rf"smallest achievable size .*{smallest:,} B"):
        quantize_file(model, MixedPrecisionConfig(budget_bytes=smallest - 1, **config), tmp_path / "no.onnx", data=data, progress=False)


def test_the_weight_budget_counts_the_matrices_only(files, tmp_path: Path) -> None:
    model, data, _ = files
    float_model = matmul_model()
    out = tmp_path / "w.onnx"
    result = quantize_file(model, MixedPrecisionConfig(weight_budget_bytes=12_000, block_size=32), out, data=data, progress=False)
    plan = _plan(out)
    assert _new_initializer_bytes(float_model, onnx.load(str(out))) == plan["weight_bytes"] <= 12_000 == plan["budget_bytes"]
    assert plan["budget_counts"].startswith("weights of the quantizable matrices") and "fixed_bytes" not in plan
    assert any("--weight-budget: the budget counts" in n for n in result.summary.notes)
    assert any(f"whole model file {os.path.getsize(out) / 1e3:.2f} kB" in n for n in result.summary.notes)
    with pytest.raises(ConfigError, match=r"--weight-budget .* is below the smallest achievable size"):
        quantize_file(model, MixedPrecisionConfig(weight_budget_bytes=100, block_size=32), tmp_path / "no.onnx", data=data, progress=False)


def test_an_overshoot_is_tightened_once_or_refused(files, tmp_path: Path, monkeypatch) -> None:
    """If the written file exceeds the budget (bytes no estimate saw), the plan is allocated again once."""
    model, data, uniform = files
    budget = os.path.getsize(uniform)
    monkeypatch.setattr(scheme, "FILE_SLACK", -1500)  # as if 1.5 kB had gone unseen
    calls = []
    original = scheme.write_plan

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(scheme, "write_plan", counted)
    out = tmp_path / "q.onnx"
    quantize_file(model, MixedPrecisionConfig(budget_bytes=budget, block_size=32), out, data=data, progress=False)
    assert len(calls) == 2 and os.path.getsize(out) <= budget
    monkeypatch.setattr(scheme, "written_bytes", lambda m: m.ByteSize() + 10**6)  # can never fit
    with pytest.raises(ConfigError) as info:
        quantize_file(model, MixedPrecisionConfig(budget_bytes=budget, block_size=32), tmp_path / "no.onnx", data=data, progress=False)
    assert "\n" not in str(info.value) and "the written file would be" in str(info.value) and f"{budget:,} B" in str(info.value)
    assert not (tmp_path / "no.onnx").exists()


def test_file_accounting_matches_serialization(tmp_path: Path) -> None:
    model = sequence_model()
    from edgeq.graph.passes.weight_only import plan_targets

    targets, _ = plan_targets(model, True)
    removable = removable_weights(model, targets)
    assert removable == {"table", "w_up", "w_down", "w_out"}
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    kept = [t for t in stripped.graph.initializer if t.name not in removable]
    del stripped.graph.initializer[:]
    stripped.graph.initializer.extend(kept)
    assert stripped_bytes(model, removable) == len(stripped.SerializeToString())
    assert written_bytes(model) == len(model.SerializeToString())
    # A weight another node reads stays in the file whatever the plan does.
    model.graph.node.append(helper.make_node("Identity", ["w_out"], ["w_copy"]))
    assert removable_weights(model, targets) == {"table", "w_up", "w_down"}
    # save_model's external layout: the model file and its data, counted as an upper bound within a few bytes.
    path = save_model(sequence_model(), tmp_path / "ext.onnx", external_data=True)
    on_disk = os.path.getsize(path) + os.path.getsize(tmp_path / "ext.onnx.data")
    predicted = external_bytes(sequence_model(), location_length=len("ext.onnx.data"))
    assert on_disk <= predicted <= on_disk + 8


def test_a_version_1_document_budget_counted_weights() -> None:
    doc = MixedPrecisionConfig(weight_budget_bytes=5000).to_dict()
    assert doc["_version"] == 2
    old = {"_type": doc["_type"], "_version": 1, "_data": {**doc["_data"], "budget_bytes": 5000, "weight_budget_bytes": None}}
    config = MixedPrecisionConfig.from_dict(old)
    assert config.weight_budget_bytes == 5000 and config.budget_bytes is None and not config.counts_whole_file
    assert MixedPrecisionConfig.from_dict(MixedPrecisionConfig(budget_bytes=7000).to_dict()).budget_bytes == 7000


def test_cli_budget_counts_the_file_and_weight_budget_the_weights(tmp_path: Path, capsys) -> None:
    from edgeq.cli import main

    model_path, data_path = tmp_path / "m.onnx", tmp_path / "calib.npz"
    onnx.save(sequence_model(), str(model_path))
    np.savez(data_path, **token_data())  # type: ignore[arg-type]
    common = ["--block-size", "16", "--data", str(data_path), "--quiet"]
    assert main(["quantize", str(model_path), "--budget", "16kB", "-o", str(tmp_path / "f.onnx"), *common]) == 0
    assert os.path.getsize(tmp_path / "f.onnx") <= 16_000
    assert main(["quantize", str(model_path), "--weight-budget", "12kB", "-o", str(tmp_path / "w.onnx"), *common]) == 0
    assert _plan(tmp_path / "w.onnx")["weight_bytes"] <= 12_000 < os.path.getsize(tmp_path / "w.onnx")
    capsys.readouterr()
    code = main(["quantize", str(model_path), "--budget", "16kB", "--weight-budget", "12kB", "-o", str(tmp_path / "no.onnx"), *common])
    assert code == 2 and "--budget and --weight-budget" in capsys.readouterr().err
