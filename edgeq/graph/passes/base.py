"""Graph rewrites on onnx-ir: the pass base class and the few questions every rewrite asks.

A rewrite is an ``onnx_ir.passes.InPlacePass`` (``call(ir.Model) -> PassResult``), so it chains
in onnx-ir's ``PassManager`` with onnx-ir's own passes (unused-node removal, topological sort)
and gets their pre/post-condition checks. The schemes and exporters hold ``onnx.ModelProto``;
:meth:`GraphPass.apply` converts at that boundary (cheap: a 500 MB model round-trips in
about 0.14 s) and writes the result back into the caller's proto.

The helpers answer what onnx-ir does not answer directly: the numpy value of a constant
(initializer or ``Constant`` node), the one reader of a value, names that cannot collide with
the user's, and new initializers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes import common as ir_common

from edgeq.graph.names import FreshNames, unique_node_names


class GraphPass(ir.passes.InPlacePass):
    """An in-place rewrite of an ``ir.Model``; subclasses implement ``call``.

    ``apply`` runs it on a protobuf model for callers that hold one.
    """

    def apply(self, model: onnx.ModelProto) -> bool:
        """Run the pass on ``model`` (converted to onnx-ir and back in place); True if it changed."""
        result = self(ir.serde.deserialize_model(model))
        if result.modified:
            serialize_into(model, result.model, {info.name for info in model.graph.value_info})
        return result.modified


def serialize_into(proto: onnx.ModelProto, model: ir.Model, described: set[str]) -> None:
    """Write ``model`` over ``proto`` (in place), keeping ``value_info`` of initializers only for
    the names in ``described`` (those the protobuf model described before it was converted)."""
    proto.CopyFrom(ir.serde.serialize_model(model))
    _drop_initializer_value_info(proto.graph, described)


def _drop_initializer_value_info(graph: onnx.GraphProto, keep: set[str]) -> None:
    """onnx-ir writes a ``value_info`` for every initializer; keep only those the input had (an
    initializer's type is in the tensor already, and files should not grow by a round trip)."""
    initializers = {t.name for t in graph.initializer}
    infos = [i for i in graph.value_info if i.name not in initializers or i.name in keep]
    if len(infos) != len(graph.value_info):
        del graph.value_info[:]
        graph.value_info.extend(infos)


def to_ir(model: onnx.ModelProto | ir.Model) -> ir.Model:
    """``model`` as onnx-ir (a protobuf model is converted; an ``ir.Model`` is returned as it is)."""
    return ir.serde.deserialize_model(model) if isinstance(model, onnx.ModelProto) else model


def tidy(model: ir.Model, sort: bool = True) -> None:
    """After a rewrite: drop what no longer feeds an output, and put nodes back in topological
    order when new ones were appended (onnx-ir's common passes)."""
    passes: list[ir.passes.PassBase] = [ir_common.RemoveUnusedNodesPass()]
    if sort:
        passes.insert(0, ir_common.TopologicalSortPass())
    ir.passes.PassManager(passes)(model)


def constant(value: ir.Value | None) -> np.ndarray | None:
    """The numpy value of an initializer or of a ``Constant`` node's output, else None."""
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    node = value.producer()
    if node is None or node.op_type != "Constant":
        return None
    attr = node.attributes.get("value")
    if attr is not None and attr.type == ir.AttributeType.TENSOR:
        return attr.as_tensor().numpy()
    attr = node.attributes.get("value_float")
    if attr is not None:
        return np.array(attr.as_float(), np.float32)
    attr = node.attributes.get("value_floats")
    if attr is not None:
        return np.array(list(attr.as_floats()), np.float32)
    return None


def is_constant(value: ir.Value | None) -> bool:
    """An initializer or the output of a ``Constant`` node."""
    if value is None:
        return False
    if value.const_value is not None or value.is_initializer():
        return True
    node = value.producer()
    return node is not None and node.op_type == "Constant"


def input_value(node: ir.Node, slot: int) -> ir.Value | None:
    """Input ``slot`` of ``node``, None when it is missing or empty."""
    return node.inputs[slot] if slot < len(node.inputs) else None


def scalar(node: ir.Node, slot: int) -> float | None:
    """Input ``slot`` of ``node`` as a float when it is a one-element constant, else None."""
    value = constant(input_value(node, slot))
    return None if value is None or value.size != 1 else float(value.reshape(()))


def readers(value: ir.Value) -> list[ir.Node]:
    """The nodes reading ``value``, once per input slot that reads it."""
    return [use.node for use in value.uses()]


def single_reader(value: ir.Value) -> ir.Node | None:
    """The only node reading ``value``, or None if it has several readers or is a graph output."""
    uses = value.uses()
    if len(uses) != 1 or value.is_graph_output():
        return None
    return next(iter(uses)).node


def nodes_by_name(graph: ir.Graph) -> dict[str, ir.Node]:
    """Top-level nodes by name (run :func:`ensure_node_names` first if names may be missing)."""
    return {node.name or "": node for node in graph}


def values_by_name(graph: ir.Graph) -> dict[str, ir.Value]:
    """Every named value of the top-level graph: inputs, initializers and node outputs."""
    values: dict[str, ir.Value] = {v.name: v for v in graph.inputs if v.name}
    values.update(graph.initializers)
    for node in graph:
        values.update((v.name, v) for v in node.outputs if v.name)
    return values

class NameMaker(FreshNames):
    """Fresh value and node names that never collide with existing ones in the graph."""

    def __init__(self, graph: ir.Graph) -> None:
        taken: set[str] = set(graph.initializers)
        taken |= {v.name for v in (*graph.inputs, *graph.outputs) if v.name}
        for node in graph:
            taken.add(node.name or "")
            taken.update(v.name for v in node.inputs if v is not None and v.name)
            taken.update(v.name for v in node.outputs if v.name)
        super().__init__(taken)


def set_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Replace (or add) the initializer ``name`` with ``array``; the value readers should point at."""
    array = np.asarray(array, order="C")
    tensor = ir.tensor(array, name=name)
    existing = graph.initializers.get(name)
    if existing is not None:
        existing.const_value = tensor
        existing.shape = ir.Shape(array.shape)
        existing.type = ir.TensorType(tensor.dtype)
        return existing
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype), const_value=tensor)
    graph.register_initializer(value)
    return value


def set_input(node: ir.Node, slot: int, value: ir.Value | None) -> None:
    """Point input ``slot`` of ``node`` at ``value``, adding empty inputs up to it if needed."""
    if len(node.inputs) <= slot:
        node.resize_inputs(slot + 1)
    node.replace_input_with(slot, value)


def shift_bias(graph: ir.Graph, names: NameMaker, node: ir.Node, delta: np.ndarray, suffix: str = "bias") -> None:
    """Point ``node``'s bias input (slot 2 of Conv/Gemm) at a new initializer: old bias + ``delta``.

    A new name, because the old bias may be shared; the old value is read from the graph as it is
    now, so several shifts of one node within a pass add up.
    """
    old = constant(input_value(node, 2))
    base = np.zeros(np.shape(delta), np.float64) if old is None else old.astype(np.float64)
    value = set_initializer(graph, names(f"{node.name}.{suffix}"), (base + delta).astype(np.float32))
    set_input(node, 2, value)


def ensure_node_names(graph: ir.Graph) -> int:
    """Give every unnamed (or duplicate-named) node a unique name; summaries and plans refer to nodes by name."""
    nodes: Sequence[ir.Node] = list(graph)
    renamed = 0
    for node, name in zip(nodes, unique_node_names([(n.name or "", n.op_type) for n in nodes]), strict=True):
        if node.name != name:
            node.name = name
            renamed += 1
    return renamed


class NameNodes(GraphPass):
    """Every node named, uniquely: plans, summaries and the sequential search refer to nodes by name."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return ir.passes.PassResult(model, ensure_node_names(model.graph) > 0)
