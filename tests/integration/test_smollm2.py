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
