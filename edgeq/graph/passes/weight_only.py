"""The weight-only rewrite: find the weights, and swap float nodes for quantized ones.

The scheme (``edgeq.quantize.schemes.weight_only.scheme``) decides codes and formats; this module
only moves tensors around: it says which MatMul / Gemm / Gather weights can be replaced (and
why not, for the others), reads each weight as a ``[rows, cols]`` matrix blocked along the
reduction axis, and splices the emitted nodes in place of the original one, removing the float
initializers nothing reads any more so the file actually shrinks.

The rewrite works on an onnx-ir view of the caller's protobuf model. onnx-ir wraps the protobuf
tensors without copying them, a weight is read (one layer's copy) only when its node is
replaced, and only the tensors left at the end are serialised back: memory stays near one copy
of the float weights however large the model is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper, numpy_helper

from edgeq.graph.formats import Emitted
from edgeq.graph.opset import set_opset
from edgeq.graph.passes.base import (
    NameMaker,
    constant,
    input_value,
    serialize_into,
    set_initializer,
    tidy,
    to_ir,
    values_by_name,
)
from edgeq.graph.quantizable import WEIGHT_INPUT, find_quantizable

FLOAT_TYPES: dict[int, type[np.floating]] = {int(onnx.TensorProto.FLOAT): np.float32, int(onnx.TensorProto.FLOAT16): np.float16}
# Producers whose per-channel constants can absorb AWQ's input scale.
NORMALISATIONS = ("LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization")


@dataclass
class WeightTarget:
    """A node whose constant weight can be quantized, and how to read it as ``[rows, cols]``.

    ``rows`` are outputs (N) and ``cols`` the reduction axis (K) for MatMul/Gemm; for an
    embedding ``Gather`` rows are the vocabulary and cols the hidden width.
    """

    name: str
    op_type: str
    node_index: int
    weight: str
    activation: str
    output: str
    rows: int
    cols: int
    dtype: np.dtype
    transpose: bool  # stored weight is [cols, rows] (MatMul, Gemm transB=0)
    alpha: float = 1.0
    bias: str | None = None  # Gemm C
    beta: float = 1.0
    lm_head: bool = False  # produces the graph output ``logits``
    # A Gather reading this head's table (a tie), written from the head's codes (stored once).
    shared_lookup: WeightTarget | None = None

    @property
    def is_embedding(self) -> bool:
        return self.op_type == "Gather"


@dataclass
class LeftInFloat:
    name: str
    op_type: str
    reason: str
    weight: str = ""


def _stored_dtype(value: ir.Value | None) -> int:
    """The element type of a constant weight (an initializer or a ``Constant`` node's tensor)."""
    if value is not None and value.const_value is not None:
        return int(value.const_value.dtype)
    producer = value.producer() if value is not None else None
    attr = producer.attributes.get("value") if producer is not None else None
    return int(attr.as_tensor().dtype) if attr is not None else int(ir.DataType.UNDEFINED)


def plan_targets(
    model: onnx.ModelProto, include_embeddings: bool, exclude: str | None = None
) -> tuple[list[WeightTarget], list[LeftInFloat]]:
    """Every MatMul/Gemm (and embedding Gather) weight that can be quantized, and the rest with reasons."""
    found, skipped = find_quantizable(model, ("MatMul", "Gemm", "Conv", "ConvTranspose"), include_embeddings=True)
    left = [LeftInFloat(s.name, s.op_type, s.reason) for s in skipped]
    pattern = re.compile(exclude) if exclude else None
    nodes = list(to_ir(model).graph)
    targets: list[WeightTarget] = []
    for q in found:
        node = nodes[q.index]
        if q.op_type in ("Conv", "ConvTranspose"):
            left.append(LeftInFloat(q.name, q.op_type, "weight-only formats cover MatMul, Gemm and Gather; use --activations int8 for convolutions", q.weight))
            continue
        if q.is_embedding and not include_embeddings:
            left.append(LeftInFloat(q.name, q.op_type, "embedding table left in float (--no-embeddings)", q.weight))
            continue
        if pattern is not None and pattern.search(q.name):
            left.append(LeftInFloat(q.name, q.op_type, f"excluded by --exclude {exclude!r}", q.weight))
            continue
        data_type = _stored_dtype(node.inputs[WEIGHT_INPUT[q.op_type]])
        if data_type not in FLOAT_TYPES:
            left.append(LeftInFloat(q.name, q.op_type, "weight is not float32 or float16 (bfloat16 is not supported by the formats)", q.weight))
            continue
        dtype = np.dtype(FLOAT_TYPES[data_type])
        shape = q.weight_shape
        output = node.outputs[0].name or ""
        reason = None
        target: WeightTarget | None = None
        if q.op_type == "MatMul":
            target = WeightTarget(q.name, q.op_type, q.index, q.weight, q.activation, output, shape[1], shape[0], dtype, True)
        elif q.op_type == "Gemm":
            if node.attributes.get_int("transA", 0):
                reason = "Gemm with transA=1: the activation would need a transpose; left in float"
            elif len(shape) != 2:
                reason = f"Gemm weight rank {len(shape)} is not 2"
            else:
                trans_b = bool(node.attributes.get_int("transB", 0))
                rows, cols = (shape[0], shape[1]) if trans_b else (shape[1], shape[0])
                c = input_value(node, 2)
                target = WeightTarget(
                    q.name, q.op_type, q.index, q.weight, q.activation, output, rows, cols, dtype, not trans_b,
                    alpha=float(node.attributes.get_float("alpha", 1.0)), bias=c.name if c is not None else None,
                    beta=float(node.attributes.get_float("beta", 1.0)),
                )
        elif q.op_type == "Gather":
            if node.attributes.get_int("axis", 0) != 0:
                reason = "Gather on an axis other than 0 is not an embedding lookup"
            else:
                target = WeightTarget(q.name, q.op_type, q.index, q.weight, q.activation, output, shape[0], shape[1], dtype, False)
        if target is None:
            left.append(LeftInFloat(q.name, q.op_type, reason or "unsupported weight layout", q.weight))
        else:
            targets.append(target)
    return targets, left


def _as_matrix(value: np.ndarray | None, target: WeightTarget) -> np.ndarray:
    """A stored weight as float32 ``[rows, cols]`` with Gemm's alpha folded in (a fresh array)."""
    if value is None:
        raise ValueError(f"{target.weight} is not a constant")
    w = np.asarray(value, np.float32)
    if target.transpose:
        w = w.T
    if target.alpha != 1.0:
        w = w * np.float32(target.alpha)
    return np.ascontiguousarray(w)


def read_weight(model: onnx.ModelProto | ir.Model, target: WeightTarget) -> np.ndarray:
    """The weight as float32 ``[rows, cols]`` (Gemm's alpha folded in): one layer's copy."""
    if isinstance(model, onnx.ModelProto):
        # The common case without converting the whole model: the weight is an initializer.
        for tensor in model.graph.initializer:
            if tensor.name == target.weight:
                return _as_matrix(ir.serde.deserialize_tensor(tensor).numpy(), target)
    graph = to_ir(model).graph
    value = graph.initializers.get(target.weight)
    if value is None:
        value = next((v for node in graph for v in node.outputs if v.name == target.weight), None)
    return _as_matrix(constant(value), target)



@dataclass
class WeightOnlyRewriter:
    """Collects replacements node by node; ``finish`` splices them in and rewrites ``model``.

    Until ``finish`` the changes live in ``ir_model`` (onnx-ir over the caller's tensors, not a
    copy): new initializers join it at once and a float weight leaves it as soon as nothing
    else reads it; the emitted nodes wait in ``replacements`` (by position in the original
    graph), so every question asked meanwhile sees the original nodes.
    """

    model: onnx.ModelProto
    ir_model: ir.Model = field(init=False)
    names: NameMaker = field(init=False)
    replacements: dict[int, list[onnx.NodeProto]] = field(default_factory=dict)
    opsets: dict[str, int] = field(default_factory=dict)
    folded_scales: int = 0
    _scaled: dict[str, str] = field(default_factory=dict)
    _nodes: list[ir.Node] = field(init=False)
    _position: dict[ir.Node, int] = field(init=False)
    _values: dict[str, ir.Value] = field(init=False)
    _described: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self._described = {info.name for info in self.model.graph.value_info}
        self.ir_model = ir.serde.deserialize_model(self.model)
        graph = self.ir_model.graph
        self._nodes = list(graph)
        self._position = {node: index for index, node in enumerate(self._nodes)}
        self._values = values_by_name(graph)
        self.names = NameMaker(graph)

    def prefix(self, target: WeightTarget) -> str:
        base = re.sub(r"[^A-Za-z0-9_.]+", "_", target.name).strip("_") or target.weight
        return self.names(base)

    def fresh(self, base: str) -> str:
        return self.names(base)

    def weight(self, target: WeightTarget) -> np.ndarray:
        """The target's weight as float32 ``[rows, cols]`` (see :func:`read_weight`)."""
        return _as_matrix(constant(self._values.get(target.weight)), target)

    def replace(self, target: WeightTarget, emitted: Emitted) -> None:
        """Put ``emitted`` in place of the target node; its initializers join the graph now."""
        for tensor in emitted.initializers:
            self._register(tensor)
        for domain, version in emitted.opsets.items():
            self.opsets[domain] = max(self.opsets.get(domain, 0), version)
        self.replacements[target.node_index] = list(emitted.nodes)
        # Drop the float weight as soon as nothing else reads it (streaming: one float copy).
        self._drop_if_unused(target)

    def scaled_activation(
        self, target: WeightTarget, input_scale: np.ndarray, prefix: str, readers: set[int]
    ) -> tuple[str, Emitted]:
        """The input multiplied by per-channel AWQ factors: which tensor to read, and nodes to add.

        Every quantized node reading the same activation shares one ``input_scale`` (the group
        was fitted jointly), so the factors are applied once per activation: folded into the
        producer's constants when the producer is a normalisation or a ``Mul`` by a constant and
        nothing else reads its output, otherwise as one explicit ``Mul`` that the group shares.
        """
        done = self._scaled.get(target.activation)
        if done is not None:
            return done, Emitted()
        if self._fold_input_scale(target.activation, input_scale, readers, prefix):
            self._scaled[target.activation] = target.activation
            self.folded_scales += 1
            return target.activation, Emitted()
        scale_name = self.fresh(f"{prefix}_awq_scale")
        out = self.fresh(f"{prefix}_awq_input")
        node = helper.make_node("Mul", [target.activation, scale_name], [out], name=self.fresh(f"{prefix}_awq_Mul"))
        self._scaled[target.activation] = out
        return out, Emitted([node], [numpy_helper.from_array(input_scale.astype(target.dtype), scale_name)])

    def _fold_input_scale(self, activation: str, input_scale: np.ndarray, readers: set[int], prefix: str) -> bool:
        value = self._values.get(activation)
        if value is None or value.is_graph_output():
            return False
        if any(self._position.get(use.node, -1) not in readers for use in value.uses()):
            return False  # a residual Add or another reader would see the scaled tensor
        producer = value.producer()
        if producer is None or producer not in self._position:
            return False
        k = input_scale.shape[0]
        if producer.op_type in NORMALISATIONS:
            if producer.attributes.get_int("axis", -1) != -1:
                return False
            positions = [1, 2] if producer.op_type == "LayerNormalization" else [1]
        elif producer.op_type == "Mul":
            positions = [i for i in (0, 1) if constant(input_value(producer, i)) is not None][:1]
        else:
            return False
        updates = []
        for position in positions:
            source = input_value(producer, position)
            if source is None:
                continue
            array = constant(source)
            if array is None or array.dtype not in (np.float32, np.float16) or array.ndim > 1 or array.size not in (1, k):
                return False
            updates.append((position, (np.broadcast_to(array.astype(np.float64), (k,)) * input_scale).astype(array.dtype)))
        if not updates:
            return False
        for position, array in updates:
            producer.replace_input_with(position, self._initializer(self.fresh(f"{prefix}_awq_folded"), array))
        return True

    def gemm_bias(self, target: WeightTarget, product: str, prefix: str, output: str | None = None) -> Emitted:
        """Add Gemm's ``beta * C`` after the quantized product (C broadcast as Gemm does)."""
        assert target.bias is not None
        emitted = Emitted()
        bias = target.bias
        if target.beta != 1.0:
            value = constant(self._values.get(bias))
            scaled = self.fresh(f"{prefix}_bias_scaled")
            if value is not None:
                emitted.initializers.append(numpy_helper.from_array((value * target.beta).astype(value.dtype), scaled))
            else:
                beta_name = self.fresh(f"{prefix}_beta")
                emitted.initializers.append(numpy_helper.from_array(np.array(target.beta, target.dtype), beta_name))
                emitted.nodes.append(helper.make_node("Mul", [bias, beta_name], [scaled], name=self.fresh(f"{prefix}_beta_Mul")))
            bias = scaled
        out = target.output if output is None else output
        emitted.nodes.append(helper.make_node("Add", [product, bias], [out], name=self.fresh(f"{prefix}_bias_Add")))
        return emitted

    def fold_output_bias(self, target: WeightTarget, bias: np.ndarray, prefix: str) -> Emitted | None:
        """Add ``bias`` to the target's output: into the constant of the ``Add`` that follows, if any.

        Returns None when folded (transformer projections are followed by their bias Add);
        otherwise an :class:`Emitted` holding the bias initializer, for an ``Add`` the caller puts
        after the product.
        """
        output = self._nodes[target.node_index].outputs[0]
        skip = {target.node_index, *self.replacements}
        readers = [node for node in dict.fromkeys(use.node for use in output.uses()) if self._position.get(node) not in skip]
        if len(readers) == 1 and not output.is_graph_output() and readers[0].op_type == "Add":
            add = readers[0]
            other = 1 if add.inputs[0] is output else 0
            addend = constant(add.inputs[other]) if len(add.inputs) == 2 else None
            if (
                addend is not None
                and addend.dtype in (np.float32, np.float16)
                and addend.shape[-1:] == (target.rows,)
                and int(np.prod(addend.shape)) == target.rows
            ):
                name = self.fresh(f"{prefix}_corrected_bias")
                value = (addend.astype(np.float64) + bias.reshape(addend.shape)).astype(addend.dtype)
                add.replace_input_with(other, self._initializer(name, value))
                return None
        name = self.fresh(f"{prefix}_correction")
        return Emitted([], [numpy_helper.from_array(bias.astype(target.dtype), name)])

    def _drop_if_unused(self, target: WeightTarget) -> None:
        weight = self._values.get(target.weight)
        if weight is None or weight.is_graph_output():
            return
        done = {target.node_index, *self.replacements}
        if all(self._position.get(use.node) in done for use in weight.uses()):
            self.ir_model.graph.initializers.pop(target.weight, None)

    def _register(self, tensor: onnx.TensorProto) -> None:
        """An emitted initializer into the graph (onnx-ir wraps the protobuf tensor, no copy)."""
        wrapped = ir.serde.deserialize_tensor(tensor)
        value = ir.Value(name=tensor.name, type=ir.TensorType(wrapped.dtype), shape=ir.Shape(tensor.dims), const_value=wrapped)
        self.ir_model.graph.register_initializer(value)
        self._values[tensor.name] = value

    def _initializer(self, name: str, array: np.ndarray) -> ir.Value:
        value = set_initializer(self.ir_model.graph, name, np.ascontiguousarray(array))
        self._values[name] = value
        return value

    def _node(self, proto: onnx.NodeProto) -> ir.Node:
        """An emitted node on onnx-ir, reading the values its input names name now."""
        missing = [name for name in proto.input if name and name not in self._values]
        if missing:
            raise ValueError(f"emitted node {proto.name} reads {missing[0]}, which nothing produces")
        node = ir.Node(
            proto.domain, proto.op_type, [self._values[name] if name else None for name in proto.input],
            [ir.serde.deserialize_attribute(a) for a in proto.attribute], num_outputs=len(proto.output), name=proto.name or None,
        )
        for value, name in zip(node.outputs, proto.output, strict=True):
            value.name = name
            self._values[name] = value
        return node

    def finish(self) -> onnx.ModelProto:
        """Splice the replacements in, drop what nothing reads any more, import the new opsets."""
        graph = self.ir_model.graph
        for index in sorted(self.replacements):
            old = self._nodes[index]
            new_nodes = [self._node(proto) for proto in self.replacements[index]]
            output = old.outputs[0]
            produced = next(v for node in new_nodes for v in node.outputs if v.name == output.name)
            ir.convenience.replace_nodes_and_values(graph, old, [old], new_nodes, [output], [produced])
        # Constant nodes and initializers that held a replaced weight are dead now.
        tidy(self.ir_model, sort=False)
        serialize_into(self.model, self.ir_model, self._described)
        for domain, version in self.opsets.items():
            set_opset(self.model, domain, version)
        return self.model


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of all initializers (what a weight-only scheme shrinks)."""
    total = 0
    for tensor in model.graph.initializer:
        if tensor.HasField("raw_data"):
            total += len(tensor.raw_data)
        else:
            total += int(numpy_helper.to_array(tensor).nbytes)
    return total
