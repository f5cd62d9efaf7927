"""Small KV-cache decoder graphs written with onnx.helper, in the layout the decoder tools share.

``gqa_decoder`` uses the ops onnxruntime-genai's builder writes (``SimplifiedLayerNormalization``
in the default domain at opset 22, one packed QKV MatMul into ``GroupQueryAttention`` with rotary
caches, ``SkipSimplifiedLayerNormalization``) and onnxruntime runs it. ``plain_decoder`` is what an
exporter writes without contrib ops (no attention op: the KV tensors are Concat of past and the
new keys, attention itself is left out because the recognizer does not read it); it runs too.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


def _weight(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)


def _kv_io(layers: int, kv_heads: int | str, head_size: int | str,
           elem: int = FLOAT) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    past = [helper.make_tensor_value_info(f"past_key_values.{i}.{part}", elem, ["batch", kv_heads, "past", head_size])
            for i in range(layers) for part in ("key", "value")]
    present = [helper.make_tensor_value_info(f"present.{i}.{part}", elem, ["batch", kv_heads, "total", head_size])
               for i in range(layers) for part in ("key", "value")]
    return past, present


def gqa_decoder(layers: int = 2, heads: int = 4, kv_heads: int = 2, head_size: int = 16, vocab: int = 32,
                context: int = 64, seed: int = 0) -> onnx.ModelProto:
    """A builder-style decoder (GroupQueryAttention, rotary inside), untied LM head."""
    rng = np.random.default_rng(seed)
    hidden = heads * head_size
    nodes = [
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array([1], np.int64))),
        helper.make_node("ReduceSum", ["attention_mask", "one"], ["mask_sum"], keepdims=0),
        helper.make_node("Sub", ["mask_sum", "one"], ["seqlens_64"]),
        helper.make_node("Cast", ["seqlens_64"], ["seqlens_k"], to=TensorProto.INT32),
        helper.make_node("Shape", ["attention_mask"], ["mask_shape"]),
        helper.make_node("Constant", [], ["axis1"], value=numpy_helper.from_array(np.array(1, np.int64))),
        helper.make_node("Gather", ["mask_shape", "axis1"], ["total_64"], axis=0),
        helper.make_node("Cast", ["total_64"], ["total_len"], to=TensorProto.INT32),
        helper.make_node("Gather", ["embed", "input_ids"], ["h0"], name="embed_tokens"),
    ]
    positions = np.arange(context, dtype=np.float64)[:, None] / 10000 ** (np.arange(0, head_size, 2) / head_size)
    inits = [_weight(rng, "embed", vocab, hidden), _weight(rng, "lm_head", hidden, vocab),
             numpy_helper.from_array(np.cos(positions).astype(np.float32), "cos_cache"),
             numpy_helper.from_array(np.sin(positions).astype(np.float32), "sin_cache")]
    residual = "h0"
    for i in range(layers):
        norm = f"l{i}.norm"
        inits += [numpy_helper.from_array(np.ones(hidden, np.float32), f"{norm}.w"),
                  _weight(rng, f"l{i}.qkv", hidden, (heads + 2 * kv_heads) * head_size),
                  _weight(rng, f"l{i}.o", hidden, hidden)]
        if i == 0:
            nodes.append(helper.make_node("SimplifiedLayerNormalization", [residual, f"{norm}.w"], [norm],
                                          name=norm, epsilon=1e-6, axis=-1, stash_type=1))
        else:
            nodes.append(helper.make_node("SkipSimplifiedLayerNormalization", [residual, f"l{i - 1}.out", f"{norm}.w"],
                                          [norm, "", "", f"l{i}.residual"], name=norm, domain="com.microsoft",
                                          epsilon=1e-6))
            residual = f"l{i}.residual"
        nodes += [
            helper.make_node("MatMul", [norm, f"l{i}.qkv"], [f"l{i}.qkv_out"], name=f"l{i}.qkv_proj"),
            helper.make_node("GroupQueryAttention",
                             [f"l{i}.qkv_out", "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value",
                              "seqlens_k", "total_len", "cos_cache", "sin_cache"],
                             [f"l{i}.attn", f"present.{i}.key", f"present.{i}.value"], name=f"l{i}.gqa",
                             domain="com.microsoft", num_heads=heads, kv_num_heads=kv_heads, do_rotary=1),
            helper.make_node("MatMul", [f"l{i}.attn", f"l{i}.o"], [f"l{i}.out"], name=f"l{i}.o_proj"),
        ]
    inits.append(numpy_helper.from_array(np.ones(hidden, np.float32), "final.w"))
    nodes += [
        helper.make_node("SkipSimplifiedLayerNormalization", [residual, f"l{layers - 1}.out", "final.w"],
                         ["final"], name="final_norm", domain="com.microsoft", epsilon=1e-6),
        helper.make_node("MatMul", ["final", "lm_head"], ["logits"], name="lm_head"),
    ]
    past, present = _kv_io(layers, kv_heads, "head_dim")  # the builder leaves the head size symbolic
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]), *past]
    outputs = [helper.make_tensor_value_info("logits", FLOAT, ["batch", "seq", vocab]), *present]
    graph = helper.make_graph(nodes, "gqa_decoder", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22), helper.make_opsetid("com.microsoft", 1)],
                             ir_version=10)


def plain_decoder(layers: int = 2, kv_heads: int = 2, head_size: int = 8, vocab: int = 32, hidden: int = 32,
                  tie: str = "none", kv_elem: int = FLOAT, seed: int = 0) -> onnx.ModelProto:
    """An exporter-style decoder with static KV dims and position_ids.

    ``tie``: "none" (own LM head), "transpose" (MatMul on Transpose(embed)), "gemm" (Gemm transB=1
    on embed).
    """
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Gather", ["embed", "input_ids"], ["h"], name="embed_tokens")]
    inits = [_weight(rng, "embed", vocab, hidden),
             numpy_helper.from_array(np.array([0, 0, kv_heads, head_size], np.int64), "kv_shape")]
    cast = {} if kv_elem == FLOAT else {"to": kv_elem}
    for i in range(layers):
        for part in ("key", "value"):
            inits.append(_weight(rng, f"l{i}.{part}", hidden, kv_heads * head_size))
            new = f"l{i}.{part}.new"
            nodes += [
                helper.make_node("MatMul", ["h", f"l{i}.{part}"], [f"{new}.flat"]),
                helper.make_node("Reshape", [f"{new}.flat", "kv_shape"], [f"{new}.bshd"]),
                helper.make_node("Transpose", [f"{new}.bshd"], [new if not cast else f"{new}.f32"], perm=[0, 2, 1, 3]),
            ]
            if cast:
                nodes.append(helper.make_node("Cast", [f"{new}.f32"], [new], **cast))
            nodes.append(helper.make_node("Concat", [f"past_key_values.{i}.{part}", new], [f"present.{i}.{part}"], axis=2))
    if tie == "none":
        inits.append(_weight(rng, "lm_head", hidden, vocab))
        nodes.append(helper.make_node("MatMul", ["h", "lm_head"], ["logits"], name="lm_head"))
    elif tie == "transpose":
        nodes += [helper.make_node("Transpose", ["embed"], ["embed_t"], perm=[1, 0]),
                  helper.make_node("MatMul", ["h", "embed_t"], ["logits"], name="lm_head")]
    else:
        nodes += [helper.make_node("Reshape", ["h", "flat_shape"], ["h2"]),
                  helper.make_node("Gemm", ["h2", "embed"], ["logits2"], transB=1, name="lm_head"),
                  helper.make_node("Reshape", ["logits2", "logits_shape"], ["logits"])]
        inits += [numpy_helper.from_array(np.array([-1, hidden], np.int64), "flat_shape"),
                  numpy_helper.from_array(np.array([1, -1, vocab], np.int64), "logits_shape")]
    past, present = _kv_io(layers, kv_heads, head_size, kv_elem)
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]), *past]
    outputs = [helper.make_tensor_value_info("logits", FLOAT, ["batch", "seq", vocab]), *present]
    graph = helper.make_graph(nodes, "plain_decoder", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def kv_feeds(model: onnx.ModelProto, ids: np.ndarray, past: int = 0, head_size: int | None = None) -> dict[str, np.ndarray]:
    """Feeds for one step: ``past`` cached positions of zeros, an all-ones mask."""
    batch, seq = ids.shape
    feeds: dict[str, np.ndarray] = {"input_ids": ids, "attention_mask": np.ones((batch, past + seq), np.int64)}
    for value in model.graph.input:
        if value.name == "position_ids":
            feeds["position_ids"] = np.broadcast_to(np.arange(past, past + seq), (batch, seq)).astype(np.int64)
        if value.name.startswith("past_key_values."):
            dims = value.type.tensor_type.shape.dim
            dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
            size = dims[3].dim_value or head_size
            feeds[value.name] = np.zeros((batch, dims[1].dim_value, past, size), dtype)
    return feeds
