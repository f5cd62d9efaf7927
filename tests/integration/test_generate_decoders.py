"""Generation on real decoder graphs: onnxruntime-genai's builder decoder (fp32 and
``edgeq quantize --weights int4``) exported to bundles, and SmolLM2-135M when the example cache
holds it: ``edgeq_runtime`` greedy equals the toolkit's reference decode token for token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from edgeq_runtime import Session

from edgeq.cli import main
from tests.unit.decoder_bundles import bundle, reference_greedy

pytestmark = pytest.mark.slow
PROMPT = [5, 17, 42, 99, 3, 250, 7, 64]


@pytest.mark.parametrize("precision", ["fp32", "int4"])
def test_builder_decoder_bundle_generates_like_the_reference(builder_decoder: Path, tmp_path: Path, precision: str):
    model = builder_decoder
    if precision == "int4":
        model = tmp_path / "int4" / "model.onnx"
        model.parent.mkdir()
        assert main(["quantize", str(builder_decoder), "--weights", "int4", "-o", str(model), "--quiet"]) == 0
        for name in ("genai_config.json", "tokenizer.json", "tokenizer_config.json"):
            (model.parent / name).write_bytes((builder_decoder.parent / name).read_bytes())
    out = bundle(model, tmp_path / "bundle")
    with Session(out) as session:
        decoder = session.manifest.decoder if session.manifest else None
        assert decoder is not None and decoder.kv.shared_buffer and decoder.tokenizer == "tokenizer.json"
        assert (decoder.generation.bos_token_id, decoder.generation.eos_token_ids) == (1, [2])
        result = session.generate(ids=PROMPT, max_new_tokens=24, stop_ids=[])
    assert result.ids == reference_greedy(model, PROMPT, 24)


def test_smollm2_bundle_generates_like_the_reference(tmp_path: Path, smollm2_model: Path):
    pytest.importorskip("torch")  # the example is built from its GGUF with torch
    pytest.importorskip("tokenizers")
    model, cache = smollm2_model, smollm2_model.parent
    out = bundle(model, tmp_path / "bundle", context_length=2048)
    record = json.loads((cache / "smollm2.json").read_text())
    with Session(out) as session:
        assert session.manifest is not None and session.manifest.decoder is not None
        assert session.manifest.decoder.tokenizer == "tokenizer.json"
        generation = session.manifest.decoder.generation  # the GGUF's ids, through the example's record
        assert (generation.bos_token_id, generation.eos_token_ids) == (record["bos_token_id"], [record["eos_token_id"]])
        result = session.generate(record["prompt"], max_new_tokens=12, stop_ids=[])
    assert result.ids == reference_greedy(model, result.prompt_ids, 12)
    assert record["greedy_onnx"].startswith(result.text)  # the example's own greedy continuation (24 tokens)
