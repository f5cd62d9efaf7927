"""A decoder onnxruntime-genai's builder wrote (tiny random Llama, offline): fp32 matches torch,
``edgeq quantize --weights int4`` goes through with what the checker could not check said once,
the int4 graph runs a prefill and a cached decode step close to fp32, and ``edgeq inspect`` says
what the decoder is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgeq.cli import main

pytestmark = pytest.mark.slow
IDS = np.array([[5, 17, 42, 99, 3, 250, 7, 64]], np.int64)


def _generate(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Prefill IDS[:, :-1], then one decode step fed the present tensors: (prefill logits, step logits)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    prompt = IDS[:, :-1]
    feeds = {"input_ids": prompt, "attention_mask": np.ones_like(prompt)}
    feeds |= {f"past_key_values.{i}.{p}": np.zeros((1, 2, 0, 16), np.float32) for i in range(2) for p in ("key", "value")}
    out = dict(zip(names, session.run(None, feeds), strict=True))
    step = {"input_ids": IDS[:, -1:], "attention_mask": np.ones_like(IDS)}
    step |= {f"past_key_values.{i}.{p}": out[f"present.{i}.{p}"] for i in range(2) for p in ("key", "value")}
    return out["logits"][0], session.run(["logits"], step)[0][0, -1]


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_builder_fp32_matches_torch(builder_decoder: Path):
    import torch
    from transformers import LlamaForCausalLM

    prefill, step = _generate(builder_decoder)
    hf = LlamaForCausalLM.from_pretrained(builder_decoder.parent / "hf").eval()
    with torch.no_grad():
        reference = hf(torch.from_numpy(IDS)).logits[0].double().numpy()
    np.testing.assert_allclose(prefill, reference[:-1], atol=1e-4)
    np.testing.assert_allclose(step, reference[-1], atol=1e-4)  # the KV cache path, against no cache


def test_quantize_int4_end_to_end(builder_decoder: Path, tmp_path: Path, capsys):
    out, summary = tmp_path / "int4.onnx", tmp_path / "summary.json"
    assert main(["quantize", str(builder_decoder), "--weights", "int4", "-o", str(out), "--summary", str(summary)]) == 0
    printed = capsys.readouterr()
    notes = [n for n in json.loads(summary.read_text())["_data"]["notes"] if "onnx.checker has no schema" in n]
    assert len(notes) == 1 and "SimplifiedLayerNormalization (1 node, default domain opset 22)" in notes[0]
    assert "value_info" in notes[0]  # the builder annotates a [1] constant as a scalar
    assert (printed.out + printed.err).count("onnx.checker has no schema") == 1  # said once
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMulNBits") == 11 and "GroupQueryAttention" in ops
    float_prefill, float_step = _generate(builder_decoder)
    int4_prefill, int4_step = _generate(out)
    assert _cosine(int4_prefill, float_prefill).min() > 0.95  # measured 0.98 on 7 positions
    assert _cosine(int4_step, float_step) > 0.95
    float_bytes = builder_decoder.stat().st_size + (builder_decoder.parent / "model.onnx.data").stat().st_size
    assert out.stat().st_size < 0.3 * float_bytes  # int4 weights inline: well under a third of fp32


def test_inspect_describes_the_builder_decoder(builder_decoder: Path, capsys):
    assert main(["inspect", str(builder_decoder), "--json"]) == 0
    decoder = json.loads(capsys.readouterr().out)["_data"]["decoder"]["_data"]
    assert {k: decoder[k] for k in ("layers", "attention_heads", "kv_heads", "head_size", "vocab_size",
                                    "tied_embeddings", "context_length", "kv_bytes_per_token")} == {
        "layers": 2, "attention_heads": 4, "kv_heads": 2, "head_size": 16, "vocab_size": 256,
        "tied_embeddings": False, "context_length": 128, "kv_bytes_per_token": 2 * 2 * 2 * 16 * 4}
    assert decoder["sources"]["context_length"] == "genai_config.json"
