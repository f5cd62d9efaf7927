"""Weight-only quantization of the real MiniLM through the CLI: every format runs, the file shrinks, quality holds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgeq.cli import main
from edgeq.metrics import cosine_rows, masked_mean_pool

pytestmark = pytest.mark.slow
EVAL_SAMPLES = 64


@pytest.fixture(scope="module")
def minilm(example_cache: Path) -> tuple[Path, Path, Path]:
    from examples.datasets import build_text_sets
    from examples.models import build_minilm

    model = build_minilm(example_cache)
    calib, evaluation = build_text_sets(example_cache)
    return model, calib, evaluation


def _embeddings(model: Path, evaluation: Path) -> np.ndarray:
    data = np.load(evaluation)
    feeds = {k: data[k][:EVAL_SAMPLES] for k in ("input_ids", "attention_mask", "token_type_ids")}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return masked_mean_pool(session.run(None, feeds)[0], feeds["attention_mask"])


@pytest.fixture(scope="module")
def reference(minilm: tuple[Path, Path, Path]) -> np.ndarray:
    return _embeddings(minilm[0], minilm[2])


def _quantize(tmp_path: Path, model: Path, *options: str) -> tuple[Path, dict]:
    out = tmp_path / "q.onnx"
    summary = tmp_path / "summary.json"
    code = main(["quantize", str(model), "-o", str(out), "--summary", str(summary), "--quiet", *options])
    assert code == 0
    onnx.checker.check_model(str(out), full_check=True)
    return out, json.loads(summary.read_text())["_data"]


@pytest.mark.parametrize(
    ("options", "min_cos", "max_size"),
    [
        (("--weights", "int4"), 0.96, 0.2),
        (("--weights", "nf4", "--format", "bnb4", "--block-size", "64"), 0.96, 0.2),
        (("--weights", "int4", "--format", "qdq", "--asymmetric"), 0.96, 0.2),
        (("--weights", "int2", "--asymmetric", "--no-embeddings", "--accuracy-level", "4"), 0.5, 0.6),
    ],
)
def test_formats_on_minilm(tmp_path: Path, minilm: tuple[Path, Path, Path], reference: np.ndarray, options: tuple[str, ...], min_cos: float, max_size: float) -> None:
    model, _, evaluation = minilm
    out, summary = _quantize(tmp_path, model, *options)
    ratio = out.stat().st_size / model.stat().st_size
    assert ratio < max_size
    cos = cosine_rows(reference, _embeddings(out, evaluation))
    assert cos.mean() > min_cos
    quantized = [n for n in summary["nodes"] if n["quantized"]]
    assert sum(n["op_type"] == "MatMul" for n in quantized) == 36
    left = [n for n in summary["nodes"] if not n["quantized"]]
    assert all(n["reason"] for n in left)
    assert summary["weight_bytes_after"] < summary["weight_bytes_before"]


def test_gptq_beats_rtn_on_minilm(tmp_path: Path, minilm: tuple[Path, Path, Path], reference: np.ndarray) -> None:
    model, calib, evaluation = minilm
    rtn_dir, gptq_dir = tmp_path / "rtn", tmp_path / "gptq"
    rtn_dir.mkdir()
    gptq_dir.mkdir()
    rtn_out, _ = _quantize(rtn_dir, model, "--weights", "int4", "--asymmetric", "--no-embeddings")
    gptq_out, summary = _quantize(
        gptq_dir, model, "--weights", "int4", "--asymmetric", "--no-embeddings", "--method", "gptq", "--data", str(calib), "--samples", "64"
    )
    rtn_cos = cosine_rows(reference, _embeddings(rtn_out, evaluation)).mean()
    gptq_cos = cosine_rows(reference, _embeddings(gptq_out, evaluation)).mean()
    assert 1 - gptq_cos < 0.6 * (1 - rtn_cos)
    for node in summary["nodes"]:
        if node["quantized"] and node["op_type"] == "MatMul":
            assert node["error"]["output_rel_mse"] <= node["error"]["rtn_output_rel_mse"] * (1 + 1e-9)


def test_cli_refusal_is_one_line(tmp_path: Path, minilm: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["quantize", str(minilm[0]), "-o", str(tmp_path / "x.onnx"), "--weights", "nf4", "--format", "qdq"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "bnb4" in err and "\n" not in err
    assert not (tmp_path / "x.onnx").exists()
