"""``edgeq quantize --budget`` on the real MiniLM: the whole file within budget, exact weight bytes, a valid model, a useful mix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgeq.metrics import cosine_rows, masked_mean_pool
from edgeq.quantize.schemes.mixed import sensitivity
from edgeq.quantize.schemes.mixed.writer import METADATA_KEY

pytestmark = pytest.mark.slow


def _embeddings(model: str | bytes, feeds: dict[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return masked_mean_pool(session.run(None, feeds)[0], feeds["attention_mask"])


def test_cli_budget_on_minilm(tmp_path: Path, minilm_model: Path, text_sets: tuple[Path, Path], capsys, monkeypatch) -> None:
    from edgeq.cli import main

    monkeypatch.setattr(sensitivity, "SENSITIVITY_SAMPLES", 8)  # the ranking barely moves (rho >= 0.988 vs 64)
    calib, evals = text_sets
    out, summary, uniform = tmp_path / "mixed.onnx", tmp_path / "summary.json", tmp_path / "int4.onnx"
    # The budget a user with the uniform int4 file's flash has: that file's size on disk.
    assert main(["quantize", str(minilm_model), "--weights", "int4", "--block-size", "128", "-o", str(uniform), "--quiet"]) == 0
    budget = uniform.stat().st_size
    code = main(["quantize", str(minilm_model), "--budget", str(budget), "--block-size", "128", "--data", str(calib),
                 "-o", str(out), "--summary", str(summary), "--quiet"])
    assert code == 0, capsys.readouterr().err
    size = out.stat().st_size
    assert size <= budget  # the whole file: weights, scales, float tensors, graph and the plan
    assert size > 0.99 * budget  # the budget is used, not wasted
    written = onnx.load(str(out))
    onnx.checker.check_model(written, full_check=True)
    plan = json.loads(next(p.value for p in written.metadata_props if p.key == METADATA_KEY))
    assert plan["budget_bytes"] == budget and len(plan["nodes"]) == 39
    original = onnx.load(str(minilm_model), load_external_data=False)
    before = {t.name for t in original.graph.initializer}
    new_bytes = sum(len(t.raw_data) for t in written.graph.initializer if t.name not in before)
    assert new_bytes == plan["weight_bytes"] <= plan["weights_allowance"] < budget - plan["fixed_bytes"]
    assert plan["optimal"] and plan["solver"] == "exact DP"
    formats = {n["format"] for n in plan["nodes"]}
    assert {"int2", "int4"} <= formats
    # The sum of per-matrix errors predicts the whole mix's error (to within 30% here).
    assert 0.7 * plan["predicted_error"] < plan["measured_error"] < 1.3 * plan["predicted_error"]
    doc = json.loads(summary.read_text())["_data"]
    assert any(f"budget counts the whole file: budget {budget / 1e6:.2f} MB ({budget:,} B), file written {size / 1e6:.2f} MB ({size:,} B), "
               f"margin" in n for n in doc["notes"])

    data = np.load(evals)
    feeds = {k: data[k][:48, :64] for k in ("input_ids", "attention_mask", "token_type_ids")}
    reference = _embeddings(str(minilm_model), feeds)
    cos = cosine_rows(reference, _embeddings(str(out), feeds))
    assert cos.mean() > 0.9
