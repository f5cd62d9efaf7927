"""Decoder bundles: export verifies KV-cache decoders on consistent feeds (no 128 guessed for a head
size or a past), and writes the tokenizer, the generation settings and the KV layout; the plan
refuses a KV cache the board cannot hold, naming the number."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from edgeq_runtime.manifest import Manifest

from edgeq.cli import main
from edgeq.errors import ConfigError, UnsupportedError
from edgeq.export.feeds import resolve_shapes, synthetic_feeds
from edgeq.graph.decoder import describe_decoder
from edgeq.graph.passes.base import to_ir
from tests.unit import decoder_graphs, kv_graphs
from tests.unit.decoder_bundles import bundle, genai_config, save, word_tokenizer


def test_feeds_for_a_symbolic_head_size_come_from_the_decoder_facts(tmp_path: Path):
    """The builder leaves the head size symbolic; the old feeds filled it with 128 and onnxruntime
    refused the graph. The shapes now agree with the decoder and the graph runs on them."""
    model = kv_graphs.gqa_decoder(layers=2, heads=4, kv_heads=2, head_size=16)
    info = describe_decoder(to_ir(model))
    assert info is not None and info.head_size == 16
    shapes, _ = resolve_shapes(model, None, None, info)
    assert shapes["past_key_values.0.key"] == [1, 2, 4, 16]
    assert shapes["input_ids"] == [1, 4] and shapes["attention_mask"] == [1, 8]
    from edgeq.export.verify import run_onnxruntime

    logits, *present = run_onnxruntime(model, synthetic_feeds(model, shapes))
    assert logits.shape == (1, 4, 32) and present[0].shape == (1, 2, 8, 16)


def test_position_ids_continue_the_past():
    model = decoder_graphs.tiny_decoder(decoder_graphs.random_weights())
    info = describe_decoder(to_ir(model))
    assert info is not None
    shapes, _ = resolve_shapes(model, None, None, info)
    feeds = synthetic_feeds(model, shapes)
    np.testing.assert_array_equal(feeds["position_ids"], [[4, 5, 6, 7]])
    assert feeds["attention_mask"].shape == (1, 8) and feeds["past_key_values.0.key"].shape == (1, 1, 4, 8)


def test_builder_style_decoder_bundle(tmp_path: Path):
    """GQA decoder + genai_config.json + tokenizer beside it: everything lands in the manifest."""
    folder = tmp_path / "gqa"
    model = save(kv_graphs.gqa_decoder(vocab=32, context=64), folder)
    genai_config(folder, bos_token_id=1, eos_token_id=[2, 3], pad_token_id=0, context_length=64, vocab_size=32)
    word_tokenizer(folder / "tokenizer.json", 32)
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}", "eos_token": "t9"}))
    out = bundle(model, tmp_path / "bundle")
    manifest = Manifest.read(out)
    assert manifest.schema_version == 2 and manifest.decoder is not None
    decoder = manifest.decoder
    assert (decoder.vocab_size, decoder.context_length, decoder.tokenizer) == (32, 64, "tokenizer.json")
    assert decoder.kv.to_dict() == {"layers": 2, "kv_heads": 2, "head_size": 16, "dtype": "float32",
                                    "bytes_per_token": 2 * 2 * 2 * 16 * 4, "position_ids": False,
                                    "shared_buffer": True}
    generation = decoder.generation
    assert (generation.bos_token_id, generation.eos_token_ids, generation.pad_token_id) == (1, [2, 3], 0)
    assert generation.chat_template == "{{ messages }}"  # genai_config states the ids first, the template only here
    assert generation.sources == {"bos_token_id": "genai_config.json", "eos_token_ids": "genai_config.json",
                                  "pad_token_id": "genai_config.json", "chat_template": "tokenizer_config.json"}
    assert "tokenizer.json" in {f.path for f in manifest.files}
    assert (out / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()


def test_plain_decoder_needs_a_context_and_reads_the_tokenizer_config(tmp_path: Path):
    folder = tmp_path / "tiny"
    model = save(decoder_graphs.tiny_decoder(decoder_graphs.random_weights()), folder)
    tokenizer = word_tokenizer(tmp_path / "words.json", 32)
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "t1", "eos_token": {"content": "t2"}}))
    with pytest.raises(ConfigError, match=r"nothing states the decoder's context length.*--context-length"):
        bundle(model, tmp_path / "b0", tokenizer=tokenizer)
    out = bundle(model, tmp_path / "b1", tokenizer=tokenizer, context_length=128)
    decoder = Manifest.read(out).decoder
    assert decoder is not None and decoder.kv.shared_buffer is False and decoder.kv.position_ids is True
    assert (decoder.generation.bos_token_id, decoder.generation.eos_token_ids) == (1, [2])
    assert decoder.generation.sources["eos_token_ids"] == "tokenizer_config.json eos_token"


def test_tokenizer_of_another_model_is_refused(tmp_path: Path):
    model = save(decoder_graphs.tiny_decoder(decoder_graphs.random_weights()), tmp_path / "m")
    big = word_tokenizer(tmp_path / "big.json", 40)
    with pytest.raises(ConfigError, match=r"big.json: the tokenizer has ids up to 39 but the model's vocabulary is 32"):
        bundle(model, tmp_path / "b", tokenizer=big, context_length=64)
    assert not (tmp_path / "b").exists()


def test_kv_cache_past_the_board_memory_is_refused_naming_the_number(tmp_path: Path, capsys):
    model = save(decoder_graphs.tiny_decoder(decoder_graphs.random_weights()), tmp_path / "m")
    # 64 B/token (1 layer x 1 KV head x 8 x float32 x key+value): 2**30 tokens = 64 GiB > the Orin Nano's 8 GB
    with pytest.raises(UnsupportedError, match=r"KV cache 65,536.0 MB \(64 B/token x 1073741824 tokens\).*largest "
                                               r"memory \(8 GB\)"):
        bundle(model, tmp_path / "b", target="jetson-orin-nano", context_length=2**30)
    out = bundle(model, tmp_path / "ok", target="jetson-orin-nano", context_length=100_000_000)
    manifest = Manifest.read(out)
    assert any("fits the 8 GB NVIDIA Jetson Orin Nano, not the 4 GB one" in n for n in manifest.precision["notes"])
    assert main(["export", str(model), "--target", "jetson-orin-nano", "-o", str(tmp_path / "cli"),
                 "--context-length", str(2**30)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "65,536.0 MB" in err[0]


def test_context_beyond_what_the_model_holds_is_refused(tmp_path: Path):
    folder = tmp_path / "gqa"
    model = save(kv_graphs.gqa_decoder(context=64), folder)
    with pytest.raises(ConfigError, match=r"--context-length 65: .* holds at most 64 positions \(cos_cache rows\)"):
        bundle(model, tmp_path / "b", context_length=65)


def test_a_tokenizer_for_a_model_that_is_no_decoder_is_refused(tmp_path: Path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ConfigError, match="not a KV-cache decoder"):
        bundle(path, tmp_path / "b", tokenizer=word_tokenizer(tmp_path / "t.json", 4))
    assert Manifest.read(bundle(path, tmp_path / "plain")).decoder is None
