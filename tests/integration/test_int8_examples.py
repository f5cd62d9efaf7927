"""int8 W8A8 on the real example models (slow): EfficientNet-Lite0 and MiniLM.

The full accuracy comparison with onnxruntime lives in benchmarks/int8.py; here a small
calibration run checks the pipeline on real graphs: BN folded, the TensorRT lint clean, the
graph valid and run by onnxruntime, every node accounted for, and accuracy well above broken.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgeq.cli import main
from edgeq.evaluate import compare_models
from edgeq.graph.trt_lint import lint_tensorrt

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def efficientnet_int8(efficientnet_model: Path, image_sets: tuple[Path, Path], tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("int8") / "efficientnet_int8.onnx"
    summary = out.with_suffix(".json")
    code = main([
        "quantize", str(efficientnet_model), "--activations", "int8", "--weights", "int8",
        "--data", str(image_sets[0]), "--samples", "32", "--batch-size", "16",
        "-o", str(out), "--summary", str(summary), "--quiet",
    ])
    assert code == 0
    return out, summary


def test_efficientnet_int8_is_tensorrt_clean_and_accurate(efficientnet_model, efficientnet_int8, image_sets):
    out, summary_path = efficientnet_int8
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert lint_tensorrt(model) == []
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)
    summary = json.loads(summary_path.read_text())["_data"]
    assert len(summary["nodes"]) == 50  # 49 Conv + 1 Gemm, each quantized or explained
    assert all(n["quantized"] or n["reason"] for n in summary["nodes"])
    result = compare_models(efficientnet_model, [out], image_sets[1], samples=100, batch_size=25, latency=False)
    metrics = result.variants[0].metrics
    assert metrics["sqnr_db"] > 15.0, metrics
    assert metrics["top1_agreement"] > 0.85, metrics
    assert result.variants[0].size_ratio < 0.35
    layers = result.variants[0].layers
    # Equalized / re-centered tensors hold rescaled values and are renamed, so only the others
    # (block outputs, logits) are paired with the float model's.
    assert len(layers) >= 10 and "logits" in {row["tensor"] for row in layers}
    assert [row["sqnr_db"] for row in layers] == sorted(row["sqnr_db"] for row in layers)


def test_compare_cli_on_real_models(efficientnet_model, efficientnet_int8, image_sets, capsys):
    out, _ = efficientnet_int8
    code = main(["compare", str(efficientnet_model), str(out), "--data", str(image_sets[1]), "--samples", "24", "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)["_data"]
    variant = doc["variants"][0]
    assert doc["task"] == "classification" and doc["samples"] == 24
    assert variant["latency_ms"]["p50"] > 0 and doc["reference_latency_ms"]["p50"] > 0
    assert variant["layers"][0]["sqnr_db"] == min(row["sqnr_db"] for row in variant["layers"])


def test_minilm_int8_matmuls(minilm_model, text_sets, tmp_path):
    out = tmp_path / "minilm_int8.onnx"
    code = main([
        "quantize", str(minilm_model), "--activations", "int8", "--weights", "int8", "--op-types", "MatMul,Gemm",
        "--data", str(text_sets[0]), "--samples", "32", "--batch-size", "16", "-o", str(out), "--quiet",
    ])
    assert code == 0
    model = onnx.load(str(out))
    assert lint_tensorrt(model) == []
    result = compare_models(minilm_model, [out], text_sets[1], samples=64, batch_size=16, latency=False)
    assert result.task == "embedding"
    # Per-tensor int8 activations on a transformer lose more than on a CNN (0.955 with 128
    # calibration sentences in benchmarks/int8.py); this guards against a broken graph.
    assert result.variants[0].metrics["embedding_cosine_mean"] > 0.9
    assert np.isfinite(result.variants[0].metrics["sqnr_db"])
