"""``edgeq_runtime`` generation: token for token the toolkit's reference greedy decode
(``edgeq.evaluate.kv_cache``, plain onnxruntime) on fp32 and int4 bundles of a concat-cache
decoder and of a GroupQueryAttention (shared-buffer) decoder; seeded sampling reproducible and
drawn from the right distribution; every bad request one line, exit 2 from ``edgeq-run``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from edgeq_runtime import BundleError, Session
from edgeq_runtime.cli import main as run_main
from edgeq_runtime.sampling import SamplingConfig, filtered_probabilities

from tests.unit import decoder_graphs, kv_graphs
from tests.unit.decoder_bundles import bundle, quantize_int4, reference_greedy, save, word_tokenizer

PROMPT = [5, 17, 3, 30, 11, 2, 9]
NEW = 20


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """name -> (model the reference runs, its bundle): fp32 and int4, concat and shared-buffer caches."""
    root = tmp_path_factory.mktemp("gen")
    tiny = save(decoder_graphs.tiny_decoder(decoder_graphs.random_weights()), root / "tiny")
    word_tokenizer(root / "tiny" / "tokenizer.json", decoder_graphs.VOCAB)
    gqa = save(kv_graphs.gqa_decoder(layers=2, heads=4, kv_heads=2, head_size=16, vocab=32, context=64), root / "gqa")
    models = {"tiny-fp32": tiny, "tiny-int4": quantize_int4(tiny, root / "tiny" / "int4.onnx"),
              "gqa-fp32": gqa, "gqa-int4": quantize_int4(gqa, root / "gqa" / "int4.onnx", block=32)}
    return {name: (path, bundle(path, root / f"{name}-bundle", context_length=64, tokenizer=(
        root / "tiny" / "tokenizer.json" if name.startswith("tiny") else None))) for name, path in models.items()}


@pytest.mark.parametrize("name", ["tiny-fp32", "tiny-int4", "gqa-fp32", "gqa-int4"])
def test_greedy_matches_the_reference_token_for_token(bundles, name):
    model, out = bundles[name]
    with Session(out) as session:
        assert session.manifest is not None and session.manifest.decoder is not None
        assert session.manifest.decoder.kv.shared_buffer is name.startswith("gqa")
        streamed = [t.id for t in session.stream(ids=PROMPT, max_new_tokens=NEW, stop_ids=[])]
        result = session.generate(ids=PROMPT, max_new_tokens=NEW, stop_ids=[])
    expected = reference_greedy(model, PROMPT, NEW)
    assert streamed == result.ids == expected
    assert result.finish_reason == "length" and len(result.step_ms) == NEW - 1


def test_int4_bundles_run_quantized_weights(bundles):
    """The int4 bundles hold MatMulNBits and their logits differ from fp32's (else the int4
    faithfulness test would only repeat the fp32 one)."""
    import onnx

    for name in ("tiny", "gqa"):
        model = onnx.load(str(bundles[f"{name}-int4"][1] / "model.onnx"))
        assert sum(n.op_type == "MatMulNBits" for n in model.graph.node) >= 3
        feeds = kv_graphs.kv_feeds(onnx.load(str(bundles[f"{name}-fp32"][0])), np.asarray([PROMPT]), 0, 16)
        with Session(bundles[f"{name}-fp32"][1]) as a, Session(bundles[f"{name}-int4"][1]) as b:
            delta = np.abs(a.run(feeds)["logits"] - b.run(feeds)["logits"]).max()
        assert delta > 1e-3


def test_text_prompt_stream_and_stop_ids(bundles):
    with Session(bundles["tiny-fp32"][1]) as session:
        full = session.generate("t5 t17 t3", max_new_tokens=12, stop_ids=[])
        assert full.prompt_ids == [5, 17, 3]
        assert full.text == "".join(t.text for t in session.stream("t5 t17 t3", max_new_tokens=12, stop_ids=[]))
        assert full.text.split() == [f"t{i}" for i in full.ids]
        stop = full.ids[3]
        cut = session.generate("t5 t17 t3", max_new_tokens=12, stop_ids=[stop])
    assert cut.ids == full.ids[: full.ids.index(stop)] and cut.finish_reason == "stop"


def test_context_end_stops_generation(bundles):
    with Session(bundles["tiny-fp32"][1]) as session:
        result = session.generate(ids=[i % 32 for i in range(60)], max_new_tokens=50, stop_ids=[])
    assert result.finish_reason == "context" and len(result.ids) == 64 - 60 + 1


def test_seeded_sampling_is_reproducible(bundles):
    with Session(bundles["gqa-int4"][1]) as session:
        runs = [session.generate(ids=PROMPT, max_new_tokens=NEW, stop_ids=[], temperature=0.9, top_k=10, top_p=0.9,
                                 seed=seed).ids for seed in (7, 7, 8)]
    assert runs[0] == runs[1] != runs[2]


def test_filtered_probabilities_against_a_float64_reference():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(50).astype(np.float32)
    got = filtered_probabilities(logits, SamplingConfig(temperature=0.7, top_k=12, top_p=0.8))
    z = logits.astype(np.float64) / 0.7
    top = np.argsort(-z)[:12]
    p = np.exp(z[top] - z[top].max())
    p /= p.sum()
    keep = top[: int(np.searchsorted(np.cumsum(p), 0.8)) + 1]
    expected = np.zeros(50)
    expected[keep] = np.exp(z[keep] - z[keep].max()) / np.exp(z[keep] - z[keep].max()).sum()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kwargs,message", [
    ({"ids": [5, 99]}, "token id 99 is outside the model's vocabulary (0..31)"),
    ({"ids": [i % 32 for i in range(64)]}, "the prompt is 64 tokens, the context holds 64"),
    ({"ids": [1], "max_new_tokens": 0}, "--max-new-tokens must be at least 1, got 0"),
    ({"ids": [1], "max_new_tokens": -3}, "--max-new-tokens must be at least 1, got -3"),
    ({"ids": [1], "temperature": -1.0}, "--temperature must be 0"),
    ({"ids": [1], "top_p": 0.0}, "--top-p must be in (0, 1]"),
    ({}, "give a prompt (text) or token ids"),
])
def test_bad_requests_are_one_line_errors(bundles, kwargs, message):
    with Session(bundles["tiny-fp32"][1]) as session, pytest.raises(BundleError) as info:
        session.generate(**{"max_new_tokens": 4, **kwargs})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_text_prompt_without_tokenizer_is_refused(bundles):
    with Session(bundles["gqa-fp32"][1]) as session, pytest.raises(BundleError, match="has no tokenizer; pass --ids"):
        session.generate("hello", max_new_tokens=2)


def test_cli_generate_prints_text_and_refuses_bad_input(bundles, tmp_path, capsys):
    out = bundles["tiny-fp32"][1]
    assert run_main(["generate", str(out), "--prompt", "t5 t17 t3", "--max-new-tokens", "6", "--ignore-eos"]) == 0
    printed = capsys.readouterr().out
    with Session(out) as session:
        expected = session.generate("t5 t17 t3", max_new_tokens=6, stop_ids=[]).text
    assert printed.startswith(expected)
    assert run_main(["generate", str(out), "--ids", "5,17,3", "--max-new-tokens", "3", "--ignore-eos"]) == 0
    assert capsys.readouterr().out.split()[:3] == [str(i) for i in reference_greedy(bundles["tiny-fp32"][0], [5, 17, 3], 3)]
    for argv, message in [
        (["--prompt", "t1", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
        (["--ids", "1,400"], "token id 400 is outside"),
        (["--ids", "1,x"], "--ids: expected comma-separated integers"),
    ]:
        assert run_main(["generate", str(out), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    record = tmp_path / "generation.json"
    assert run_main(["generate", str(out), "--ids", "5,17,3", "--max-new-tokens", "3", "--ignore-eos",
                     "--json", str(record)]) == 0
    capsys.readouterr()
    assert json.loads(record.read_text())["ids"] == reference_greedy(bundles["tiny-fp32"][0], [5, 17, 3], 3)
    assert run_main(["generate", str(out), "--ids", "1", "--json", str(out / "model.onnx")]) == 2
    assert "would replace the input" in capsys.readouterr().err
    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    (tampered / "tokenizer.json").write_text((tampered / "tokenizer.json").read_text().replace('"t9"', '"x9"'))
    assert run_main(["generate", str(tampered), "--prompt", "t1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tokenizer.json: sha256" in err[0] and "does not match" in err[0]


def test_int8_kv_cache_bundle_generates_like_the_reference(tmp_path):
    """``--kv-cache int8`` (past/present int8 with per-head scales in the graph): the runtime carries the
    int8 cache as it is and still matches the reference decode token for token."""
    from edgeq.data import load_data
    from edgeq.quantize.kv_cache import kv_cache_int8
    from tests.unit.test_kv_cache_int8 import prompts

    model = decoder_graphs.tiny_decoder(decoder_graphs.random_weights())
    kv_cache_int8(model, load_data(prompts(), model))
    path = save(model, tmp_path / "int8kv")
    out = bundle(path, tmp_path / "bundle", context_length=64)
    with Session(out) as session:
        assert session.manifest is not None and session.manifest.decoder is not None
        assert session.manifest.decoder.kv.dtype == "int8" and session.manifest.decoder.kv.bytes_per_token == 16
        result = session.generate(ids=PROMPT, max_new_tokens=NEW, stop_ids=[])
    assert result.ids == reference_greedy(path, PROMPT, NEW)
