"""Tied embedding / LM head tables quantized once, ``--lm-head`` precision, and a summary naming every node.

The tiny decoder of ``decoder_graphs`` with its LM head tied to the embedding table (the head is
``MatMul(h, Transpose(embed))``, or ``Gemm(transB=1)`` on the table); onnxruntime runs every
result and its logits are compared with the numpy float64 forward pass over the weights
dequantized from the file's own codes.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from decoder_graphs import HEAD, HIDDEN, KV_HEADS, VOCAB, forward, random_weights, tiny_decoder
from onnx import TensorProto, helper, numpy_helper

from edgeq.errors import ConfigError
from edgeq.graph.session import cpu_session
from edgeq.numerics.codecs.packing import unpack_bits
from edgeq.quantize.api import QuantizeInputs, quantize
from edgeq.quantize.config import WeightOnlyConfig

IDS = np.array([[3, 17, 5, 30, 1, 9], [0, 4, 22, 8, 31, 2]], np.int64)


def tied_decoder(weights: dict[str, np.ndarray], gemm: bool = False) -> onnx.ModelProto:
    """The tiny decoder whose LM head reads the embedding table transposed (no ``lm_head`` weight)."""
    model = tiny_decoder(weights)
    graph = model.graph
    head = next(n for n in graph.node if n.output[0] == "logits")
    graph.node.remove(head)
    kept = [t for t in graph.initializer if t.name != "lm_head"]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if gemm:  # Gemm wants 2-D: [B*T, H] @ embed^T, then back to [B, T, V]
        graph.initializer.extend([numpy_helper.from_array(np.array([-1, HIDDEN], np.int64), "flat_shape"),
                                  numpy_helper.from_array(np.array([-1, IDS.shape[1], VOCAB], np.int64), "logit_shape")])
        graph.node.extend([
            helper.make_node("Reshape", ["h2", "flat_shape"], ["h2_flat"]),
            helper.make_node("Gemm", ["h2_flat", "embed"], ["logits_flat"], name="lm_head", transB=1),
            helper.make_node("Reshape", ["logits_flat", "logit_shape"], ["logits"]),
        ])
    else:
        graph.node.extend([
            helper.make_node("Transpose", ["embed"], ["embed_t"], name="tie_transpose"),
            helper.make_node("MatMul", ["h2", "embed_t"], ["logits"], name="lm_head"),
        ])
    onnx.checker.check_model(model)
    return model


def tied_forward(weights: dict[str, np.ndarray]) -> np.ndarray:
    return forward({**weights, "lm_head": weights["embed"].T}, IDS)


# The int8 heads below run at accuracy_level 4 (int8 activations, the only fast 8-bit path in
# onnxruntime's CPU kernel): the references read the head's input as int8 blocks of 16 too.


def run(model: onnx.ModelProto) -> np.ndarray:
    batch, length = IDS.shape
    empty = np.zeros((batch, KV_HEADS, 0, HEAD), np.float32)
    feeds = {"input_ids": IDS, "attention_mask": np.ones_like(IDS), "position_ids": np.tile(np.arange(length), (batch, 1)),
             "past_key_values.0.key": empty, "past_key_values.0.value": empty}
    return cpu_session(model).run(["logits"], feeds)[0]


def _inits(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def dequantized(model: onnx.ModelProto, node: onnx.NodeProto) -> np.ndarray:
    """``[N, K]`` float64 from a MatMulNBits's own initializers (codes, scales, zero points)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    n, k, bits, block = attrs["N"], attrs["K"], attrs["bits"], attrs["block_size"]
    inits = _inits(model)
    packed = numpy_helper.to_array(inits[node.input[1]])
    codes = unpack_bits(packed, bits, block).reshape(n, -1).astype(np.float64)
    scales = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
    if len(node.input) > 3 and node.input[3]:
        zero = unpack_bits(numpy_helper.to_array(inits[node.input[3]]), bits, scales.shape[1]).astype(np.float64)
    else:
        zero = np.full(scales.shape, 2.0 ** (bits - 1))
    w = (codes.reshape(n, -1, block) - zero[..., None]) * scales[..., None]
    return w.reshape(n, -1)[:, :k]


def nodes(model: onnx.ModelProto, op_type: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == op_type]


