"""The weight-only rewrite: find the weights, and swap float nodes for quantized ones.

The scheme (``edgeq.quantize.schemes.weight_only.scheme``) decides codes and formats; this module
only moves tensors around: it says which MatMul / Gemm / Gather weights can be replaced (and
why not, for the others), reads each weight as a ``[rows, cols]`` matrix blocked along the
reduction axis, and splices the emitted nodes in place of the original one, removing the float
initializers nothing reads any more so the file actually shrinks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper, numpy_helper
from onnx_ir.passes.common import RemoveUnusedNodesPass

from edgeq.graph.formats import Emitted
from edgeq.graph.opset import set_opset
from edgeq.graph.passes.base import GraphPass
from edgeq.graph.proto import GraphIndex, NameMaker, get_attribute, replace_nodes
from edgeq.graph.quantizable import find_quantizable, initializer_map

FLOAT_TYPES: dict[int, type[np.floating]] = {int(onnx.TensorProto.FLOAT): np.float32, int(onnx.TensorProto.FLOAT16): np.float16}


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

    @property
    def is_embedding(self) -> bool:
        return self.op_type == "Gather"


@dataclass
class LeftInFloat:
    name: str
    op_type: str
    reason: str
    weight: str = ""


def plan_targets(
    model: onnx.ModelProto, include_embeddings: bool, exclude: str | None = None
) -> tuple[list[WeightTarget], list[LeftInFloat]]:
    """Every MatMul/Gemm (and embedding Gather) weight that can be quantized, and the rest with reasons."""
    found, skipped = find_quantizable(model, ("MatMul", "Gemm", "Conv", "ConvTranspose"), include_embeddings=True)
    left = [LeftInFloat(s.name, s.op_type, s.reason) for s in skipped]
    pattern = re.compile(exclude) if exclude else None
    inits = initializer_map(model.graph)
    targets: list[WeightTarget] = []
    for q in found:
        node = model.graph.node[q.index]
        if q.op_type in ("Conv", "ConvTranspose"):
            left.append(LeftInFloat(q.name, q.op_type, "weight-only formats cover MatMul, Gemm and Gather; use --activations int8 for convolutions", q.weight))
            continue
        if q.is_embedding and not include_embeddings:
            left.append(LeftInFloat(q.name, q.op_type, "embedding table left in float (--no-embeddings)", q.weight))
            continue
        if pattern is not None and pattern.search(q.name):
            left.append(LeftInFloat(q.name, q.op_type, f"excluded by --exclude {exclude!r}", q.weight))
            continue
        data_type = int(inits[q.weight].data_type)
        if data_type not in FLOAT_TYPES:
            left.append(LeftInFloat(q.name, q.op_type, "weight is not float32 or float16 (bfloat16 is not supported by the formats)", q.weight))
            continue
        dtype = np.dtype(FLOAT_TYPES[data_type])
        shape = q.weight_shape
        reason = None
        target: WeightTarget | None = None
        if q.op_type == "MatMul":
            target = WeightTarget(q.name, q.op_type, q.index, q.weight, q.activation, node.output[0], shape[1], shape[0], dtype, True)
        elif q.op_type == "Gemm":
            if get_attribute(node, "transA", 0):
                reason = "Gemm with transA=1: the activation would need a transpose; left in float"
            elif len(shape) != 2:
                reason = f"Gemm weight rank {len(shape)} is not 2"
            else:
                trans_b = bool(get_attribute(node, "transB", 0))
                rows, cols = (shape[0], shape[1]) if trans_b else (shape[1], shape[0])
                bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
                target = WeightTarget(
                    q.name, q.op_type, q.index, q.weight, q.activation, node.output[0], rows, cols, dtype, not trans_b,
                    alpha=float(get_attribute(node, "alpha", 1.0)), bias=bias, beta=float(get_attribute(node, "beta", 1.0)),
                )
        elif q.op_type == "Gather":
            if get_attribute(node, "axis", 0) != 0:
                reason = "Gather on an axis other than 0 is not an embedding lookup"
            else:
                target = WeightTarget(q.name, q.op_type, q.index, q.weight, q.activation, node.output[0], shape[0], shape[1], dtype, False)
        if target is None:
            left.append(LeftInFloat(q.name, q.op_type, reason or "unsupported weight layout", q.weight))
        else:
            targets.append(target)
    return targets, left


def read_weight(model: onnx.ModelProto, target: WeightTarget) -> np.ndarray:
    """The weight as float32 ``[rows, cols]`` (Gemm's alpha folded in): one layer's copy."""
    value = None
    for tensor in model.graph.initializer:
        if tensor.name == target.weight:
            value = numpy_helper.to_array(tensor)
            break
    else:
        value = GraphIndex(model.graph).constant(target.weight)
    if value is None:
        raise ValueError(f"{target.weight} is not a constant")
    w = np.asarray(value, np.float32)
    if target.transpose:
        w = w.T
    if target.alpha != 1.0:
        w = w * np.float32(target.alpha)
    return np.ascontiguousarray(w)


@dataclass
class WeightOnlyRewriter:
    """Collects replacements node by node; ``finish`` splices them into the graph."""

    model: onnx.ModelProto
    names: NameMaker = field(init=False)
    replacements: dict[int, list[onnx.NodeProto]] = field(default_factory=dict)
    opsets: dict[str, int] = field(default_factory=dict)
    folded_scales: int = 0
    _scaled: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.names = NameMaker(self.model.graph)

    def prefix(self, target: WeightTarget) -> str:
        base = re.sub(r"[^A-Za-z0-9_.]+", "_", target.name).strip("_") or target.weight
        return self.names(base)

    def fresh(self, base: str) -> str:
        return self.names(base)

    def replace(self, target: WeightTarget, emitted: Emitted) -> None:
        """Put ``emitted`` in place of the target node; its initializers join the graph now."""
        self.model.graph.initializer.extend(emitted.initializers)
        for domain, version in emitted.opsets.items():
            self.opsets[domain] = max(self.opsets.get(domain, 0), version)
        self.replacements[target.node_index] = list(emitted.nodes)
        # Free the float weight as soon as nothing else reads it (streaming: one float copy).
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
        graph = self.model.graph
        if activation in {o.name for o in graph.output}:
            return False
        producer_index = None
        for index, node in enumerate(graph.node):
            if activation in node.output:
                producer_index = index
            elif activation in node.input and index not in readers:
                return False  # a residual Add or another reader would see the scaled tensor
        if producer_index is None:
            return False
        producer = graph.node[producer_index]
        constants = GraphIndex(graph)
        k = input_scale.shape[0]
        if producer.op_type in ("LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization"):
            if get_attribute(producer, "axis", -1) not in (-1,):
                return False
            positions = [1, 2] if producer.op_type == "LayerNormalization" else [1]
        elif producer.op_type == "Mul":
            positions = [i for i in (0, 1) if constants.constant(producer.input[i]) is not None][:1]
        else:
            return False
        updates = []
        for position in positions:
            if position >= len(producer.input) or not producer.input[position]:
                continue
            value = constants.constant(producer.input[position])
            if value is None or value.dtype not in (np.float32, np.float16) or value.ndim > 1 or value.size not in (1, k):
                return False
            updates.append((position, (np.broadcast_to(value.astype(np.float64), (k,)) * input_scale).astype(value.dtype)))
        if not updates:
            return False
        for position, value in updates:
            name = self.fresh(f"{prefix}_awq_folded")
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
            graph.node[producer_index].input[position] = name
        return True

    def gemm_bias(self, target: WeightTarget, product: str, prefix: str, output: str | None = None) -> Emitted:
        """Add Gemm's ``beta * C`` after the quantized product (C broadcast as Gemm does)."""
        assert target.bias is not None
        emitted = Emitted()
        bias = target.bias
        if target.beta != 1.0:
            index = GraphIndex(self.model.graph)
            value = index.constant(bias)
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
        graph = self.model.graph
        readers = [
            (i, node) for i, node in enumerate(graph.node)
            if target.output in node.input and i not in self.replacements and i != target.node_index
        ]
        is_output = target.output in {o.name for o in graph.output}
        if len(readers) == 1 and not is_output and readers[0][1].op_type == "Add":
            index, add = readers[0]
            other = 1 if add.input[0] == target.output else 0
            constant = GraphIndex(graph).constant(add.input[other]) if len(add.input) == 2 else None
            if (
                constant is not None
                and constant.dtype in (np.float32, np.float16)
                and constant.shape[-1:] == (target.rows,)
                and int(np.prod(constant.shape)) == target.rows
            ):
                name = self.fresh(f"{prefix}_corrected_bias")
                value = (constant.astype(np.float64) + bias.reshape(constant.shape)).astype(constant.dtype)
                graph.initializer.append(numpy_helper.from_array(value, name))
                graph.node[index].input[other] = name
                return None
        name = self.fresh(f"{prefix}_correction")
        return Emitted([], [numpy_helper.from_array(bias.astype(target.dtype), name)])

    def _drop_if_unused(self, target: WeightTarget) -> None:
        graph = self.model.graph
        for index, node in enumerate(graph.node):
            if index == target.node_index or index in self.replacements:
                continue
            if target.weight in node.input:
                return
        if target.weight in {o.name for o in graph.output}:
            return
        for i, tensor in enumerate(graph.initializer):
            if tensor.name == target.weight:
                del graph.initializer[i]
                return

    def finish(self) -> onnx.ModelProto:
        """Splice the replacements in, drop what nothing reads any more, import the new opsets."""
        graph = self.model.graph
        nodes: list[onnx.NodeProto] = []
        for index, node in enumerate(graph.node):
            nodes.extend(self.replacements.get(index, [node]))
        replace_nodes(graph, nodes)
        # Constant nodes and initializers that held a replaced weight are dead now.
        DropUnused().apply(self.model)
        for domain, version in self.opsets.items():
            set_opset(self.model, domain, version)
        return self.model


class DropUnused(GraphPass):
    """Remove nodes and initializers that no graph output depends on (onnx-ir's dead-code pass)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return ir.passes.PassResult(model, RemoveUnusedNodesPass()(model).modified)


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of all initializers (what a weight-only scheme shrinks)."""
    total = 0
    for tensor in model.graph.initializer:
        if tensor.HasField("raw_data"):
            total += len(tensor.raw_data)
        else:
            total += int(numpy_helper.to_array(tensor).nbytes)
    return total
