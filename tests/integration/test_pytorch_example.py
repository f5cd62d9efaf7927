"""examples/pytorch_end_to_end.py runs as a user would run it, and what it writes is right."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from edgeq.evaluate import compare_models

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "pytorch_end_to_end.py"


@pytest.mark.slow
def test_pytorch_end_to_end_example(tmp_path, example_cache, image_sets):
    out = tmp_path / "out"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}  # a fresh export cache
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--cache", str(example_cache), "--samples", "32"],
        capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for step in ("calibrate", "quantize", "export", "profile"):
        assert f"$ edgeq {step} " in proc.stdout

    # Step 1: the module was exported once into the cache and checked against torch.
    exported = sorted((tmp_path / "xdg" / "edgeq" / "torch").glob("*/model.onnx"))
    assert len(exported) == 1, exported
    record = json.loads((exported[0].parent / "export.json").read_text())["_data"]
    assert record["input_names"] == ["input"] and record["output_names"] == ["logits"]
    assert 0 <= record["max_abs_diff"] < 1e-3

    # Steps 2-3: calibration from 32 images, an int8 Q/DQ model that still classifies like the float one.
    table = json.loads((out / "calib.json").read_text())["_data"]
    assert table["samples"] == 32
    assert (out / "calib.cache").read_text().startswith("TRT-")
    quantized = onnx.load(str(out / "efficientnet.int8.onnx"))
    onnx.checker.check_model(quantized, full_check=True)
    assert sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node) > 40
    _, eval_npz = image_sets
    # Accuracy by the graph's ONNX meaning (what TensorRT on the board computes), not by this
    # host's fused int8 kernels, which saturate on x86 CPUs without VNNI (edgeq.evaluate).
    compared = compare_models(exported[0], [out / "efficientnet.int8.onnx"], eval_npz, samples=32, latency=False, layers=False)
    agreement = compared.variants[0].metrics["top1_agreement"]
    assert agreement >= 0.75, f"int8 top-1 agrees with float on only {agreement:.0%} of 32 held-out images"

    # Steps 4-5: a bundle for the board and a latency report of it.
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["target"]["name"] == "jetson-orin-nano"
    assert [i["name"] for i in manifest["inputs"]] == ["input"]
    report = json.loads((out / "profile.json").read_text())["_data"]
    benchmark = report["sections"][0]["benchmark"]
    assert benchmark["iterations"] == 10 and benchmark["latency_ms"]["p50"] > 0
    assert (out / "profile.html").stat().st_size > 1000