def dequantized_table(model: onnx.ModelProto, node: onnx.NodeProto) -> np.ndarray:
    """``[V, D]`` float64 from a GatherBlockQuantized's initializers (through a Reshape of a shared B)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    inits = _inits(model)
    producer = next((n for n in model.graph.node if n.output[0] == node.input[0]), None)
    data = inits[producer.input[0] if producer is not None else node.input[0]]
    scales = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
    rows, blocks = scales.shape
    block = attrs["block_size"]
    if data.data_type in (TensorProto.INT4, TensorProto.UINT4):
        bits, signed = 4, data.data_type == TensorProto.INT4
    else:
        bits, signed = attrs.get("bits", 4), False
    count = int(np.prod(data.dims)) if data.data_type in (TensorProto.INT4, TensorProto.UINT4) else rows * blocks * block
    codes = unpack_bits(np.frombuffer(data.raw_data, np.uint8), bits, count).astype(np.float64)
    width = codes.size // rows
    codes = codes.reshape(rows, width)
    if signed:
        codes = np.where(codes >= 8, codes - 16, codes)
        zero = np.zeros(scales.shape)
    elif len(node.input) > 3 and node.input[3]:
        zp = inits[node.input[3]]
        raw = np.frombuffer(zp.raw_data, np.uint8)
        if zp.data_type == TensorProto.UINT4:  # packed over the flat tensor
            zero = unpack_bits(raw, 4, rows * blocks).reshape(rows, blocks).astype(np.float64)
        else:  # packed per row, as MatMulNBits
            zero = unpack_bits(raw.reshape(rows, -1), bits, blocks).astype(np.float64)
    else:
        zero = np.full(scales.shape, 2.0 ** (bits - 1))
    padded = np.zeros((rows, blocks * block))
    padded[:, :width] = codes
    return ((padded.reshape(rows, blocks, block) - zero[..., None]) * scales[..., None]).reshape(rows, -1)


def weights_of(quantized: onnx.ModelProto, model: onnx.ModelProto, base: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The float64 weights the quantized file holds: every MatMulNBits and table dequantized by hand."""
    producers = {n.output[0]: n for n in model.graph.node}
    weight_of = {}
    for n in model.graph.node:
        if n.op_type in ("MatMul", "Gemm"):
            b = producers.get(n.input[1])
            weight_of[n.output[0]] = b.input[0] if b is not None and b.op_type == "Transpose" else n.input[1]
        if n.op_type == "Gather":
            weight_of[n.output[0]] = n.input[0]
    out = {k: v.astype(np.float64) for k, v in base.items()}
    if "lm_head" not in _inits(model):  # tied: the head is the table
        out["lm_head"] = out["embed"].T
    for node in nodes(quantized, "MatMulNBits"):
        key = weight_of[node.output[0]]
        out["lm_head" if key == "embed" else key] = dequantized(quantized, node).T
    for node in nodes(quantized, "GatherBlockQuantized"):
        key = next(k for k in ("embed", "pos") if node.input[1] == {"embed": "input_ids", "pos": "position_ids"}[k])
        out[key] = dequantized_table(quantized, node)[:, :HIDDEN]
    return out


def _quantize(model: onnx.ModelProto, **config: object) -> tuple[onnx.ModelProto, object]:
    result = quantize(model, WeightOnlyConfig(**config), QuantizeInputs(progress=False))  # type: ignore[arg-type]
    onnx.checker.check_model(result.model)
    return result.model, result.summary


