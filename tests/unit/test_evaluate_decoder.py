"""edgeq compare on a KV-cache decoder: chunked perplexity, next-token and greedy agreement, report, CLI.

References are independent: the float64 numpy forward pass of the same network over the whole
sequence (tests/unit/decoder_graphs.py) and onnxruntime run once over the full sequence.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgeq import metrics
from edgeq.cli import main
from edgeq.data.tokens import load_tokens
from edgeq.errors import DataError
from edgeq.evaluate import DecoderCompareResult, DecoderOptions, compare_models
from edgeq.evaluate.kv_cache import KVSession, kv_layout
from edgeq.graph.session import cpu_session
from tests.unit.decoder_graphs import (
    HEAD,
    KV_HEADS,
    VOCAB,
    forward,
    random_weights,
    tiny_decoder,
    with_int8_weights,
)

SEQS, LENGTH = 4, 23


@pytest.fixture(scope="module")
def decoders(tmp_path_factory):
    folder = tmp_path_factory.mktemp("decoder")
    weights = random_weights(0)
    model = tiny_decoder(weights)
    ref = folder / "fp32.onnx"
    onnx.save(model, str(ref))
    same = folder / "same.onnx"
    onnx.save(model, str(same))
    rough = folder / "int8.onnx"
    onnx.save(with_int8_weights(model, ("wq", "wo", "w1", "lm_head"), step=0.12), str(rough))
    ids = np.random.default_rng(3).integers(0, VOCAB, (SEQS, LENGTH)).astype(np.int64)
    data = folder / "heldout.npz"
    np.savez(data, input_ids=ids)
    return weights, ref, same, rough, data, ids


def one_pass_logits(path, ids):
    """onnxruntime over each whole sequence at once, empty cache: the unchunked reference."""
    session = cpu_session(str(path), optimize=False)
    empty = np.zeros((ids.shape[0], KV_HEADS, 0, HEAD), np.float32)
    feeds = {
        "input_ids": ids, "attention_mask": np.ones_like(ids),
        "position_ids": np.broadcast_to(np.arange(ids.shape[1]), ids.shape).astype(np.int64),
        "past_key_values.0.key": empty, "past_key_values.0.value": empty,
    }
    return session.run(["logits"], feeds)[0]


def perplexity64(logits, ids):
    """Teacher-forced perplexity in float64, written out independently of edgeq.metrics."""
    x = logits[:, :-1].astype(np.float64)
    lse = np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1)) + x.max(-1)
    picked = np.take_along_axis(x, ids[:, 1:, None], axis=-1)[..., 0]
    return float(np.exp(np.mean(lse - picked)))


def test_graph_matches_numpy_float64(decoders):
    weights, ref, *_, ids = decoders
    np.testing.assert_allclose(one_pass_logits(ref, ids), forward(weights, ids), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_chunked_perplexity_equals_one_pass(decoders, chunk):
    weights, ref, _, rough, data, ids = decoders
    opts = DecoderOptions(chunk=chunk, prompts=2, prompt_tokens=4, new_tokens=3)
    result = compare_models(ref, [rough], data, decoder=opts)
    assert isinstance(result, DecoderCompareResult)
    assert result.sequences == SEQS and result.scored_tokens == SEQS * (LENGTH - 1)
    assert result.reference_perplexity == pytest.approx(perplexity64(one_pass_logits(ref, ids), ids), rel=1e-6)
    assert result.reference_perplexity == pytest.approx(perplexity64(forward(weights, ids), ids), rel=1e-4)
    m = result.variants[0].metrics
    cand = one_pass_logits(rough, ids)
    assert m["perplexity"] == pytest.approx(perplexity64(cand, ids), rel=1e-6)
    ref_top = one_pass_logits(ref, ids)[:, :-1].argmax(-1)
    assert m["next_token_agreement"] == pytest.approx(float(np.mean(ref_top == cand[:, :-1].argmax(-1))))
    assert m["kl_divergence"] == pytest.approx(metrics.kl_divergence(one_pass_logits(ref, ids)[:, :-1], cand[:, :-1]), rel=1e-5)


def test_greedy_generation_matches_numpy(decoders):
    weights, ref, *_, ids = decoders
    model = onnx.load(str(ref))
    session = KVSession(model, kv_layout(model), "ref")
    got = session.generate(ids[:, :6], 7, chunk=4)
    seq = ids[:, :6]
    for _ in range(7):
        seq = np.concatenate([seq, forward(weights, seq)[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(got, seq[:, 6:])


def test_agreement_is_one_against_itself_and_less_perturbed(decoders, tmp_path):
    _, ref, same, rough, data, _ = decoders
    opts = DecoderOptions(chunk=8, prompts=SEQS, prompt_tokens=5, new_tokens=12, batch_size=3)
    result = compare_models(ref, [same, rough], data, decoder=opts)
    self_m, rough_m = (v.metrics for v in result.variants)
    assert self_m["next_token_agreement"] == 1.0 and self_m["greedy_agreement"] == 1.0
    assert self_m["greedy_first_divergence"] == 12.0
    assert self_m["perplexity_ratio"] == 1.0 and self_m["kl_divergence"] == 0.0
    assert rough_m["next_token_agreement"] < 1.0 and rough_m["greedy_agreement"] < 1.0
    assert rough_m["greedy_first_divergence"] < 12.0 and rough_m["kl_divergence"] > 0
    layers = result.variants[1].layers
    assert {row["tensor"] for row in layers} == {"q2", "attn", "up", "logits"}
    assert [row["sqnr_db"] for row in layers] == sorted(row["sqnr_db"] for row in layers)
    assert result.variants[0].layers == []
    back = DecoderCompareResult.load(result.save(tmp_path / "r.json"))
    assert back.variants[1].metrics == rough_m and back.reference_perplexity == result.reference_perplexity


def test_report_shows_decoder_metrics(decoders, tmp_path):
    from edgeq.report import load_report, write_compare_report

    _, ref, same, rough, data, _ = decoders
    result = compare_models(ref, [same, rough], data, decoder=DecoderOptions(chunk=8, prompts=2, prompt_tokens=4, new_tokens=4))
    html, js = tmp_path / "r.html", tmp_path / "r.json"
    write_compare_report(result, html, js)
    page = html.read_text()
    rough_m = result.variants[1].metrics
    for text in ("perplexity", "next-token agreement", "greedy agreement", "Perplexity against size",
                 f"{result.reference_perplexity:.3f}", f"{rough_m['perplexity']:.3f}",
                 f"{rough_m['next_token_agreement'] * 100:.1f}%", "<svg", "Worst layers", "KV cache / token",
                 f"{result.reference_kv_bytes_per_token:,} B"):
        assert text in page, text
    section = load_report(js).sections[0]
    assert section["kind"] == "decoder"
    # the reference and the copy tie on perplexity; the int8 file is smaller: both fronts are decided by size
    points = {"fp32": result.reference_file_bytes, "int8": result.variants[1].file_bytes}
    assert points["int8"] < points["fp32"]
    assert "int8" in section["summary"]["pareto_front"]["size"]
    write_compare_report(js, tmp_path / "again.html")  # the JSON renders again
    assert "Perplexity against size" in (tmp_path / "again.html").read_text()


def test_token_stream_and_text_data(tmp_path):
    stream = np.arange(50) % VOCAB
    np.savez(tmp_path / "s.npz", tokens=stream)
    got = load_tokens(tmp_path / "s.npz", seq_len=16)
    np.testing.assert_array_equal(got.sequences, stream[:48].reshape(3, 16))
    np.savez(tmp_path / "bad.npz", ids=stream)
    with pytest.raises(DataError, match=r"input_ids.*tokens.*found keys: ids"):
        load_tokens(tmp_path / "bad.npz")
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {w: i for i, w in enumerate(["[UNK]", "the", "cat", "sat", "on", "mat"])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "t.txt").write_text("the cat sat on the mat " * 3)
    got = load_tokens(tmp_path / "t.txt", tokenizer=tmp_path / "tokenizer.json", seq_len=6)
    np.testing.assert_array_equal(got.sequences, np.tile([1, 2, 3, 4, 1, 5], (3, 1)))


def test_cli_decoder_compare_and_text_without_tokenizer(decoders, tmp_path, capsys):
    _, ref, _, rough, data, _ = decoders
    (tmp_path / "text.txt").write_text("held-out text")
    code = main(["compare", str(ref), str(rough), "--data", str(tmp_path / "text.txt")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--tokenizer" in err
    code = main(["compare", str(ref), str(rough), "--data", str(data), "--chunk", "7", "--prompts", "2",
                 "--prompt-tokens", "4", "--new-tokens", "3", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["_type"] == "edgeq.DecoderCompareResult" and out["_data"]["chunk"] == 7
    assert 0 < out["_data"]["variants"][0]["metrics"]["next_token_agreement"] < 1


def test_metric_helpers():
    ref = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert metrics.greedy_agreement(ref, ref) == (1.0, 4.0)
    assert metrics.greedy_agreement(ref, np.array([[1, 0, 3, 4], [5, 6, 7, 0]])) == (0.75, 2.0)
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
    sums = metrics.NextTokenSums()
    sums.add(logits, logits, np.array([0, 1]), block=1)
    assert sums.reference_nll == pytest.approx(-np.log(0.5) - np.log(0.8))
    assert sums.top1_matches == 2 and sums.kl == pytest.approx(0.0, abs=1e-12) and sums.tokens == 2
    assert metrics.perplexity(sums.reference_nll, 2) == pytest.approx(np.sqrt(1 / 0.4))
