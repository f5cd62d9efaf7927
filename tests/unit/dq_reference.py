"""An independent reference for graphs whose weights edgeq wrote as DequantizeLinear.

Every ``DequantizeLinear`` with constant inputs (in the top-level graph or any subgraph) is
replaced by a ``Constant`` holding the weight dequantized here in numpy float64 from the stored
codes, scales and zero points, following the ONNX definition (per-axis and blocked). The
quantized file must then compute exactly what this float graph computes.
"""

from __future__ import annotations

import numpy as np
import onnx
from int8_graphs import run
from onnx import helper, numpy_helper

__all__ = ["count_ops", "reference_model", "run"]  # run: onnxruntime with every optimization, as deployed


def dequantize(codes: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int, block: int) -> np.ndarray:
    q = codes.astype(np.float64) - (0.0 if zero is None else _expand(zero.astype(np.float64), codes.shape, axis, block))
    return q * _expand(scale.astype(np.float64), codes.shape, axis, block)


def _expand(values: np.ndarray, shape: tuple[int, ...], axis: int, block: int) -> np.ndarray:
    if values.ndim == 0:
        return values
    if block:  # blocked: values has the weight's rank, ceil(shape[axis] / block) along axis
        return np.repeat(values, block, axis=axis).take(np.arange(shape[axis]), axis=axis)
    view = [1] * len(shape)
    view[axis] = -1
    return values.reshape(view)


def _constants(graph: onnx.GraphProto, outer: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    known = dict(outer)
    known.update({t.name: numpy_helper.to_array(t) for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            known[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return known


def substitute(graph: onnx.GraphProto, outer: dict[str, np.ndarray] | None = None) -> int:
    """Replace every constant DequantizeLinear in ``graph`` (and its subgraphs) by its numpy value."""
    known = _constants(graph, outer or {})
    replaced = 0
    nodes = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and all(name in known for name in node.input if name):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            zero = known[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            value = dequantize(known[node.input[0]], known[node.input[1]], zero, int(attrs.get("axis", 1)), int(attrs.get("block_size", 0)))
            dtype = known[node.input[1]].dtype
            nodes.append(helper.make_node("Constant", [], [node.output[0]], value=numpy_helper.from_array(value.astype(dtype))))
            replaced += 1
            continue
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                replaced += substitute(attr.g, known)
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return replaced


def reference_model(quantized: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``quantized`` with every weight DequantizeLinear folded in numpy."""
    model = onnx.ModelProto()
    model.CopyFrom(quantized)
    count = substitute(model.graph)
    return model, count


def count_ops(graph: onnx.GraphProto, op_type: str) -> int:
    total = 0
    for node in graph.node:
        total += node.op_type == op_type
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                total += count_ops(attr.g, op_type)
    return total