@pytest.mark.parametrize("block_size, symmetric", [(16, True), (32, True), (16, False)])
def test_tied_table_is_stored_once_and_matches_reference(block_size: int, symmetric: bool) -> None:
    weights = random_weights(1)
    model = tied_decoder(weights)
    q, summary = _quantize(model, weights="int4", block_size=block_size, symmetric=symmetric, lm_head="int4")
    head, = nodes(q, "MatMulNBits")[-1:]
    lookup = next(n for n in q.graph.node if n.op_type == "GatherBlockQuantized" and n.input[1] == "input_ids")
    reshape = next(n for n in q.graph.node if n.output[0] == lookup.input[0])
    # One packed initializer, read by both ops; the float table is gone.
    assert reshape.op_type == "Reshape" and reshape.input[0] == head.input[1]
    assert lookup.input[2] == head.input[2] and lookup.input[3:] == head.input[3:]
    inits = _inits(q)
    assert "embed" not in inits and not any(n.op_type == "Transpose" and n.input[0] == "embed" for n in q.graph.node)
    table_bytes = len(inits[head.input[1]].raw_data)
    padded = -(-HIDDEN // block_size) * block_size
    assert table_bytes == weights["embed"].shape[0] * padded // 2
    # Whatever else the lookup reads is an int64 shape or slice bound; nothing unread is left in the file.
    extra = {*lookup.input, *reshape.input} - {*head.input, reshape.output[0], "input_ids"}
    assert extra and all(inits[name].data_type == TensorProto.INT64 and len(inits[name].raw_data) <= 16 for name in extra)
    read = {i for n in q.graph.node for i in n.input}
    assert set(inits) <= read
    # Logits against float64 over the file's own codes (the table dequantized once, used twice).
    reference = weights_of(q, model, weights)
    np.testing.assert_allclose(reference["lm_head"].T, reference["embed"])  # one table, used twice
    np.testing.assert_allclose(run(q), forward(reference, IDS), rtol=2e-3, atol=2e-3)
    assert any("stored once" in note for note in summary.notes)
    gather = next(d for d in summary.nodes if d.op_type == "Gather" and d.weight == "embed")
    assert gather.quantized and "stored once" in gather.scheme


def test_gemm_transb_tie_shares_too() -> None:
    weights = random_weights(2)
    model = tied_decoder(weights, gemm=True)
    q, summary = _quantize(model, weights="int4", block_size=16)
    head = next(n for n in nodes(q, "MatMulNBits") if n.name.startswith("lm_head"))
    lookup = next(n for n in nodes(q, "GatherBlockQuantized") if n.input[1] == "input_ids")
    assert next(n for n in q.graph.node if n.output[0] == lookup.input[0]).input[0] == head.input[1]
    np.testing.assert_allclose(run(q), forward(weights_of(q, model, weights), IDS, head_int8_block=16), rtol=2e-3, atol=2e-3)
    assert any("stored once" in note for note in summary.notes)


def test_int8_head_over_int4_body_stores_the_table_once_at_int8() -> None:
    weights = random_weights(3)
    model = tied_decoder(weights)
    q, summary = _quantize(model, weights="int4", block_size=16, lm_head="int8")
    bits = {n.output[0]: helper.get_attribute_value(next(a for a in n.attribute if a.name == "bits")) for n in nodes(q, "MatMulNBits")}
    assert bits.pop("logits") == 8 and set(bits.values()) == {4}
    head = next(d for d in summary.nodes if d.name == "lm_head")
    assert head.bits == 8 and head.scheme.startswith("int8")
    assert any("stored once" in n for n in summary.notes)
    # The Gather reads the head's int8 bytes (one initializer), and logits match the reference.
    head_node = next(n for n in nodes(q, "MatMulNBits") if n.output[0] == "logits")
    lookup = next(n for n in nodes(q, "GatherBlockQuantized") if n.input[1] == "input_ids")
    assert helper.get_attribute_value(next(a for a in lookup.attribute if a.name == "bits")) == 8
    assert next(n for n in q.graph.node if n.output[0] == lookup.input[0]).input[0] == head_node.input[1]
    table_bytes = [t for t in q.graph.initializer if t.name == head_node.input[1]]
    assert len(table_bytes) == 1 and table_bytes[0].data_type == TensorProto.UINT8
    np.testing.assert_allclose(run(q), forward(weights_of(q, model, weights), IDS, head_int8_block=16), rtol=2e-3, atol=2e-3)


def test_untied_int8_head_and_float_head() -> None:
    weights = random_weights(4)
    model = tiny_decoder(weights)
    q, summary = _quantize(model, weights="int4", block_size=16, lm_head="int8")
    assert next(d for d in summary.nodes if d.weight == "lm_head").bits == 8
    np.testing.assert_allclose(run(q), forward(weights_of(q, model, weights), IDS, head_int8_block=16), rtol=2e-3, atol=2e-3)
    model = tied_decoder(weights)
    q, summary = _quantize(model, weights="int4", block_size=16, lm_head="float")
    assert "embed" in _inits(q) and not any(n.input[1] == "input_ids" for n in nodes(q, "GatherBlockQuantized"))
    assert "--lm-head float" in next(d.reason for d in summary.left_in_float if d.name == "lm_head")
    assert "only add bytes" in next(d.reason for d in summary.left_in_float if d.op_type == "Gather" and d.weight == "embed")
    np.testing.assert_allclose(run(q), forward(weights_of(q, model, weights), IDS), rtol=2e-3, atol=2e-3)


def test_summary_lists_every_matmul_gemm_gather() -> None:
    model = tied_decoder(random_weights(5))
    _, summary = _quantize(model, weights="int4", block_size=16)
    listed = [d.name for d in summary.nodes]
    expected = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(model.graph.node) if n.op_type in ("MatMul", "Gemm", "Gather")]
    assert sorted(listed) == sorted(expected) and len(listed) == len(set(listed))
    assert all(d.quantized or d.reason for d in summary.nodes)


