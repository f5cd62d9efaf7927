"""edgeq.evaluate / edgeq compare on small models: metrics, per-layer SQNR worst first, schema, CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgeq import metrics
from edgeq.cli import main
from edgeq.data import load_data
from edgeq.errors import DataError
from edgeq.evaluate import CompareResult, compare_models, detect_task
from edgeq.quantize import Int8Config, QuantizeInputs, quantize
from tests.unit.int8_graphs import images, mobilenet_block, run


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    model = mobilenet_block()
    ref = folder / "fp32.onnx"
    onnx.save(model, str(ref))
    data = load_data({"input": images(32)}, model, batch_size=8)
    good = quantize(model, Int8Config(), QuantizeInputs(data=data, progress=False)).model
    good_path = folder / "int8.onnx"
    onnx.save(good, str(good_path))
    rough = quantize(
        model, Int8Config(equalization=False, bias_correction=False, weight_clipping="max", activation_method="minmax", recenter=False),
        QuantizeInputs(data=data, progress=False),
    ).model
    # Damage one layer on purpose: its weight scales x3 coarser, so it must top the worst-layer list.
    for node in rough.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0].startswith("expand"):
            scale = next(t for t in rough.graph.initializer if t.name == node.input[1])
            value = onnx.numpy_helper.to_array(scale) * 3
            scale.CopyFrom(onnx.numpy_helper.from_array(value.astype(np.float32), scale.name))
    rough_path = folder / "rough.onnx"
    onnx.save(rough, str(rough_path))
    eval_path = folder / "eval.npz"
    np.savez(eval_path, input=images(40, seed=9))
    return model, ref, good_path, rough_path, eval_path


def test_compare_metrics_match_direct_computation(models):
    model, ref, good, rough, eval_path = models
    result = compare_models(ref, [good, rough], eval_path, batch_size=16, latency=False)
    assert result.task == "classification" and result.samples == 40
    x = np.load(eval_path)["input"]
    a = run(model, {"input": x}, exact=True)[0]
    b = run(onnx.load(str(good)), {"input": x}, exact=True)[0]
    m = result.variants[0].metrics
    assert m["sqnr_db"] == pytest.approx(metrics.sqnr_db(a, b), abs=1e-3)  # batch size changes float rounding
    assert m["top1_agreement"] == pytest.approx(metrics.top1_agreement(a, b))
    assert m["kl_divergence"] == pytest.approx(metrics.kl_divergence(a, b), rel=1e-6)
    assert m["cosine"] == pytest.approx(float(np.mean(metrics.cosine_rows(a, b))), abs=1e-9)
    assert {"top5_overlap", "confident_samples"} <= set(m)
    assert ("confident_top1_agreement" in m) == (m["confident_samples"] > 0)
    assert result.variants[0].metrics["sqnr_db"] > result.variants[1].metrics["sqnr_db"]


def test_layers_sorted_worst_first_and_find_the_damaged_layer(models):
    _, ref, good, rough, eval_path = models
    result = compare_models(ref, [good, rough], eval_path, batch_size=16, latency=False)
    layers = result.variants[1].layers
    assert [row["sqnr_db"] for row in layers] == sorted(row["sqnr_db"] for row in layers)
    assert layers[0]["tensor"] == "e" and layers[0]["op_type"] == "Conv"  # the expand conv's output
    assert {row["tensor"] for row in layers} == {"stem_o", "e", "d", "p", "h", "logits"}
    # Re-centered tensors hold shifted values: they are not paired with the float ones by name.
    assert {row["tensor"] for row in result.variants[0].layers} == {"stem_o", "p", "h", "logits"}


def test_result_schema_and_roundtrip(models):
    _, ref, good, _, eval_path = models
    result = compare_models(ref, [good], eval_path, samples=16, latency=True)
    doc = json.loads(result.to_json())
    assert doc["_type"] == "edgeq.CompareResult"
    data = doc["_data"]
    assert set(data) == {"reference", "data", "samples", "task", "reference_latency_ms", "reference_file_bytes", "variants"}
    variant = data["variants"][0]
    assert set(variant) == {"name", "path", "file_bytes", "size_ratio", "metrics", "latency_ms", "energy_mj", "energy_reason", "layers"}
    assert set(variant["latency_ms"]) == {"p50", "mean", "p90", "p99"}
    assert variant["energy_mj"] is None and "power sensor" in variant["energy_reason"]
    assert variant["size_ratio"] == pytest.approx(variant["file_bytes"] / data["reference_file_bytes"])
    again = CompareResult.from_json(result.to_json())
    assert again.variants[0].metrics == result.variants[0].metrics


def test_cli_compare_prints_a_table_and_json(models, capsys):
    _, ref, good, rough, eval_path = models
    assert main(["compare", str(ref), str(good), str(rough), "--data", str(eval_path), "--no-latency"]) == 0
    out = capsys.readouterr().out
    assert "int8:" in out and "rough:" in out and "top-1 agree" in out and "worst layers" in out
    assert main(["compare", str(ref), str(good), "--data", str(eval_path), "--no-latency", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["_type"] == "edgeq.CompareResult"


def test_task_detection():
    assert detect_task(mobilenet_block()) == "classification"
    from tests.unit.int8_graphs import mlp_with_layernorm

    assert detect_task(mlp_with_layernorm()) == "generic"


def test_mismatched_candidate_is_one_line_error(models, tmp_path):
    _, ref, _, _, eval_path = models
    from tests.unit.int8_graphs import mlp_with_layernorm

    other = tmp_path / "other.onnx"
    onnx.save(mlp_with_layernorm(), str(other))
    with pytest.raises(DataError, match="logits"):
        compare_models(ref, [other], eval_path, latency=False)


def test_cli_compare_saves_json_for_reports(models, tmp_path, capsys):
    from edgeq.evaluate import CompareResult

    _, ref, good, _, eval_path = models
    saved = tmp_path / "compare.json"
    assert main(["compare", str(ref), str(good), "--data", str(eval_path), "--no-latency", "--json-out", str(saved)]) == 0
    loaded = CompareResult.load(saved)
    assert [v.name for v in loaded.variants] == ["int8"] and loaded.task == "classification"
    assert 0.0 < loaded.variants[0].metrics["cosine"] <= 1.0


def test_cli_compare_writes_html_report(models, tmp_path, capsys):
    _, ref, good, _, eval_path = models
    html = tmp_path / "report.html"
    assert main(["compare", str(ref), str(good), "--data", str(eval_path), "--no-latency", "-o", str(html)]) == 0
    assert html.is_file() and html.stat().st_size > 1000
    assert f"wrote {html}" in capsys.readouterr().out
