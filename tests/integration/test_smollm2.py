"""SmolLM2-135M from its GGUF: the KV-cache graph computes what the torch module computes, and speaks English."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")
pytest.importorskip("gguf")

# Measured at the first build: 18.2 on the 512 held-out execmodel tokens (see examples/smollm2.py).
# Twice that still rules out a broken model (a random one sits near the vocabulary, 49152).
PERPLEXITY_BOUND = 40.0


@pytest.fixture(scope="module")
def smollm2(smollm2_model):
    from edgeq.graph.session import cpu_session
    from examples.smollm2 import TOKENIZER_FILE, smollm2_module, smollm2_tokenizer

    assert (smollm2_model.parent / TOKENIZER_FILE).is_file()
    return cpu_session(smollm2_model), smollm2_module(), smollm2_tokenizer(smollm2_model.parent)


def test_logits_match_torch_and_greedy_decoding_is_token_for_token_equal(smollm2):
    from edgeq.frontends.decoder_export import decoder_feeds
    from examples.smollm2 import greedy_onnx, greedy_torch

    session, module, tokenizer = smollm2
    prompt = tokenizer.encode("The Python interpreter reads a program and").ids
    feeds = decoder_feeds(module.kv_cache_layout, np.asarray([prompt]))
    with torch.no_grad():
        reference = module(*(torch.from_numpy(v) for v in feeds.values()))[0].numpy()
    np.testing.assert_allclose(session.run(["logits"], feeds)[0], reference, atol=2e-3, rtol=1e-3)
    ours = greedy_onnx(session, module.kv_cache_layout, prompt, 16)
    assert ours == greedy_torch(module, prompt, 16)
    text = tokenizer.decode(ours)
    assert sum(c.isalpha() for c in text) > 0.6 * len(text), text  # words, not a repeated newline


def test_heldout_perplexity_and_the_build_record(smollm2, smollm2_model):
    from examples.smollm2 import PERPLEXITY_TOKENS, RECORD_FILE, heldout_text, perplexity_onnx

    session, module, tokenizer = smollm2
    ids = tokenizer.encode(heldout_text()).ids[:PERPLEXITY_TOKENS]
    assert len(ids) == PERPLEXITY_TOKENS
    perplexity = perplexity_onnx(session, module.kv_cache_layout, ids)
    assert math.isfinite(perplexity) and 1.0 < perplexity < PERPLEXITY_BOUND
    record = json.loads((smollm2_model.parent / RECORD_FILE).read_text())
    assert record["greedy_matches_torch"] is True
    assert record["perplexity"] == pytest.approx(perplexity, rel=1e-3)


def test_gptq_calibrates_on_text_through_the_prefill(smollm2_model, tmp_path):
    """``--data`` prose (the tokenizer found beside the model) calibrates GPTQ on the activations the
    layers really get: on each fitted matrix of layer 0 GPTQ's output error on those activations is
    below RTN's, and onnxruntime runs the file. (Lean: every other node is excluded.)"""
    from edgeq.cli import main
    from examples.smollm2 import calibration_text, heldout_text

    text = tmp_path / "calibration.txt"
    text.write_text(calibration_text()[:20000], encoding="utf-8")
    assert heldout_text()[:200] not in text.read_text()
    out, summary = tmp_path / "q.onnx", tmp_path / "s.json"
    code = main([
        "quantize", str(smollm2_model), "-o", str(out), "--weights", "int4", "--block-size", "128", "--asymmetric",
        "--method", "gptq", "--data", str(text), "--samples", "4", "--exclude", r"^(?!model\.layers\.0\.)",
        "--summary", str(summary), "--quiet",
    ])
    assert code == 0
    nodes = json.loads(summary.read_text())["_data"]["nodes"]
    fitted = [n for n in nodes if n["quantized"] and n["method"] == "gptq"]
    assert len(fitted) == 7  # q, k, v, o, gate, up, down
    for node in fitted:
        assert node["error"]["output_rel_mse"] < node["error"]["rtn_output_rel_mse"], node["name"]
    import onnx

    from edgeq.data import load_data
    from edgeq.graph.session import cpu_session

    quantized = onnx.load(str(out))
    feeds = next(load_data({"input_ids": np.arange(1, 9, dtype=np.int64)[None]}, quantized).batches())
    assert np.isfinite(cpu_session(quantized).run(["logits"], feeds)[0]).all()