def test_lm_head_option_is_validated() -> None:
    assert WeightOnlyConfig(lm_head="INT8").lm_head == "int8"
    assert WeightOnlyConfig(lm_head="fp32").head_weights is None
    with pytest.raises(ConfigError, match="--lm-head"):
        WeightOnlyConfig(lm_head="int3")
    with pytest.raises(ConfigError, match="--lm-head nf4"):
        WeightOnlyConfig(lm_head="nf4", onnx_format="matmulnbits")


def test_cli_lm_head_int8_over_int4(tmp_path, capsys) -> None:
    from edgeq.cli import main

    weights = random_weights(6)
    source, out, summary_path = tmp_path / "tied.onnx", tmp_path / "q.onnx", tmp_path / "summary.json"
    onnx.save(tied_decoder(weights), str(source))
    assert main(["quantize", str(source), "-o", str(out), "--weights", "int4", "--block-size", "16",
                 "--lm-head", "int8", "--summary", str(summary_path), "--quiet"]) == 0
    data = json.loads(summary_path.read_text())["_data"]
    assert data["config"]["_data"]["lm_head"] == "int8"
    assert next(n for n in data["nodes"] if n["name"] == "lm_head")["bits"] == 8
    q = onnx.load(str(out))
    np.testing.assert_allclose(run(q), forward(weights_of(q, tied_decoder(weights), weights), IDS, head_int8_block=16), rtol=2e-3, atol=2e-3)
    assert main(["quantize", str(source), "-o", str(out), "--lm-head", "int3"]) == 2
    assert "--lm-head" in capsys.readouterr().err


def test_mixed_plan_treats_the_tied_table_as_one_matrix_stored_once() -> None:
    """``--budget`` on a tied decoder: the head and its lookup take one format, one copy, and the
    whole file fits the budget; onnxruntime's logits equal the float64 forward of the file's weights."""
    from edgeq.data import load_data
    from edgeq.quantize.config import MixedPrecisionConfig

    weights = random_weights(5)
    model = tied_decoder(weights)
    rng = np.random.default_rng(0)
    data = load_data({"input_ids": rng.integers(0, VOCAB, (16, 6)).astype(np.int64)}, model, batch_size=8)
    budget = int(model.ByteSize() * 0.6)
    config = MixedPrecisionConfig(budget_bytes=budget, candidates=("int4", "int8", "float"), block_size=16)
    result = quantize(model, config, QuantizeInputs(data=data))
    q, summary = result.model, result.summary
    assert q.ByteSize() <= budget
    head = next(d for d in summary.nodes if d.name == "lm_head")
    lookup = next(d for d in summary.nodes if d.op_type == "Gather" and d.weight == "embed")
    assert head.quantized and lookup.quantized and head.bits == lookup.bits
    assert "stored once" in lookup.scheme
    head_node = next(n for n in nodes(q, "MatMulNBits") if n.output[0] == "logits")
    gather = next(n for n in nodes(q, "GatherBlockQuantized") if n.input[1] == "input_ids")
    assert next(n for n in q.graph.node if n.output[0] == gather.input[0]).input[0] == head_node.input[1]
    assert "embed" not in _inits(q)  # the float table is gone: neither node reads it
    np.testing.assert_allclose(run(q), forward(weights_of(q, model, weights), IDS), rtol=2e-3, atol=2e-3)


def test_default_head_is_int8_over_a_4_bit_body_and_the_table_follows_it() -> None:
    weights = random_weights(6)
    q, summary = _quantize(tied_decoder(weights), weights="int4", block_size=16)
    head = next(d for d in summary.nodes if d.name == "lm_head")
    lookup = next(d for d in summary.nodes if d.op_type == "Gather" and d.weight == "embed")
    body = [d for d in summary.nodes if d.quantized and d.op_type == "MatMul" and d.name != "lm_head"]
    assert head.bits == 8 and lookup.bits == 8 and body and {d.bits for d in body} == {4.0}
    levels = {n.output[0]: {a.name: helper.get_attribute_value(a) for a in n.attribute}.get("accuracy_level", 0)
              for n in nodes(q, "MatMulNBits")}
    assert levels.pop("logits") == 4 and set(levels.values()) == {0}  # only the int8 head takes int8 activations
    np.testing.assert_allclose(run(q), forward(weights_of(q, tied_decoder(weights), weights), IDS, head_int8_block=16), rtol=2e-3, atol=2e-3)
