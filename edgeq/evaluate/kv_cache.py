"""Running a KV-cache decoder graph: teacher forcing in chunks, and greedy generation.

The layout is the one onnxruntime-genai and optimum write: inputs ``input_ids`` [batch, seq],
``attention_mask`` [batch, past+seq], ``position_ids`` [batch, seq] (optional) and
``past_key_values.N.key`` / ``.value`` [batch, kv_heads, past, head_size]; outputs ``logits``
[batch, seq, vocab] and ``present.N.key`` / ``.value`` [batch, kv_heads, past+seq, head_size].
A text of any length goes through in chunks, each chunk's ``present`` becoming the next one's
``past``, so memory is bounded by the chunk (and the cache), not the text.

``kv_layout`` asks ``edgeq.graph.decoder`` (the one recognizer) what the cache looks like.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx

from edgeq.errors import DataError
from edgeq.evaluate.compare import AccuracySession


@dataclass(frozen=True)
class KVLayout:
    """What it takes to feed an empty cache: layer count, cache head shape and dtype (int8 for
    a cache ``--kv-cache int8`` wrote), and what one more token costs in cache bytes."""

    layers: int
    kv_heads: int
    head_size: int
    dtype: type
    position_ids: bool
    bytes_per_token: int | None = None


def kv_layout(model: onnx.ModelProto) -> KVLayout | None:
    """The graph's KV-cache layout (from ``edgeq.graph.decoder``), or None when it is not a
    KV-cache decoder this runner can feed (it needs ``input_ids``, ``attention_mask``, ``logits``
    and concrete KV head counts and sizes)."""
    from edgeq.graph.decoder import describe_decoder
    from edgeq.graph.passes.base import to_ir

    inputs = {i.name for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    if not {"input_ids", "attention_mask"} <= inputs or "logits" not in outputs:
        return None
    info = describe_decoder(to_ir(model))
    if info is None or info.kv_heads is None or info.head_size is None:
        return None
    dtype = {"float": np.float32, "float16": np.float16, "int8": np.int8}.get(info.kv_dtype)
    if dtype is None:
        return None
    return KVLayout(info.layers, info.kv_heads, info.head_size, dtype, info.position_ids, info.kv_bytes_per_token)


class KVSession:
    """One decoder's onnxruntime session, run chunk by chunk with its cache carried along.

    ``extra_outputs`` are inner tensors (quantized layers' outputs) returned with the logits,
    for the per-layer error.
    """

    def __init__(self, model: onnx.ModelProto, layout: KVLayout, label: str, extra_outputs: list[str] | None = None) -> None:
        self.layout = layout
        self.label = label
        self.session = AccuracySession(model, list(extra_outputs or []), label)

    def empty_cache(self, batch: int) -> dict[str, np.ndarray]:
        shape = (batch, self.layout.kv_heads, 0, self.layout.head_size)
        return {
            f"past_key_values.{n}.{kind}": np.zeros(shape, self.layout.dtype)
            for n in range(self.layout.layers)
            for kind in ("key", "value")
        }

    def step(self, ids: np.ndarray, cache: dict[str, np.ndarray], past: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Run ``ids`` [batch, seq] after ``past`` cached tokens: (outputs, the next cache)."""
        batch, seq = ids.shape
        feeds = {
            "input_ids": ids.astype(np.int64, copy=False),
            "attention_mask": np.ones((batch, past + seq), np.int64),
            **cache,
        }
        if self.layout.position_ids:
            feeds["position_ids"] = np.broadcast_to(np.arange(past, past + seq, dtype=np.int64), (batch, seq)).copy()
        values = self.session.run(feeds)
        logits = values.get("logits")
        if logits is None or logits.shape[:2] != (batch, seq):
            shape = None if logits is None else logits.shape
            raise DataError(f"{self.label}: logits of shape {shape} for {seq} tokens; expected [batch, seq, vocab]")
        new_cache = {f"past_key_values.{n}.{kind}": values[f"present.{n}.{kind}"] for n in range(self.layout.layers) for kind in ("key", "value")}
        return values, new_cache

    def chunks(self, ids: np.ndarray, chunk: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Teacher forcing: (start, outputs) for each ``chunk``-token slice of ``ids`` [batch, T]."""
        cache = self.empty_cache(ids.shape[0])
        for start in range(0, ids.shape[1], chunk):
            values, cache = self.step(ids[:, start : start + chunk], cache, start)
            yield start, values

    def generate(self, prompts: np.ndarray, new_tokens: int, chunk: int) -> np.ndarray:
        """Greedy continuation [batch, new_tokens] of ``prompts`` [batch, P]; prompt read in chunks."""
        cache = self.empty_cache(prompts.shape[0])
        past = 0
        logits = np.empty(0)
        for start in range(0, prompts.shape[1], chunk):
            values, cache = self.step(prompts[:, start : start + chunk], cache, past)
            past += values["logits"].shape[1]
            logits = values["logits"]
        out = np.empty((prompts.shape[0], new_tokens), np.int64)
        for i in range(new_tokens):
            token = np.asarray(logits[:, -1, :]).argmax(axis=-1).astype(np.int64)
            out[:, i] = token
            if i + 1 < new_tokens:
                values, cache = self.step(token[:, None], cache, past)
                past += 1
                logits = values["logits"]
        return out

