"""A tiny random KV-cache decoder in the onnxruntime-genai layout, written with onnx.helper.

One attention layer with grouped-query attention (2 query heads share 1 KV head), learned
position embeddings, a ReLU MLP and an untied LM head; ``forward`` is the same network in numpy
float64, over the whole sequence at once, as the independent reference.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VOCAB, HIDDEN, HEADS, KV_HEADS, HEAD, MLP, MAX_POS = 32, 16, 2, 1, 8, 32, 128
WEIGHT_SHAPES = {
    "embed": (VOCAB, HIDDEN),
    "pos": (MAX_POS, HIDDEN),
    "wq": (HIDDEN, HEADS * HEAD),
    "wk": (HIDDEN, KV_HEADS * HEAD),
    "wv": (HIDDEN, KV_HEADS * HEAD),
    "wo": (HEADS * HEAD, HIDDEN),
    "w1": (HIDDEN, MLP),
    "w2": (MLP, HIDDEN),
    "lm_head": (HIDDEN, VOCAB),
}


def random_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    scale = {"embed": 1.0, "pos": 1.0, "lm_head": 0.15}
    return {k: (rng.standard_normal(s) * scale.get(k, 0.3)).astype(np.float32) for k, s in WEIGHT_SHAPES.items()}


def _const(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def tiny_decoder(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    n = helper.make_node
    nodes = [
        n("Gather", ["embed", "input_ids"], ["tok"]),
        n("Gather", ["pos", "position_ids"], ["posv"]),
        n("Add", ["tok", "posv"], ["x"]),
        n("MatMul", ["x", "wq"], ["q2"]),
        n("MatMul", ["x", "wk"], ["k2"]),
        n("MatMul", ["x", "wv"], ["v2"]),
        n("Reshape", ["q2", "q_shape"], ["q3"]),
        n("Transpose", ["q3"], ["q"], perm=[0, 2, 1, 3]),
        n("Reshape", ["k2", "kv_shape"], ["k3"]),
        n("Transpose", ["k3"], ["k"], perm=[0, 2, 1, 3]),
        n("Reshape", ["v2", "kv_shape"], ["v3"]),
        n("Transpose", ["v3"], ["v"], perm=[0, 2, 1, 3]),
        n("Concat", ["past_key_values.0.key", "k"], ["present.0.key"], axis=2),
        n("Concat", ["past_key_values.0.value", "v"], ["present.0.value"], axis=2),
        n("Transpose", ["present.0.key"], ["kt"], perm=[0, 1, 3, 2]),
        n("MatMul", ["q", "kt"], ["raw_scores"]),  # [B, H, S, T]: the KV head broadcasts over the query heads
        n("Mul", ["raw_scores", "scale"], ["scores"]),
        # causal mask: query i (absolute position past + i) sees keys j <= past + i, where the mask is 1
        n("Shape", ["present.0.key"], ["kshape"]),
        n("Gather", ["kshape", "two"], ["total"]),
        n("Shape", ["input_ids"], ["ishape"]),
        n("Gather", ["ishape", "one"], ["seq"]),
        n("Sub", ["total", "seq"], ["past"]),
        n("Range", ["zero", "total", "one"], ["key_pos"]),
        n("Range", ["past", "total", "one"], ["query_pos"]),
        n("Unsqueeze", ["query_pos", "one_axis"], ["query_col"]),
        n("LessOrEqual", ["key_pos", "query_col"], ["causal"]),  # [S, T]
        n("Cast", ["attention_mask"], ["mask_bool"], to=TensorProto.BOOL),
        n("Unsqueeze", ["mask_bool", "mask_axes"], ["mask4"]),  # [B, 1, 1, T]
        n("And", ["causal", "mask4"], ["allowed"]),
        n("Where", ["allowed", "scores", "neg"], ["masked"]),
        n("Softmax", ["masked"], ["probs"], axis=-1),
        n("MatMul", ["probs", "present.0.value"], ["ctx"]),
        n("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        n("Reshape", ["ctx_t", "h_shape"], ["ctx2"]),
        n("MatMul", ["ctx2", "wo"], ["attn"]),
        n("Add", ["x", "attn"], ["h1"]),
        n("MatMul", ["h1", "w1"], ["up"]),
        n("Relu", ["up"], ["act"]),
        n("MatMul", ["act", "w2"], ["down"]),
        n("Add", ["h1", "down"], ["h2"]),
        n("MatMul", ["h2", "lm_head"], ["logits"]),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()] + [
        _const("q_shape", [0, 0, HEADS, HEAD]),
        _const("kv_shape", [0, 0, KV_HEADS, HEAD]),
        _const("h_shape", [0, 0, HEADS * HEAD]),
        numpy_helper.from_array(np.asarray(2, np.int64), "two"),
        numpy_helper.from_array(np.asarray(1, np.int64), "one"),
        numpy_helper.from_array(np.asarray(0, np.int64), "zero"),
        _const("one_axis", [1]),
        _const("mask_axes", [1, 2]),
        numpy_helper.from_array(np.asarray(1 / np.sqrt(HEAD), np.float32), "scale"),
        numpy_helper.from_array(np.asarray(-1e9, np.float32), "neg"),
    ]
    cache = ["batch", KV_HEADS, "past", HEAD]
    present = ["batch", KV_HEADS, "total", HEAD]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("past_key_values.0.key", TensorProto.FLOAT, cache),
        helper.make_tensor_value_info("past_key_values.0.value", TensorProto.FLOAT, cache),
    ]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", VOCAB]),
        helper.make_tensor_value_info("present.0.key", TensorProto.FLOAT, present),
        helper.make_tensor_value_info("present.0.value", TensorProto.FLOAT, present),
    ]
    graph = helper.make_graph(nodes, "tiny_decoder", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def with_int8_weights(model: onnx.ModelProto, names: tuple[str, ...], step: float) -> onnx.ModelProto:
    """A copy whose ``names`` weights are int8 through DequantizeLinear with a coarse ``step``:
    a quantized candidate, so its MatMuls are the layers the comparison reports."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    for name in names:
        w = numpy_helper.to_array(inits[name])
        q = np.clip(np.round(w / step), -127, 127).astype(np.int8)
        inits[name].CopyFrom(numpy_helper.from_array(q, f"{name}_q"))
        out.graph.initializer.append(numpy_helper.from_array(np.asarray(step, np.float32), f"{name}_scale"))
        out.graph.node.insert(0, helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale"], [name]))
    onnx.checker.check_model(out)
    return out


def int8_activations(x: np.ndarray, block: int) -> np.ndarray:
    """``x`` as MatMulNBits with accuracy_level 4 reads it: each block of ``block`` values along the
    last axis rounded to int8 steps of its absmax / 127 (float64; checked against onnxruntime to 4e-6)."""
    k = x.shape[-1]
    padded = np.zeros((*x.shape[:-1], -(-k // block) * block))
    padded[..., :k] = x
    blocks = padded.reshape(*x.shape[:-1], -1, block)
    scale = np.abs(blocks).max(axis=-1, keepdims=True) / 127.0
    steps = np.divide(blocks, scale, out=np.zeros_like(blocks), where=scale > 0)
    return (np.round(steps) * scale).reshape(padded.shape)[..., :k]


def forward(weights: dict[str, np.ndarray], ids: np.ndarray, head_int8_block: int | None = None) -> np.ndarray:
    """The decoder over whole sequences [B, T] in float64, no cache: logits [B, T, VOCAB].

    ``head_int8_block``: the LM head reads its input as int8 blocks (an int8 MatMulNBits head at
    accuracy_level 4, see :func:`int8_activations`)."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    batch, length = ids.shape
    x = w["embed"][ids] + w["pos"][np.arange(length)][None]
    q = (x @ w["wq"]).reshape(batch, length, HEADS, HEAD).transpose(0, 2, 1, 3)
    k = (x @ w["wk"]).reshape(batch, length, KV_HEADS, HEAD).transpose(0, 2, 1, 3)
    v = (x @ w["wv"]).reshape(batch, length, KV_HEADS, HEAD).transpose(0, 2, 1, 3)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(HEAD)
    scores = np.where(np.tril(np.ones((length, length), bool)), scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, HEADS * HEAD)
    h1 = x + ctx @ w["wo"]
    h2 = h1 + np.maximum(h1 @ w["w1"], 0) @ w["w2"]
    if head_int8_block is not None:
        h2 = int8_activations(h2, head_int8_block)
    return h2 @ w["lm_head"]
