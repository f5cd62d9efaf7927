"""Recognise a KV-cache decoder and say what it is: the facts that size it on a board.

The layout onnxruntime-genai's builder, optimum and edgeq's exporter share: inputs
``past_key_values.N.key`` / ``.value`` [batch, kv_heads, past, head_size], outputs ``logits``
[batch, seq, vocab] and ``present.N.key`` / ``.value`` [batch, kv_heads, past+seq, head_size].
A past tensor without its present (or the other way round), or a pair whose shapes disagree,
is a graph no generation loop can drive, so it is refused with the tensor's name.

Each fact comes from the first place that states it and ``sources`` says which: the KV tensors'
static dims, the attention node's attributes (``GroupQueryAttention``, ``MultiHeadAttention``,
opset-23 ``Attention``), ``genai_config.json`` beside the model, the model's metadata, or
arithmetic on weight shapes (named as such). A fact nothing states is None, never a guess.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx_ir as ir

from edgeq.errors import ConfigError
from edgeq.serialization import Serializable

_KV = re.compile(r"^(past_key_values|present)\.(\d+)\.(key|value)$")
# Attention ops that carry their head counts as attributes: (domain, op) -> (heads, kv heads) names.
_ATTENTION_ATTRS = {
    ("com.microsoft", "GroupQueryAttention"): ("num_heads", "kv_num_heads"),
    ("com.microsoft", "MultiHeadAttention"): ("num_heads", "num_heads"),
    ("", "Attention"): ("q_num_heads", "kv_num_heads"),
}
# Nodes between the LM head and ``logits`` that do not change which weight the logits come from.
_PASS_THROUGH = {"Cast", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Tanh", "Mul", "Div", "Softcap"}
_CONTEXT_METADATA = ("context_length", "max_position_embeddings", "max_seq_len", "n_ctx")


@dataclass
class DecoderInfo(Serializable):
    """A KV-cache decoder's shape: what the cache costs per token and what the graph can hold."""

    schema_type = "edgeq.DecoderInfo"
    schema_version = 1

    layers: int
    kv_heads: int | None
    head_size: int | None
    attention_heads: int | None
    vocab_size: int | None
    tied_embeddings: bool | None
    context_length: int | None
    kv_dtype: str
    kv_bytes_per_token: int | None
    position_ids: bool
    sources: dict[str, str] = field(default_factory=dict)

    def format_line(self) -> str:
        """``decoder: 2 layers, 4 heads / 2 KV heads (GQA), ...`` for ``edgeq inspect``."""
        def known(value: Any) -> str:
            return "?" if value is None else str(value)

        heads = f"{known(self.attention_heads)} heads / {known(self.kv_heads)} KV heads"
        if self.attention_heads and self.kv_heads and self.kv_heads < self.attention_heads:
            heads += " (GQA)" if self.kv_heads > 1 else " (MQA)"
        tied = {True: "tied to the LM head", False: "not tied", None: "tie unknown"}[self.tied_embeddings]
        kv = "?" if self.kv_bytes_per_token is None else f"{self.kv_bytes_per_token:,} B"
        return (f"decoder: {self.layers} layers, {heads}, head size {known(self.head_size)}, "
                f"vocabulary {known(self.vocab_size)} (embedding {tied}), context {known(self.context_length)}, "
                f"KV cache {self.kv_dtype} {kv}/token")


def _dim(value: ir.Value, axis: int) -> int | None:
    shape = value.shape
    dim = shape[axis] if shape is not None and len(shape) > axis else None
    return int(dim) if isinstance(dim, int) else None


def _kv_pairs(graph: ir.Graph) -> dict[int, dict[str, ir.Value]]:
    """layer -> {"past.key": value, "present.value": value, ...}; refuses what does not pair up."""
    found: dict[int, dict[str, ir.Value]] = {}
    for value in [*graph.inputs, *graph.outputs]:
        match = _KV.match(value.name or "")
        if match:
            kind, layer, part = match.groups()
            found.setdefault(int(layer), {})[f"{'past' if kind == 'past_key_values' else 'present'}.{part}"] = value
    if not found:
        return {}
    names = {"past.key": "past_key_values.{}.key", "past.value": "past_key_values.{}.value",
             "present.key": "present.{}.key", "present.value": "present.{}.value"}
    for layer in range(max(found) + 1):
        have = found.get(layer, {})
        for slot, pattern in names.items():
            if slot not in have:
                where = "input" if slot.startswith("past") else "output"
                raise ConfigError(f"{pattern.format(layer)}: missing {where}; a KV-cache decoder needs "
                                  f"past_key_values.N.key/value inputs and present.N.key/value outputs for "
                                  f"every layer 0..{max(found)}")
        for part in ("key", "value"):
            past, present = have[f"past.{part}"], have[f"present.{part}"]
            _check_pair(past, present)
    return found


