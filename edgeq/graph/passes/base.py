"""The pass protocol (as onnx-ir has it) and the few graph helpers every rewrite needs.

A pass takes a model and returns ``PassResult(model, modified)``; chaining passes in a
``PassManager`` keeps each rewrite small and testable on its own. The helpers here answer the
questions every rewrite asks (who produces this tensor, who reads it, is it a constant) and
make names that cannot collide with the user's.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper


@dataclass
class PassResult:
    model: onnx.ModelProto
    modified: bool


class Pass(abc.ABC):
    """A graph rewrite. ``call`` may modify ``model`` in place and returns it in the result."""

    @abc.abstractmethod
    def call(self, model: onnx.ModelProto) -> PassResult: ...

    def __call__(self, model: onnx.ModelProto) -> PassResult:
        return self.call(model)


class PassManager(Pass):
    """Run passes in order; the result is modified if any pass modified the model."""

    def __init__(self, passes: Sequence[Pass]) -> None:
        self.passes = list(passes)

    def call(self, model: onnx.ModelProto) -> PassResult:
        modified = False
        for p in self.passes:
            result = p.call(model)
            model = result.model
            modified = modified or result.modified
        return PassResult(model, modified)


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


def shift_bias(graph: onnx.GraphProto, names: NameMaker, node: onnx.NodeProto, delta: np.ndarray, suffix: str = "bias") -> None:
    """Point ``node``'s bias input (slot 2 of Conv/Gemm) at a new initializer: old bias + ``delta``.

    A new name, because the old bias may be shared; the old value is read from the graph as it is
    now, so several shifts of one node within a pass add up.
    """
    current = node.input[2] if len(node.input) > 2 and node.input[2] else ""
    old = None
    if current:
        found = [t for t in graph.initializer if t.name == current]
        old = numpy_helper.to_array(found[-1]) if found else GraphIndex(graph).constant(current)
    base = np.zeros(np.shape(delta), np.float64) if old is None else old.astype(np.float64)
    name = names(f"{node.name}.{suffix}")
    set_initializer(graph, name, (base + delta).astype(np.float32))
    while len(node.input) < 3:
        node.input.append("")
    node.input[2] = name


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


class NameMaker:
    """Fresh tensor and node names that never collide with existing ones in the graph."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.taken: set[str] = {t.name for t in graph.initializer}
        self.taken |= {i.name for i in graph.input} | {o.name for o in graph.output}
        for node in graph.node:
            self.taken.add(node.name)
            self.taken.update(node.input)
            self.taken.update(node.output)

    def __call__(self, base: str) -> str:
        name = base
        suffix = 1
        while name in self.taken:
            name = f"{base}_{suffix}"
            suffix += 1
        self.taken.add(name)
        return name


def ensure_node_names(graph: onnx.GraphProto) -> int:
    """Give every unnamed (or duplicate-named) node a unique name; summaries and plans refer to nodes by name."""
    seen: set[str] = set()
    renamed = 0
    taken = {n.name for n in graph.node if n.name}
    for index, node in enumerate(graph.node):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = node.name or f"{node.op_type}_{index}"
        name = base
        suffix = 1
        while name in seen or (name != node.name and name in taken):
            name = f"{base}_{suffix}"
            suffix += 1
        node.name = name
        seen.add(name)
        taken.add(name)
        renamed += 1
    return renamed


def opset_version(model: onnx.ModelProto, domain: str = "") -> int:
    for opset in model.opset_import:
        if opset.domain in (domain, "ai.onnx" if domain == "" else domain):
            return int(opset.version)
    return 0


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (stable)."""
    nodes = list(graph.node)
    produced = {o for n in nodes for o in n.output if o}
    available = {t.name for t in graph.initializer} | {i.name for i in graph.input} | {""}
    needs = [list(node.input) + [i for i in _subgraph_inputs([node]) if i in produced] for node in nodes]
    pending = list(range(len(nodes)))
    order: list[int] = []
    while pending:
        rest: list[int] = []
        for i in pending:
            if all(name in available for name in needs[i]):
                order.append(i)
                available.update(nodes[i].output)
            else:
                rest.append(i)
        if len(rest) == len(pending):  # a cycle or a dangling input: keep the order, the checker will say
            order.extend(rest)
            break
        pending = rest
    replace_nodes(graph, [nodes[i] for i in order])


def replace_nodes(graph: onnx.GraphProto, nodes: Sequence[onnx.NodeProto]) -> None:
    """Set ``graph.node`` to ``nodes`` (copied first: some may be elements of ``graph.node``)."""
    copies = []
    for node in nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copies.append(copy)
    del graph.node[:]
    graph.node.extend(copies)
