"""``--kv-cache int8``: past/present stored as int8 with one scale per KV head.

References are independent: a numpy float64 decode of the tiny decoder (tests/unit/decoder_graphs.py)
doing the same arithmetic as the rewritten graph (dequantize the int8 past, attention, quantize the
present), carried step to step; the float32 graph for the perplexity cost; the dtype arithmetic for
the KV bytes per token.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgeq.cli import main
from edgeq.data import load_data
from edgeq.errors import ConfigError
from edgeq.evaluate import DecoderOptions, compare_models
from edgeq.graph.decoder import describe_decoder
from edgeq.graph.passes.base import to_ir
from edgeq.graph.passes.kv_cache_int8 import METADATA_KEY, KVCacheInt8
from edgeq.graph.session import cpu_session
from edgeq.quantize import api
from edgeq.quantize.config import Int8Config, WeightOnlyConfig
from edgeq.quantize.kv_cache import kv_cache_int8
from tests.unit.decoder_graphs import HEAD, HEADS, KV_HEADS, VOCAB, random_weights, tiny_decoder
from tests.unit.kv_graphs import gqa_decoder, kv_feeds, plain_decoder

PAST = ("past_key_values.0.key", "past_key_values.0.value")


def prompts(count: int = 6, length: int = 12, seed: int = 1) -> dict[str, np.ndarray]:
    """Calibration feeds for the tiny decoder: prompts with an empty cache."""
    ids = np.random.default_rng(seed).integers(0, VOCAB, (count, length)).astype(np.int64)
    empty = np.zeros((count, KV_HEADS, 0, HEAD), np.float32)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids),
            "position_ids": np.broadcast_to(np.arange(length), ids.shape).astype(np.int64),
            PAST[0]: empty, PAST[1]: empty.copy()}


def reference_step(w: dict[str, np.ndarray], ids: np.ndarray, past_q: dict[str, np.ndarray],
                   scales: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One decode step in float64: dequantize(past) -> the tiny decoder's attention -> quantize(present)."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    batch, seq = ids.shape
    past = past_q[PAST[0]].shape[2]
    x = w["embed"][ids] + w["pos"][np.arange(past, past + seq)][None]
    q = (x @ w["wq"]).reshape(batch, seq, HEADS, HEAD).transpose(0, 2, 1, 3)
    new = {PAST[0]: (x @ w["wk"]).reshape(batch, seq, KV_HEADS, HEAD).transpose(0, 2, 1, 3),
           PAST[1]: (x @ w["wv"]).reshape(batch, seq, KV_HEADS, HEAD).transpose(0, 2, 1, 3)}
    full = {n: np.concatenate([past_q[n] * scales[n].astype(np.float64)[None, :, None, None], new[n]], axis=2) for n in PAST}
    scores = q @ full[PAST[0]].transpose(0, 1, 3, 2) / np.sqrt(HEAD)
    allowed = np.arange(past + seq)[None, :] <= np.arange(past, past + seq)[:, None]
    scores = np.where(allowed, scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ctx = (probs @ full[PAST[1]]).transpose(0, 2, 1, 3).reshape(batch, seq, HEADS * HEAD)
    h1 = x + ctx @ w["wo"]
    h2 = h1 + np.maximum(h1 @ w["w1"], 0) @ w["w2"]
    present = {n: np.clip(np.rint(full[n] / scales[n].astype(np.float64)[None, :, None, None]), -128, 127) for n in PAST}
    return h2 @ w["lm_head"], present


@pytest.fixture(scope="module")
def tiny():
    weights = random_weights(0)
    model = tiny_decoder(weights)
    quantized = onnx.ModelProto()
    quantized.CopyFrom(model)
    kv = kv_cache_int8(quantized, load_data(prompts(), quantized))
    return weights, model, quantized, kv


def test_rewritten_graph_checks_runs_and_records_its_layout(tiny):
    _, model, quantized, kv = tiny
    onnx.checker.check_model(quantized, full_check=True)
    inputs = {i.name: i.type.tensor_type.elem_type for i in quantized.graph.input}
    outputs = {o.name: o.type.tensor_type.elem_type for o in quantized.graph.output}
    assert inputs[PAST[0]] == inputs[PAST[1]] == onnx.TensorProto.INT8
    assert outputs["present.0.key"] == outputs["present.0.value"] == onnx.TensorProto.INT8
    assert outputs["logits"] == onnx.TensorProto.FLOAT
    layout = json.loads({p.key: p.value for p in quantized.metadata_props}[METADATA_KEY])
    assert layout["dtype"] == "int8" and layout["axis"] == 1 and set(layout["scales"]) == set(PAST)
    # the scales are each head's max |present| over the calibration prompts / 127
    session = cpu_session(model, optimize=False)
    feeds = prompts()
    keys = session.run(["present.0.key"], feeds)[0]
    np.testing.assert_allclose(layout["scales"][PAST[0]], np.abs(keys).max(axis=(0, 2, 3)) / 127, rtol=1e-6)
    assert (kv.bytes_before, kv.bytes_after) == (2 * KV_HEADS * HEAD * 4, 2 * KV_HEADS * HEAD)
    out = cpu_session(quantized, optimize=False).run(None, kv_feeds(quantized, feeds["input_ids"][:2]))
    assert out[1].dtype == np.int8 and out[1].shape == (2, KV_HEADS, 12, HEAD)


def test_greedy_decode_with_int8_cache_matches_numpy(tiny):
    weights, _, quantized, _ = tiny
    layout = json.loads({p.key: p.value for p in quantized.metadata_props}[METADATA_KEY])
    scales = {n: np.asarray(layout["scales"][n], np.float32) for n in PAST}
    session = cpu_session(quantized, optimize=False)
    ids = np.random.default_rng(7).integers(0, VOCAB, (2, 5)).astype(np.int64)
    cache = {n: np.zeros((2, KV_HEADS, 0, HEAD), np.int8) for n in PAST}
    ref_cache = {n: np.zeros((2, KV_HEADS, 0, HEAD)) for n in PAST}
    step_ids, past, tokens, ref_tokens = ids, 0, [], []
    for _ in range(8):  # prompt, then 7 single-token steps, each present fed back as the next past
        seq = step_ids.shape[1]
        feeds = {"input_ids": step_ids, "attention_mask": np.ones((2, past + seq), np.int64),
                 "position_ids": np.broadcast_to(np.arange(past, past + seq), (2, seq)).astype(np.int64), **cache}
        logits, key, value = session.run(["logits", "present.0.key", "present.0.value"], feeds)
        ref_logits, ref_present = reference_step(weights, step_ids, ref_cache, scales)
        np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-4)
        for got, name in ((key, PAST[0]), (value, PAST[1])):
            assert got.dtype == np.int8
            diff = np.abs(got.astype(np.int64) - ref_present[name])
            assert diff.max() <= 1 and np.mean(diff > 0) < 0.01  # float32 vs float64 rounding at a tie, at most
        cache = {PAST[0]: key, PAST[1]: value}
        ref_cache = {PAST[0]: key.astype(np.float64), PAST[1]: value.astype(np.float64)}  # same int8 state
        token, ref_token = logits[:, -1].argmax(-1), ref_logits[:, -1].argmax(-1)
        tokens.append(token)
        ref_tokens.append(ref_token)
        past += seq
        step_ids = token[:, None].astype(np.int64)
    np.testing.assert_array_equal(np.stack(tokens), np.stack(ref_tokens))


def test_perplexity_cost_is_small_and_reported(tiny, tmp_path):
    _, model, quantized, _ = tiny
    onnx.save(model, str(tmp_path / "fp32.onnx"))
    onnx.save(quantized, str(tmp_path / "kvint8.onnx"))
    ids = np.random.default_rng(3).integers(0, VOCAB, (4, 23)).astype(np.int64)
    np.savez(tmp_path / "tokens.npz", input_ids=ids)
    result = compare_models(tmp_path / "fp32.onnx", [tmp_path / "kvint8.onnx"], tmp_path / "tokens.npz",
                            decoder=DecoderOptions(chunk=5, prompts=2, prompt_tokens=4, new_tokens=6))
    m = result.variants[0].metrics
    assert 0.97 < m["perplexity_ratio"] < 1.03, m  # 8 bits per cached value: a small cost on random weights
    assert m["next_token_agreement"] > 0.9
    assert result.reference_kv_bytes_per_token == 4 * result.kv_bytes_per_token["kvint8"]
    assert "KV cache        16 B/token (reference 64 B/token)" in result.format_text()


@pytest.mark.parametrize("elem, opset, ratio", [(onnx.TensorProto.FLOAT, 17, 4), (onnx.TensorProto.FLOAT16, 19, 2)])
def test_kv_bytes_per_token_quarter_fp32_half_fp16(elem, opset, ratio):
    model = plain_decoder(layers=2, kv_heads=2, head_size=8, kv_elem=elem)
    model.opset_import[0].version = opset
    before = describe_decoder(to_ir(model))
    KVCacheInt8({f"past_key_values.{i}.{p}": np.full(2, 0.02) for i in range(2) for p in ("key", "value")}).apply(model)
    onnx.checker.check_model(model, full_check=True)
    after = describe_decoder(to_ir(model))
    assert before is not None and after is not None and after.kv_dtype == "int8"
    assert after.kv_bytes_per_token == 2 * 2 * 2 * 8 == before.kv_bytes_per_token // ratio
    out = cpu_session(model, optimize=False).run(None, kv_feeds(model, np.array([[1, 2, 3]], np.int64), past=0))
    assert all(o.dtype == np.int8 for o in out[1:])


def test_builder_style_gqa_decoder_runs_with_int8_cache():
    model = gqa_decoder(layers=2, heads=4, kv_heads=2, head_size=16)
    KVCacheInt8({f"past_key_values.{i}.{p}": np.full(2, 0.05) for i in range(2) for p in ("key", "value")}).apply(model)
    session = cpu_session(model, optimize=False)
    first = session.run(None, kv_feeds(model, np.array([[1, 2, 3]], np.int64), head_size=16))
    cache = dict(zip([f"past_key_values.{i}.{p}" for i in range(2) for p in ("key", "value")], first[1:], strict=True))
    feeds = {"input_ids": np.array([[4]], np.int64), "attention_mask": np.ones((1, 4), np.int64), **cache}
    second = session.run(None, feeds)
    assert second[1].dtype == np.int8 and second[1].shape == (1, 2, 4, 16)
    np.testing.assert_array_equal(second[1][:, :, :3], first[1])  # the cached positions round-trip exactly


def test_quantize_api_and_cli_with_kv_cache(tiny, tmp_path, capsys):
    _, model, _, _ = tiny
    result = api.quantize(model, Int8Config(kv_cache="int8"), api.QuantizeInputs(data=load_data(prompts(), model)))
    assert (result.summary.kv_bytes_per_token_before, result.summary.kv_bytes_per_token_after) == (64, 16)
    assert "KV cache bytes/token: 64 -> 16 (0.250x)" in result.summary.format_text()
    onnx.checker.check_model(result.model)
    cpu_session(result.model, optimize=False).run(None, kv_feeds(result.model, np.array([[1, 2]], np.int64)))
    onnx.save(model, str(tmp_path / "fp32.onnx"))
    np.savez(tmp_path / "prompts.npz", **prompts())
    code = main(["quantize", str(tmp_path / "fp32.onnx"), "-o", str(tmp_path / "q.onnx"), "--weights", "int8",
                 "--block-size", "16", "--kv-cache", "int8", "--data", str(tmp_path / "prompts.npz"), "--quiet"])
    assert code == 0
    q = onnx.load(str(tmp_path / "q.onnx"))
    assert {i.name: i.type.tensor_type.elem_type for i in q.graph.input}[PAST[0]] == onnx.TensorProto.INT8
    with pytest.raises(ConfigError, match="--kv-cache int8 needs --data"):
        api.quantize(model, WeightOnlyConfig(kv_cache="int8"))
    with pytest.raises(ConfigError, match="--kv-cache"):
        WeightOnlyConfig(kv_cache="int4")


def test_kv_cache_on_a_graph_without_cache_is_one_line_exit_2(tmp_path, capsys):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 16])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16])
    w = onnx.numpy_helper.from_array(np.eye(16, dtype=np.float32), "w")
    graph = onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g", [x], [y], [w])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    out = tmp_path / "out.onnx"
    capsys.readouterr()
    code = main(["quantize", str(tmp_path / "m.onnx"), "-o", str(out), "--kv-cache", "int8", "--summary",
                 str(tmp_path / "s.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "no KV cache" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
