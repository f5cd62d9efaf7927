"""An int8 KV cache: past/present tensors stored as int8 with one scale per KV head.

A decoder's cache grows by ``2 x layers x kv_heads x head_size`` values per token and on a
board it, not the weights, bounds the context. Storing it as int8 halves it against float16
and quarters it against float32. The rewrite keeps the graph's layout (same names, same
shapes, only the element type changes), so a generation loop still feeds ``present`` from
step t as ``past`` at step t+1, unchanged:

- each ``past_key_values.N.key/value`` input becomes int8 and is read through one
  ``DequantizeLinear`` (``axis=1``: a scale per KV head, zero point 0) placed right after it;
- each ``present.N.key/value`` output becomes int8 through a ``QuantizeLinear`` with the same
  scale; nodes that read the float present inside the graph (attention) keep reading it.

Positions already in the cache round-trip exactly (``round(q * s / s) = q``), so a token's
cache entry is quantized once, when it is written. The scales must be known when the cache is
written, so they are static (``edgeq.quantize.kv_cache`` calibrates them); they are stored as
initializers and described in the model metadata ``edgeq.kv_cache`` (JSON: dtype, axis, the
scales per layer) for a runtime that allocates the cache itself.

Per-axis Q/DQ needs opset 13; a float16 cache needs opset 19 (float16 scales).
"""

from __future__ import annotations

import json
import re

import numpy as np
import onnx_ir as ir

from edgeq.errors import ConfigError
from edgeq.graph.passes.base import GraphPass, NameMaker, set_initializer, tidy

METADATA_KEY = "edgeq.kv_cache"
KV_AXIS = 1  # [batch, kv_heads, sequence, head_size]: one scale per KV head
_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_FLOATS = {ir.DataType.FLOAT: np.float32, ir.DataType.FLOAT16: np.float16}


def cache_inputs(model: ir.Model) -> list[str]:
    """Names of the ``past_key_values.N.key/value`` inputs, in graph order."""
    return [v.name for v in model.graph.inputs if v.name and _PAST.match(v.name)]


def present_name(past: str) -> str:
    """``past_key_values.3.key`` -> ``present.3.key``."""
    match = _PAST.match(past)
    if match is None:
        raise ValueError(f"{past} is not a past_key_values.N.key/value name")
    return f"present.{match.group(1)}.{match.group(2)}"


class KVCacheInt8(GraphPass):
    """Store the KV cache as int8; ``scales[past name]`` holds one float scale per KV head."""

    def __init__(self, scales: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.scales = scales

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        pasts = cache_inputs(model)
        if not pasts:
            raise ConfigError("--kv-cache int8: the model has no past_key_values.N.key/value inputs (no KV cache to store)")
        missing = [p for p in pasts if p not in self.scales]
        if missing:
            raise ConfigError(f"--kv-cache int8: no scale for {missing[0]}")
        opset = model.opset_imports.get("", 0)
        outputs = {v.name: i for i, v in enumerate(graph.outputs)}
        names = NameMaker(graph)
        layout: dict[str, list[float]] = {}
        for past_name in pasts:
            past = next(v for v in graph.inputs if v.name == past_name)
            present_index = outputs.get(present_name(past_name))
            if present_index is None:
                raise ConfigError(f"{present_name(past_name)}: missing output; --kv-cache int8 needs a present for every past")
            present = graph.outputs[present_index]
            float_type = _check_types(past, present, opset)
            scale = np.asarray(self.scales[past_name], _FLOATS[float_type]).reshape(-1)
            heads = past.shape[KV_AXIS] if past.shape is not None and len(past.shape) == 4 else None
            if isinstance(heads, int) and scale.size != heads:
                raise ConfigError(f"{past_name}: {scale.size} scales for {heads} KV heads")
            if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
                raise ConfigError(f"{past_name}: KV scales must be finite and positive")
            scale_value = set_initializer(graph, names(f"{past_name}.scale"), scale)
            zero = set_initializer(graph, names(f"{past_name}.zero_point"), np.zeros(scale.size, np.int8))
            self._dequantize_past(graph, names, past, scale_value, zero, float_type)
            self._quantize_present(graph, names, present, present_index, scale_value, zero)
            layout[past_name] = [float(s) for s in scale]
        model.metadata_props[METADATA_KEY] = json.dumps(
            {"dtype": "int8", "axis": KV_AXIS, "zero_point": 0, "float_dtype": float_type.name.lower(), "scales": layout},
            sort_keys=True)
        tidy(model)
        return ir.passes.PassResult(model, True)

    @staticmethod
    def _dequantize_past(graph: ir.Graph, names: NameMaker, past: ir.Value, scale: ir.Value, zero: ir.Value,
                         float_type: ir.DataType) -> None:
        dequantized = ir.Value(name=names(f"{past.name}.dequantized"), shape=past.shape, type=ir.TensorType(float_type))
        past.replace_all_uses_with(dequantized)
        past.type = ir.TensorType(ir.DataType.INT8)
        node = ir.node("DequantizeLinear", [past, scale, zero], {"axis": KV_AXIS}, outputs=[dequantized],
                       name=names(f"{past.name}_DequantizeLinear"))
        graph.append(node)  # tidy() sorts it before its readers

    @staticmethod
    def _quantize_present(graph: ir.Graph, names: NameMaker, present: ir.Value, index: int, scale: ir.Value,
                          zero: ir.Value) -> None:
        name = present.name or ""
        quantized = ir.Value(name=name, shape=present.shape, type=ir.TensorType(ir.DataType.INT8))
        present.name = names(f"{name}.float")  # readers inside the graph keep the float value
        graph.append(ir.node("QuantizeLinear", [present, scale, zero], {"axis": KV_AXIS}, outputs=[quantized],
                             name=names(f"{name}_QuantizeLinear")))
        graph.outputs[index] = quantized


def _check_types(past: ir.Value, present: ir.Value, opset: int) -> ir.DataType:
    """The cache's float type, refused in one line when Q/DQ cannot carry it at this opset."""
    if past.dtype == ir.DataType.INT8:
        raise ConfigError(f"{past.name}: the KV cache is int8 already")
    if past.dtype not in _FLOATS or present.dtype != past.dtype:
        raise ConfigError(f"{past.name}: KV cache of type {past.dtype} / {present.dtype}; --kv-cache int8 takes a float32 or float16 cache")
    if opset < 13:
        raise ConfigError(f"--kv-cache int8: opset {opset}; per-head QuantizeLinear/DequantizeLinear need opset 13 or later")
    if past.dtype == ir.DataType.FLOAT16 and opset < 19:
        raise ConfigError(f"--kv-cache int8: a float16 cache needs opset 19 (float16 Q/DQ scales), the model has {opset}")
    return past.dtype
