"""Read-and-patch queries on raw ``onnx`` protobuf for code that is not a graph pass.

Graph rewrites live in ``edgeq.graph.passes`` and work on onnx-ir (``edgeq.graph.passes.base``).
Code that only inspects a protobuf graph, or patches it in a few places (export, the TensorRT
lint, the schemes' bookkeeping), uses these helpers instead of converting the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper


class GraphIndex:
    """Producers, consumers and constants of one graph, rebuilt cheaply after each rewrite."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for out in node.output:
                if out:
                    self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(node)
        self.graph_outputs = {o.name for o in graph.output}
        self.graph_inputs = {i.name for i in graph.input}

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant-node output, else None."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    return numpy_helper.to_array(attr.t)
                if attr.name == "value_float":
                    return np.array(attr.f, np.float32)
                if attr.name == "value_floats":
                    return np.array(list(attr.floats), np.float32)
        return None

    def scalar(self, node: onnx.NodeProto, slot: int) -> float | None:
        """Input ``slot`` of ``node`` as a float when it is a one-element constant, else None."""
        if len(node.input) <= slot or not node.input[slot]:
            return None
        value = self.constant(node.input[slot])
        return None if value is None or value.size != 1 else float(value.reshape(()))

    def is_constant(self, name: str) -> bool:
        if name in self.initializers:
            return True
        node = self.producer.get(name)
        return node is not None and node.op_type == "Constant"

    def readers(self, name: str) -> list[onnx.NodeProto]:
        return self.consumers.get(name, [])

    def single_reader(self, name: str) -> onnx.NodeProto | None:
        """The only node reading ``name``, or None if it has several readers or is a graph output."""
        readers = self.readers(name)
        if len(readers) != 1 or name in self.graph_outputs:
            return None
        return readers[0]


def get_attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def set_initializer(graph: onnx.GraphProto, name: str, array: np.ndarray) -> None:
    """Replace (or add) an initializer's value, keeping its position in the graph."""
    tensor = numpy_helper.from_array(np.asarray(array, order="C"), name)
    for index, existing in enumerate(graph.initializer):
        if existing.name == name:
            graph.initializer[index].CopyFrom(tensor)
            return
    graph.initializer.append(tensor)


def remove_unused_initializers(graph: onnx.GraphProto) -> int:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    used |= _subgraph_inputs(graph.node)
    keep = [t for t in graph.initializer if t.name in used]
    removed = len(graph.initializer) - len(keep)
    if removed:
        del graph.initializer[:]
        graph.initializer.extend(keep)
        inputs = [i for i in graph.input if i.name not in {t.name for t in keep} or i.name in used]
        del graph.input[:]
        graph.input.extend(inputs)
    return removed


def _subgraph_inputs(nodes: Iterable[onnx.NodeProto]) -> set[str]:
    names: set[str] = set()
    for node in nodes:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                names |= {i for n in attr.g.node for i in n.input}
                names |= _subgraph_inputs(attr.g.node)
    return names


class FreshNames:
    """Names that never collide with ``taken`` (nor with each other): ``base``, else ``base_<n>``."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken

    def __call__(self, base: str) -> str:
        name = base
        suffix = 1
        while name in self.taken:
            name = f"{base}_{suffix}"
            suffix += 1
        self.taken.add(name)
        return name


class NameMaker(FreshNames):
    """Fresh tensor and node names that never collide with existing ones in the graph."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        taken: set[str] = {t.name for t in graph.initializer}
        taken |= {i.name for i in graph.input} | {o.name for o in graph.output}
        for node in graph.node:
            taken.add(node.name)
            taken.update(node.input)
            taken.update(node.output)
        super().__init__(taken)


def unique_node_names(nodes: Sequence[tuple[str, str]]) -> list[str]:
    """For ``(name, op_type)`` of each node in order: a name for each, unique in the graph.

    Named nodes keep their names (the first of duplicates does); the others get
    ``<op_type>_<position>`` (or ``<name>_<n>``) with a suffix when that is taken.
    """
    seen: set[str] = set()
    taken = {name for name, _ in nodes if name}
    result: list[str] = []
    for index, (current, op_type) in enumerate(nodes):
        if current and current not in seen:
            seen.add(current)
            result.append(current)
            continue
        base = current or f"{op_type}_{index}"
        name = base
        suffix = 1
        while name in seen or (name != current and name in taken):
            name = f"{base}_{suffix}"
            suffix += 1
        seen.add(name)
        taken.add(name)
        result.append(name)
    return result


def ensure_node_names(graph: onnx.GraphProto) -> int:
    """Give every unnamed (or duplicate-named) node a unique name; summaries and plans refer to nodes by name."""
    names = unique_node_names([(n.name, n.op_type) for n in graph.node])
    renamed = 0
    for node, name in zip(graph.node, names, strict=True):
        if node.name != name:
            node.name = name
            renamed += 1
    return renamed


def replace_nodes(graph: onnx.GraphProto, nodes: Sequence[onnx.NodeProto]) -> None:
    """Set ``graph.node`` to ``nodes`` (copied first: some may be elements of ``graph.node``)."""
    copies = []
    for node in nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copies.append(copy)
    del graph.node[:]
    graph.node.extend(copies)
