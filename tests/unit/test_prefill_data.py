"""Text as a decoder's calibration data: prefill feeds from an empty KV cache.

The reference for the statistics GPTQ/AWQ fit on is independent of the collector: in
``plain_decoder`` the first MatMuls read the embedding rows of the tokens, so their ``X^T X`` is
the numpy float64 sum of the outer products of those rows.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgeq.cli import main
from edgeq.data import load_data
from edgeq.errors import DataError
from edgeq.graph.passes.weight_only import plan_targets
from edgeq.graph.session import cpu_session
from edgeq.quantize.schemes.weight_only.stats import collect_layer_stats
from tests.unit.kv_graphs import kv_feeds, plain_decoder

VOCAB = 32


def _word_tokenizer(path):
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {f"w{i}": i for i in range(VOCAB - 1)} | {"[UNK]": VOCAB - 1}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(path))
    return tok


def _ids(count: int, length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (count, length)).astype(np.int64)


def test_token_npz_becomes_prefill_feeds_onnxruntime_runs(tmp_path):
    model = plain_decoder(vocab=VOCAB)
    ids = _ids(5, 9)
    np.savez(tmp_path / "tokens.npz", input_ids=ids)
    source = load_data(tmp_path / "tokens.npz", model, batch_size=2)
    session = cpu_session(model)
    seen = []
    for feeds in source.batches():
        assert set(feeds) == {i.name for i in model.graph.input}
        batch = feeds["input_ids"]
        expected = kv_feeds(model, batch)
        for name, value in expected.items():
            np.testing.assert_array_equal(feeds[name], value, err_msg=name)
            assert feeds[name].dtype == value.dtype
        session.run(None, feeds)
        seen.append(batch)
    np.testing.assert_array_equal(np.concatenate(seen), ids)
    assert any("prefill" in n for n in source.notes)


def test_text_with_tokenizer_windows_the_stream(tmp_path):
    tok = _word_tokenizer(tmp_path / "tok.json")
    words = [f"w{i % 31}" for i in range(50)]
    (tmp_path / "t.txt").write_text(" ".join(words))
    source = load_data(tmp_path / "t.txt", plain_decoder(vocab=VOCAB), tokenizer=tmp_path / "tok.json", seq_len=16)
    ids = np.concatenate([f["input_ids"] for f in source.batches()])
    stream = np.asarray(tok.encode(" ".join(words)).ids)
    np.testing.assert_array_equal(ids, stream[:48].reshape(3, 16))


def test_text_for_a_model_without_cache_is_one_line(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    (tmp_path / "t.txt").write_text("w1 w2")
    with pytest.raises(DataError, match=r"token data feeds a KV-cache decoder.*'x'"):
        load_data(tmp_path / "t.txt", helper.make_model(graph), tokenizer=tmp_path / "none.json")


def test_prefill_statistics_equal_numpy_embedding_gram(tmp_path):
    model = plain_decoder(vocab=VOCAB)
    ids = _ids(6, 7, seed=3)
    embed = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "embed")).astype(np.float64)
    source = load_data({"input_ids": ids}, model, batch_size=4)
    targets = [t for t in plan_targets(model, include_embeddings=False)[0] if t.activation == "h"]
    stats = collect_layer_stats(model, targets, source, progress=False)["h"]
    rows = embed[ids.reshape(-1)]
    np.testing.assert_allclose(stats.hessian, rows.T @ rows / rows.shape[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.mean, rows.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_cli_gptq_on_text_finds_the_tokenizer_beside_the_model(tmp_path, capsys):
    model_path = tmp_path / "decoder.onnx"
    onnx.save(plain_decoder(vocab=VOCAB, hidden=64), model_path)
    _word_tokenizer(tmp_path / "tokenizer.json")
    (tmp_path / "t.txt").write_text(" ".join(f"w{(i * 7) % 31}" for i in range(600)))
    out, summary = tmp_path / "q.onnx", tmp_path / "s.json"
    code = main(["quantize", str(model_path), "-o", str(out), "--weights", "int4", "--block-size", "32",
                 "--method", "gptq", "--data", str(tmp_path / "t.txt"), "--summary", str(summary), "--quiet"])
    assert code == 0, capsys.readouterr().err
    nodes = json.loads(summary.read_text())["_data"]["nodes"]
    fitted = [n for n in nodes if n["quantized"] and n["op_type"] == "MatMul" and n["method"] == "gptq"]
    assert fitted and all("output_rel_mse" in n["error"] for n in fitted)
    quantized = onnx.load(out)
    onnx.checker.check_model(quantized, full_check=True)
    feeds = kv_feeds(quantized, _ids(2, 5))
    logits = cpu_session(quantized).run(["logits"], feeds)[0]
    assert np.isfinite(logits).all() and logits.shape == (2, 5, VOCAB)


def test_tokenizer_option_without_text_is_refused(tmp_path):
    model = plain_decoder(vocab=VOCAB)
    with pytest.raises(DataError, match="--tokenizer is for text data"):
        load_data({"input_ids": _ids(2, 4), "attention_mask": np.ones((2, 4), np.int64)}, model, tokenizer="t.json")


def test_statistics_collected_once_serve_later_runs_identically():
    from edgeq.quantize.api import QuantizeInputs, quantize
    from edgeq.quantize.config import WeightOnlyConfig

    model = plain_decoder(vocab=VOCAB, hidden=64)
    data = load_data({"input_ids": _ids(8, 12, seed=5)}, model, batch_size=4)
    config = WeightOnlyConfig(weights="int4", block_size=32, method="gptq")
    fresh = quantize(model, config, QuantizeInputs(data=data))
    known: dict = {}
    first = quantize(model, config, QuantizeInputs(data=data, layer_stats=known))
    assert known and any("collected in" in n for n in first.summary.notes)
    again = quantize(model, WeightOnlyConfig(weights="int4", block_size=32, method="awq"), QuantizeInputs(data=data, layer_stats=known))
    reused = quantize(model, config, QuantizeInputs(data=data, layer_stats=known))
    assert any("given (collected earlier" in n for n in reused.summary.notes)
    assert any("given (collected earlier" in n for n in again.summary.notes)
    for a, b in zip(fresh.model.graph.initializer, reused.model.graph.initializer, strict=True):
        assert a.name == b.name and a.raw_data == b.raw_data


def test_calibrate_cli_reads_text_for_a_decoder(tmp_path, caplog):
    model_path = tmp_path / "decoder.onnx"
    onnx.save(plain_decoder(vocab=VOCAB), model_path)
    _word_tokenizer(tmp_path / "decoder.tokenizer.json")  # <model stem>.tokenizer.json, found beside it
    (tmp_path / "t.txt").write_text(" ".join(f"w{(i * 5) % 31}" for i in range(300)))
    out = tmp_path / "calib.json"
    assert main(["calibrate", str(model_path), "--data", str(tmp_path / "t.txt"), "-o", str(out), "--quiet"]) == 0
    tensors = json.loads(out.read_text())["_data"]["tensors"]
    assert "h" in tensors and "past_key_values.0.key" not in tensors  # empty at prefill: left out, and said
    assert "held no values" in caplog.text
