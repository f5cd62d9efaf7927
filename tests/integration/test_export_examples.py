"""`edgeq export` on the real example models, as `make demo` runs it: EfficientNet-Lite0 int8 and
MiniLM int4 for jetson-orin-nano (and MiniLM for a CPU board)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from edgeq_runtime.manifest import Manifest, verify_bundle

from edgeq.cli import main
from edgeq.export import export_bundle
from edgeq.graph.trt_lint import tensorrt_violations
from edgeq.metrics import cosine

pytestmark = pytest.mark.slow


def _run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feeds)


def test_efficientnet_int8_for_orin_nano(efficientnet_model: Path, image_sets, tmp_path: Path, capsys):
    calib, evaluation = image_sets
    bundle = tmp_path / "effnet-orin-nano"
    code = main(["export", str(efficientnet_model), "--target", "jetson-orin-nano", "--weights", "int8",
                 "--activations", "int8", "--data", str(calib), "--samples", "16", "-o", str(bundle)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "TensorRT lint: passed" in out and "--stronglyTyped" in out
    assert verify_bundle(bundle) == []
    manifest = Manifest.read(bundle)
    assert manifest.target["tensorrt_version"] == "10.3.0" and manifest.target["strongly_typed"]
    assert manifest.precision["activations"] == "int8"
    model = onnx.load(str(bundle / "model.onnx"))
    assert tensorrt_violations(model) == []
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) > 40
    # The bundle against the float model on real images: an int8 model, not a broken one.
    images = np.load(evaluation, mmap_mode="r")["input"][:8].astype(np.float32)
    quantized = _run(bundle / "model.onnx", {"input": images})[0]
    reference = _run(efficientnet_model, {"input": images})[0]
    agree = float(np.mean(quantized.argmax(1) == reference.argmax(1)))
    assert agree >= 0.75 and cosine(reference.astype(np.float64), quantized.astype(np.float64)) > 0.9
    assert main(["inspect", str(bundle)]) == 0


def test_minilm_int4_for_x86_cpu(minilm_model: Path, text_sets, tmp_path: Path):
    _, evaluation = text_sets
    bundle = tmp_path / "minilm-cpu"
    result = export_bundle(minilm_model, "x86-cpu", weights="int4", output=bundle, progress=False)
    assert result.plan.onnx_format == "matmulnbits"
    assert min(v["cosine"] for v in result.verification["outputs"].values()) > 0.9999
    data = np.load(evaluation)
    feeds = {k: data[k][:4] for k in ("input_ids", "attention_mask", "token_type_ids")}
    quantized = _run(bundle / "model.onnx", feeds)[0]
    reference = _run(minilm_model, feeds)[0]
    assert cosine(reference.astype(np.float64), quantized.astype(np.float64)) > 0.95
    assert verify_bundle(bundle) == []


def test_minilm_int4_for_orin_nano(minilm_model: Path, tmp_path: Path):
    bundle = tmp_path / "minilm-orin-nano"
    result = export_bundle(minilm_model, "jetson-orin-nano", weights="int4", block_size=128, output=bundle,
                           progress=False)
    assert result.lint == "passed" and result.plan.block_size == 128
    assert result.fp16 is not None
    assert "--stronglyTyped" in (bundle / "build.sh").read_text()
    assert verify_bundle(bundle) == []


def test_jetpack_46_gets_the_opset_tensorrt_82_parses(efficientnet_model: Path, minilm_model: Path, image_sets,
                                                      tmp_path: Path, capsys):
    bundle = tmp_path / "effnet-xavier-nx-jp46"
    code = main(["export", str(efficientnet_model), "--target", "jetson-xavier-nx", "--jetpack", "4.6", "-o", str(bundle)])
    assert code == 0 and "lowered to 13 (TensorRT 8.2.1 parses up to opset 13)" in capsys.readouterr().out
    assert onnx.load(str(bundle / "model.onnx")).opset_import[0].version == 13
    images = np.load(image_sets[1])["input"][:8]
    np.testing.assert_allclose(_run(bundle / "model.onnx", {"input": images})[0],
                               _run(efficientnet_model, {"input": images})[0], rtol=1e-4, atol=1e-4)
    # MiniLM's LayerNormalization has no opset-13 form: refused in one line, nothing written.
    code = main(["export", str(minilm_model), "--target", "jetson-xavier-nx", "--jetpack", "4.6", "-o", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2 and "(LayerNormalization) needs opset 17" in err and "--jetpack 5.1" in err and err.count("\n") == 1
    assert not (tmp_path / "m").exists()
