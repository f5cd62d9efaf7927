"""Weights read through a ``DequantizeLinear`` in place: convolutions, recurrent layers, subgraphs.

MatMul/Gemm at the top level are replaced node by node (``weight_only``: MatMulNBits and the
others). Every other weight is handled here in the one way that works for any consumer: the
float constant is swapped for ``DequantizeLinear(codes, scales)`` and the consumer (a Conv, an
LSTM, a Gemm inside an ``If`` branch) reads the dequantized tensor where it read the float one.

Weights are traced back to their float sources: an initializer (the top level's, which
subgraphs read as outer-scope values), a ``Constant`` node (in whichever graph holds it), or
constants reached through data-movement ops only (``Unsqueeze``, ``Slice``, ``Concat``...: how
exporters build an LSTM's ``W`` from PyTorch's gate-ordered matrices). The source is
quantized once, however many consumers read it (both branches of an ``If`` share one), and the
movement ops stay: they move dequantized values instead of float ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.graph.formats import Emitted

# op type -> the input slots holding weights (LSTM/GRU/RNN: W and R; B stays float, it is small).
WEIGHT_SLOTS: dict[str, tuple[int, ...]] = {
    "Conv": (1,), "ConvTranspose": (1,), "MatMul": (1,), "Gemm": (1,), "LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2),
}
RECURRENT_OPS = ("LSTM", "GRU", "RNN")
# Ops a weight may pass through between its constant source and the consumer.
MOVEMENT_OPS = ("Identity", "Unsqueeze", "Squeeze", "Reshape", "Slice", "Concat", "Split", "Transpose", "Gather", "Flatten")
FLOAT_DTYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16)
_MAX_DEPTH = 16


@dataclass
class GraphSite:
    """A node and where it sits: ``subgraph`` is ``""`` at the top level, else e.g. ``If_1.then_branch``."""

    node: ir.Node
    graph: ir.Graph
    subgraph: str
    name: str


def walk(graph: ir.Graph, path: str = "") -> Iterator[GraphSite]:
    """Every node of ``graph`` and of the subgraphs inside it (``If`` branches, ``Loop``/``Scan`` bodies)."""
    for index, node in enumerate(graph):
        yield GraphSite(node, graph, path, node.name or f"{node.op_type}_{index}")
        for attr in node.attributes.values():
            inner: list[ir.Graph] = []
            if attr.type == ir.AttributeType.GRAPH:
                inner = [attr.as_graph()]
            elif attr.type == ir.AttributeType.GRAPHS:
                inner = list(attr.as_graphs())
            for sub in inner:
                label = f"{node.name or node.op_type}.{attr.name}"
                yield from walk(sub, f"{path} > {label}" if path else label)


@dataclass
class DqSource:
    """One float constant to quantize: how it is blocked, and who reads it."""

    value: ir.Value
    shape: tuple[int, ...]
    axis: int
    per_channel: bool  # one scale per index of ``axis``; else blocks along ``axis``
    op_type: str  # the first consumer's, which chose the layout
    consumers: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.value.name or ""

    @property
    def cols(self) -> int:
        """Length of the quantized rows (what a block size is checked against)."""
        return int(np.prod(self.shape)) // self.shape[self.axis] if self.per_channel else self.shape[self.axis]


@dataclass
class DqNode:
    """A consumer whose weights all come from planned sources."""

    name: str
    op_type: str
    subgraph: str
    sources: list[DqSource]
    through: list[str]  # movement ops between source and consumer ("" when read directly)


@dataclass
class DqLeft:
    name: str
    op_type: str
    subgraph: str
    reason: str
    weight: str = ""


@dataclass
class DqPlan:
    nodes: list[DqNode]
    left: list[DqLeft]

    @property
    def sources(self) -> list[DqSource]:
        unique: dict[int, DqSource] = {}
        for node in self.nodes:
            for source in node.sources:
                unique.setdefault(id(source), source)
        return list(unique.values())


def _is_float_constant(value: ir.Value) -> bool:
    if value.const_value is not None:
        return value.const_value.dtype in FLOAT_DTYPES
    producer = value.producer()
    if producer is None or producer.op_type != "Constant":
        return False
    attr = producer.attributes.get("value")
    return attr is not None and attr.type == ir.AttributeType.TENSOR and attr.as_tensor().dtype in FLOAT_DTYPES


def _constant_shape(value: ir.Value) -> tuple[int, ...]:
    if value.const_value is not None:
        return tuple(int(d) for d in value.const_value.shape.numpy())
    producer = value.producer()
    assert producer is not None
    return tuple(int(d) for d in producer.attributes["value"].as_tensor().shape.numpy())


def _is_any_constant(value: ir.Value) -> bool:
    producer = value.producer()
    return value.const_value is not None or (producer is not None and producer.op_type == "Constant")


def trace_sources(value: ir.Value, depth: int = 0) -> tuple[list[ir.Value], list[str]] | str:
    """The float constants ``value`` is computed from and the movement ops on the way, or why it is no weight."""
    if _is_float_constant(value):
        return [value], []
    if _is_any_constant(value):
        return [], []  # an integer constant (Slice starts, Reshape shape): part of the movement
    producer = value.producer()
    if producer is None:
        return "weight is a graph input (the caller feeds it)" if value.is_graph_input() else "weight has no producer"
    if producer.op_type not in MOVEMENT_OPS or depth > _MAX_DEPTH:
        return f"weight is computed by {producer.op_type}, not a constant"
    sources: list[ir.Value] = []
    through = [producer.op_type]
    for slot in producer.inputs:
        if slot is None:
            continue
        found = trace_sources(slot, depth + 1)
        if isinstance(found, str):
            return found
        sources.extend(found[0])
        through.extend(found[1])
    return sources, through


def _input(node: ir.Node, slot: int) -> ir.Value | None:
    return node.inputs[slot] if slot < len(node.inputs) else None


def _layout(node: ir.Node, slot: int, shape: tuple[int, ...]) -> tuple[int, bool] | str:
    """``(axis, per_channel)`` to quantize a weight of ``shape`` read by ``node`` at ``slot``, or why not."""
    rank = len(shape)
    op = node.op_type
    if rank < 2:
        return f"weight of rank {rank}: nothing per channel to scale"
    if op == "Conv":
        return 0, True  # output channels
    if op == "ConvTranspose":
        return (1, True) if node.attributes.get_int("group", 1) == 1 else (0, True)
    if op == "MatMul":
        return (0, False) if rank == 2 else f"MatMul weight of rank {rank} (batched constant) is not a [K, N] matrix"
    if op == "Gemm":
        return (1, False) if node.attributes.get_int("transB", 0) else (0, False)
    return rank - 1, False  # LSTM/GRU/RNN: [directions, gates * hidden, input or hidden], blocks along the input


def plan_dq_weights(
    model: ir.Model, top_level_ops: tuple[str, ...], exclude: str | None = None
) -> DqPlan:
    """Every node whose weight this module rewrites, and the weight-holding ones it cannot, with reasons.

    ``top_level_ops`` are the op types handled here at the top level (MatMul/Gemm there belong to
    the node-replacing rewriter); inside subgraphs every op of :data:`WEIGHT_SLOTS` is handled here.
    """
    pattern = re.compile(exclude) if exclude else None
    by_value: dict[int, DqSource] = {}
    nodes: list[DqNode] = []
    left: list[DqLeft] = []
    for site in walk(model.graph):
        node = site.node
        if node.op_type not in WEIGHT_SLOTS or node.domain not in ("", "ai.onnx"):
            continue
        if not site.subgraph and node.op_type not in top_level_ops:
            continue
        weight_names = ", ".join(v.name or "" for s in WEIGHT_SLOTS[node.op_type] if (v := _input(node, s)) is not None)
        if pattern is not None and pattern.search(site.name):
            left.append(DqLeft(site.name, node.op_type, site.subgraph, f"excluded by --exclude {exclude!r}", weight_names))
            continue
        planned: list[tuple[ir.Value, int, int, bool]] = []
        through: list[str] = []
        reason = None
        for slot in WEIGHT_SLOTS[node.op_type]:
            value = _input(node, slot)
            if value is None:
                reason = "missing weight input"
                break
            found = trace_sources(value)
            if isinstance(found, str):
                reason = found
                break
            sources, ops = found
            through.extend(ops)
            for source in sources:
                shape = _constant_shape(source)
                layout = _layout(node, slot, shape) if not ops or node.op_type in RECURRENT_OPS else (len(shape) - 1, False)
                if isinstance(layout, str):
                    reason = layout
                    break
                if int(np.prod(shape)) < 2:
                    continue
                planned.append((source, slot, *layout))
            if reason:
                break
        if reason is None and not planned:
            reason = "no float constant behind the weight"
        if reason is not None:
            left.append(DqLeft(site.name, node.op_type, site.subgraph, reason, weight_names))
            continue
        chosen = []
        for source, _slot, axis, per_channel in planned:
            existing = by_value.get(id(source))
            if existing is None:
                existing = DqSource(source, _constant_shape(source), axis, per_channel, node.op_type)
                by_value[id(source)] = existing
            existing.consumers.append(site.name)
            chosen.append(existing)
        nodes.append(DqNode(site.name, node.op_type, site.subgraph, chosen, sorted(set(through))))
    return DqPlan(nodes, left)


def source_array(source: DqSource) -> np.ndarray:
    """The float values of a planned source (one copy)."""
    value = source.value
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    assert producer is not None
    return producer.attributes["value"].as_tensor().numpy()


def rewrite_source(model: ir.Model, source: DqSource, emitted: Emitted, output: str) -> None:
    """Swap ``source`` for ``emitted`` (a DequantizeLinear and its initializers) for all its readers.

    Codes and scales become top-level initializers (subgraphs read them as outer-scope values);
    the DequantizeLinear goes where the source lives: first in the top-level graph for an
    initializer, right after its ``Constant`` node otherwise. The float tensor is then dropped.
    """
    graph = model.graph
    values: dict[str, ir.Value] = {}
    for tensor in emitted.initializers:
        wrapped = ir.serde.deserialize_tensor(tensor)
        value = ir.Value(name=tensor.name, type=ir.TensorType(wrapped.dtype), shape=ir.Shape(tensor.dims), const_value=wrapped)
        graph.register_initializer(value)
        values[tensor.name] = value
    (proto,) = emitted.nodes
    node = ir.Node(
        "", "DequantizeLinear", [values[name] for name in proto.input],
        [ir.serde.deserialize_attribute(a) for a in proto.attribute], num_outputs=1, name=proto.name,
    )
    node.outputs[0].name = output
    node.outputs[0].type = source.value.type
    node.outputs[0].shape = ir.Shape(source.shape)
    old = source.value
    producer = old.producer()
    if producer is not None:  # a Constant node: the DequantizeLinear right after it, in its graph
        owner = producer.graph
        assert owner is not None
        owner.insert_after(producer, node)
    else:
        first = next(iter(graph), None)
        if first is None:
            graph.append(node)
        else:
            graph.insert_before(first, node)
    was_output = old.is_graph_output()
    old.replace_all_uses_with(node.outputs[0])
    if was_output:
        raise ValueError(f"{source.name} is a graph output; it cannot be replaced")
    if producer is not None:
        owner = producer.graph
        assert owner is not None
        owner.remove(producer, safe=True)
    elif old.name and old.name in graph.initializers:
        graph.initializers.pop(old.name)


def non_weight_readers(source: DqSource) -> list[str]:
    """Readers of ``source`` that are neither planned consumers nor movement ops: it must stay float for them."""
    out = []
    for use in source.value.uses():
        node = use.node
        if node.op_type in MOVEMENT_OPS or node.op_type in WEIGHT_SLOTS:
            continue
        out.append(node.name or node.op_type)
    return out


def weight_bytes_all(model: onnx.ModelProto) -> int:
    """Bytes of every initializer and ``Constant`` tensor, top level and subgraphs."""
    from edgeq.graph.formats import _tensor_nbytes

    total = 0

    def visit(graph: onnx.GraphProto) -> None:
        nonlocal total
        total += sum(_tensor_nbytes(t) for t in graph.initializer)
        for node in graph.node:
            for attr in node.attribute:
                if node.op_type == "Constant" and attr.type == onnx.AttributeProto.TENSOR:
                    total += _tensor_nbytes(attr.t)
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)

    visit(model.graph)
    return total