def _check_pair(past: ir.Value, present: ir.Value) -> None:
    for value in (past, present):
        if value.shape is not None and len(value.shape) != 4:
            raise ConfigError(f"{value.name}: rank {len(value.shape)}, expected [batch, kv_heads, sequence, head_size]")
    if past.dtype != present.dtype:
        raise ConfigError(f"{present.name}: {present.dtype} does not match {past.name} ({past.dtype})")
    for axis, what in ((1, "KV heads"), (3, "head size")):
        a, b = _dim(past, axis), _dim(present, axis)
        if a is not None and b is not None and a != b:
            raise ConfigError(f"{present.name}: {what} {b} does not match {past.name} ({a})")


def _attention_heads(graph: ir.Graph) -> tuple[int | None, int | None, str]:
    for node in ir.traversal.RecursiveGraphIterator(graph):
        names = _ATTENTION_ATTRS.get((node.domain or "", node.op_type))
        if names is not None and names[0] in node.attributes:
            heads = node.attributes[names[0]].as_int()
            kv = node.attributes[names[1]].as_int() if names[1] in node.attributes else None
            return heads, kv, f"{node.op_type} attributes"
    return None, None, ""


def _genai_config(folder: Path | None) -> dict[str, Any]:
    """model section of genai_config.json beside the model (onnxruntime-genai writes it)."""
    if folder is None or not (folder / "genai_config.json").is_file():
        return {}
    try:
        model = json.loads((folder / "genai_config.json").read_text(encoding="utf-8")).get("model", {})
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ConfigError(f"{folder / 'genai_config.json'}: not valid JSON ({exc})") from None
    if not isinstance(model, dict):
        return {}
    decoder = model.get("decoder", {}) if isinstance(model.get("decoder"), dict) else {}
    return {**decoder, **{k: v for k, v in model.items() if not isinstance(v, dict)}}


def _embedding(graph: ir.Graph) -> ir.Value | None:
    """The table a Gather reads with ``input_ids`` (through a Cast at most)."""
    ids = next((v for v in graph.inputs if v.name == "input_ids"), None)
    if ids is None:
        return None
    readers = [u.node for u in ids.uses()]
    readers += [u.node for n in readers if n.op_type == "Cast" for u in n.outputs[0].uses()]
    for node in readers:
        if node.op_type == "Gather" and node.inputs[0] is not None and node.inputs[0].is_initializer():
            return node.inputs[0]
    return None


def lm_head_node(graph: ir.Graph) -> ir.Node | None:
    """The MatMul/Gemm the ``logits`` output comes from (through casts, reshapes, softcaps)."""
    logits = next((v for v in graph.outputs if v.name == "logits"), None)
    node = logits.producer() if logits is not None else None
    while node is not None and node.op_type in _PASS_THROUGH and node.inputs and node.inputs[0] is not None:
        node = node.inputs[0].producer()
    if node is None or node.op_type not in ("MatMul", "Gemm") or len(node.inputs) < 2 or node.inputs[1] is None:
        return None
    return node


def _lm_head(graph: ir.Graph) -> tuple[ir.Value, bool] | None:
    """(weight, applied transposed) of the MatMul/Gemm the logits come from."""
    node = lm_head_node(graph)
    if node is None or node.inputs[1] is None:
        return None
    weight = node.inputs[1]
    transposed = node.op_type == "Gemm" and "transB" in node.attributes and node.attributes["transB"].as_int() == 1
    producer = weight.producer()
    if producer is not None and producer.op_type == "Transpose" and producer.inputs[0] is not None:
        weight, transposed = producer.inputs[0], not transposed
    return weight, transposed


def _tied(graph: ir.Graph, table: ir.Value | None) -> tuple[bool | None, str]:
    head = _lm_head(graph)
    if table is None or head is None:
        return None, ""
    weight, transposed = head
    if weight is table and transposed:
        return True, f"LM head reads {table.name} transposed"
    return False, f"LM head reads {weight.name or 'a computed weight'}, embedding {table.name}"


