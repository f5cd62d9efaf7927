"""The KV-cache decoder recognizer: counts, ties and cache bytes against hand computation, and
past/present tensors that do not pair refused with the tensor's name."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from kv_graphs import gqa_decoder, kv_feeds, plain_decoder
from onnx import TensorProto, helper

from edgeq.cli import main
from edgeq.errors import ConfigError
from edgeq.graph.decoder import DecoderInfo, describe_decoder


def _describe(model: onnx.ModelProto, folder=None) -> DecoderInfo | None:
    return describe_decoder(ir.serde.deserialize_model(model), folder)


def _runs(model: onnx.ModelProto, head_size: int | None = None) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, kv_feeds(model, np.array([[3, 1, 4]], np.int64), past=2, head_size=head_size))


def test_gqa_counts_and_kv_bytes():
    model = gqa_decoder(layers=2, heads=4, kv_heads=2, head_size=16, vocab=32, context=64)
    outputs = _runs(model, head_size=16)
    assert outputs[1].shape == (1, 2, 5, 16)  # present.0.key: 2 past + 3 new positions
    info = _describe(model)
    assert info is not None
    assert (info.layers, info.attention_heads, info.kv_heads, info.head_size, info.vocab_size) == (2, 4, 2, 16, 32)
    assert info.kv_bytes_per_token == 2 * 2 * 2 * 16 * 4  # key+value x layers x KV heads x head size x float32
    assert info.context_length == 64 and info.sources["context_length"] == "cos_cache rows"
    assert info.tied_embeddings is False and not info.position_ids
    # The head size is symbolic in the KV tensors (as the builder writes it): from the packed QKV width.
    assert info.sources["head_size"] == "packed QKV width 128 / (4 + 2 x 2) heads"
    assert "4 heads / 2 KV heads (GQA), head size 16" in info.format_line()


def test_smollm2_sized_cache_in_float16():
    # SmolLM2-135M: 30 layers, 3 KV heads of 64, float16 cache (only the interface matters here).
    info = _describe(plain_decoder(layers=30, kv_heads=3, head_size=64, hidden=576, kv_elem=TensorProto.FLOAT16))
    assert info is not None and info.layers == 30 and info.kv_dtype == "float16"
    assert info.kv_bytes_per_token == 2 * 30 * 3 * 64 * 2 == 23040
    assert info.attention_heads is None and "attention_heads" not in info.sources  # no attention op says it


@pytest.mark.parametrize(("tie", "tied"), [("none", False), ("transpose", True), ("gemm", True)])
def test_tied_embedding(tie, tied):
    model = plain_decoder(tie=tie)
    logits = _runs(model)[0]
    info = _describe(model)
    assert info is not None and info.tied_embeddings is tied and info.position_ids
    if tied:  # the LM head really is the table: logits = embedding(ids) @ table.T
        table = onnx.numpy_helper.to_array(model.graph.initializer[0]).astype(np.float64)
        np.testing.assert_allclose(logits[0], table[[3, 1, 4]] @ table.T, rtol=1e-5, atol=1e-6)


def test_genai_config_fills_in_and_must_agree(tmp_path):
    model = plain_decoder(layers=2, kv_heads=2, head_size=8)
    config = {"model": {"context_length": 2048, "decoder": {"num_attention_heads": 4, "num_hidden_layers": 2,
                                                             "num_key_value_heads": 2, "head_size": 8}}}
    (tmp_path / "genai_config.json").write_text(json.dumps(config))
    info = _describe(model, tmp_path)
    assert info is not None and info.attention_heads == 4 and info.context_length == 2048
    assert info.sources["attention_heads"] == "genai_config.json"
    config["model"]["decoder"]["num_hidden_layers"] = 30
    (tmp_path / "genai_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="num_hidden_layers is 30, but the graph's KV tensors say 2"):
        _describe(model, tmp_path)


def test_context_from_metadata():
    model = plain_decoder()
    helper.set_model_props(model, {"max_position_embeddings": "8192"})
    info = _describe(model)
    assert info is not None and info.context_length == 8192 and info.sources["context_length"] == "metadata max_position_embeddings"


def test_not_a_decoder():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    assert _describe(helper.make_model(graph)) is None


def _drop_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    keep = [o for o in model.graph.output if o.name != name]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    return model


def test_missing_present_is_named():
    with pytest.raises(ConfigError, match=r"^present\.1\.value: missing output"):
        _describe(_drop_output(plain_decoder(), "present.1.value"))


def test_layer_count_mismatch_is_named():
    model = plain_decoder(layers=2)
    for part in ("key", "value"):  # a third present pair with no past to pair with
        model.graph.node.append(helper.make_node("Identity", [f"present.1.{part}"], [f"present.2.{part}"]))
        model.graph.output.append(helper.make_tensor_value_info(f"present.2.{part}", TensorProto.FLOAT, ["b", 2, "t", 8]))
    with pytest.raises(ConfigError, match=r"^past_key_values\.2\.key: missing input"):
        _describe(model)


def test_shape_mismatch_is_named():
    model = plain_decoder(kv_heads=2, head_size=8)
    present = next(o for o in model.graph.output if o.name == "present.0.value")
    present.type.tensor_type.shape.dim[3].dim_value = 16
    with pytest.raises(ConfigError, match=r"^present\.0\.value: head size 16 does not match past_key_values\.0\.value \(8\)"):
        _describe(model)


def test_inspect_says_decoder(tmp_path, capsys):
    path = tmp_path / "dec.onnx"
    onnx.save(gqa_decoder(), str(path))
    assert main(["inspect", str(path)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("decoder:")]
    assert lines == ["decoder: 2 layers, 4 heads / 2 KV heads (GQA), head size 16, vocabulary 32 "
                     "(embedding not tied), context 64, KV cache float 512 B/token"]
    assert main(["inspect", str(path), "--json"]) == 0
    decoder = json.loads(capsys.readouterr().out)["_data"]["decoder"]
    assert decoder["_type"] == "edgeq.DecoderInfo" and decoder["_data"]["kv_bytes_per_token"] == 512


def test_inspect_refuses_unpaired_in_one_line(tmp_path, capsys):
    path = tmp_path / "dec.onnx"
    onnx.save(_drop_output(plain_decoder(), "present.0.key"), str(path))
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: present.0.key: missing output")