def describe_decoder(model: ir.Model, folder: Path | None = None) -> DecoderInfo | None:
    """The decoder facts of ``model``, or None when it has no KV-cache inputs or outputs.

    ``folder`` is where the model file is, for ``genai_config.json``. Raises ``ConfigError``
    naming the tensor when past and present do not pair up, or the config contradicts the graph.
    """
    graph = model.graph
    pairs = _kv_pairs(graph)
    if not pairs:
        return None
    sources: dict[str, str] = {}
    config = _genai_config(folder)
    key0 = pairs[0]["past.key"]
    heads, kv_attr, attention_source = _attention_heads(graph)

    def fact(name: str, *candidates: tuple[Any, str]) -> Any:
        for value, source in candidates:
            if value is not None:
                sources[name] = source
                return int(value)
        return None

    kv_heads = fact("kv_heads", (_dim(key0, 1), f"{key0.name} shape"), (kv_attr, attention_source),
                    (config.get("num_key_value_heads"), "genai_config.json"))
    attention_heads = fact("attention_heads", (heads, attention_source),
                           (config.get("num_attention_heads"), "genai_config.json"))
    head_size = fact("head_size", (_dim(key0, 3), f"{key0.name} shape"), (config.get("head_size"), "genai_config.json"),
                     _packed_head_size(graph, attention_heads, kv_heads))
    layers = len(pairs)
    for name, value in (("num_hidden_layers", layers), ("num_key_value_heads", kv_heads), ("head_size", head_size),
                        ("num_attention_heads", attention_heads)):
        stated = config.get(name)
        if stated is not None and value is not None and int(stated) != value:
            raise ConfigError(f"genai_config.json: {name} is {stated}, but the graph's KV tensors say {value}")
    table = _embedding(graph)
    logits = next((v for v in graph.outputs if v.name == "logits"), None)
    vocab = fact("vocab_size", (_dim(logits, 2) if logits is not None else None, "logits shape"),
                 (table.shape[0] if table is not None and table.shape is not None else None, "embedding table rows"),
                 (config.get("vocab_size"), "genai_config.json"))
    tied, tied_source = _tied(graph, table)
    if tied_source:
        sources["tied_embeddings"] = tied_source
    metadata = next(((int(model.metadata_props[k]), f"metadata {k}") for k in _CONTEXT_METADATA
                     if model.metadata_props.get(k, "").strip().isdigit()), (None, ""))
    context = fact("context_length", (config.get("context_length"), "genai_config.json"), metadata,
                   *_rotary_rows(graph))
    per_token = _kv_bytes(pairs, kv_heads, head_size)
    if per_token is not None:
        sources["kv_bytes_per_token"] = "sum over the past key/value tensors of KV heads x head size x dtype bytes"
    return DecoderInfo(
        layers=layers, kv_heads=kv_heads, head_size=head_size, attention_heads=attention_heads,
        vocab_size=vocab, tied_embeddings=tied, context_length=context,
        kv_dtype=key0.dtype.name.lower() if key0.dtype is not None else "unknown",
        kv_bytes_per_token=per_token, position_ids=any(v.name == "position_ids" for v in graph.inputs),
        sources=sources,
    )


def _rotary_rows(graph: ir.Graph) -> list[tuple[int | None, str]]:
    """The rotary cos cache's rows bound the positions the graph can encode (the builder's cos_cache)."""
    cache = graph.initializers.get("cos_cache")
    if cache is None or cache.shape is None or not isinstance(cache.shape[0], int):
        return []
    return [(int(cache.shape[0]), "cos_cache rows")]


def _packed_head_size(graph: ir.Graph, heads: int | None, kv_heads: int | None) -> tuple[int | None, str]:
    """GroupQueryAttention on one packed QKV MatMul: its width is (heads + 2 x KV heads) x head size."""
    if not heads or not kv_heads:
        return None, ""
    for node in ir.traversal.RecursiveGraphIterator(graph):
        if node.op_type != "GroupQueryAttention" or len(node.inputs) < 2 or node.inputs[1] is not None:
            continue
        qkv = node.inputs[0].producer() if node.inputs[0] is not None else None
        width = None
        if qkv is not None and qkv.op_type == "MatMul" and qkv.inputs[1] is not None and qkv.inputs[1].is_initializer():
            width = _dim(qkv.inputs[1], 1)
        elif qkv is not None and qkv.op_type == "MatMulNBits" and "N" in qkv.attributes:  # weight-only quantized
            width = qkv.attributes["N"].as_int()
        if width is not None and width % (heads + 2 * kv_heads) == 0:
            return width // (heads + 2 * kv_heads), f"packed QKV width {width} / ({heads} + 2 x {kv_heads}) heads"
    return None, ""


def _kv_bytes(pairs: dict[int, dict[str, ir.Value]], kv_heads: int | None, head_size: int | None) -> int | None:
    """Cache bytes one more token costs: 2 x layers x KV heads x head size x dtype bytes, summed per tensor."""
    total = 0.0
    for layer in pairs.values():
        for slot in ("past.key", "past.value"):
            value = layer[slot]
            heads, size = _dim(value, 1) or kv_heads, _dim(value, 3) or head_size
            if heads is None or size is None or value.dtype is None:
                return None
            total += heads * size * value.dtype.itemsize
    return int(total)
