"""Finding the nodes a quantizer can act on.

One definition serves calibration (which activations to observe), quantization (which weights
to rewrite) and inspection, so the three never disagree about what "quantizable" means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from edgeq.graph.ops import COMPUTE_OPS

# op type -> index of the weight input
WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "MatMul": 1, "Gemm": 1, "Gather": 0}
# op type -> index of the activation input
ACTIVATION_INPUT = {"Conv": 0, "ConvTranspose": 0, "MatMul": 0, "Gemm": 0, "Gather": 1}


@dataclass(frozen=True)
class QuantizableNode:
    """A compute node whose weight is a constant initializer."""

    name: str
    op_type: str
    weight: str
    activation: str
    weight_shape: tuple[int, ...]
    index: int  # position in graph.node

    @property
    def is_embedding(self) -> bool:
        return self.op_type == "Gather"


@dataclass(frozen=True)
class SkippedNode:
    """A node of a quantizable type left alone, and why (nothing is skipped silently)."""

    name: str
    op_type: str
    reason: str


def node_name(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def initializer_map(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    inits = {t.name: t for t in graph.initializer}
    # A Constant node is a weight too (exporters emit them for small tensors).
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    tensor = onnx.TensorProto()
                    tensor.CopyFrom(attr.t)
                    tensor.name = node.output[0]
                    inits.setdefault(node.output[0], tensor)
    return inits


def find_quantizable(
    model: onnx.ModelProto,
    op_types: tuple[str, ...] = COMPUTE_OPS,
    include_embeddings: bool = False,
) -> tuple[list[QuantizableNode], list[SkippedNode]]:
    """Nodes of ``op_types`` whose weight input is an initializer, plus the ones that are not."""
    graph = model.graph
    inits = initializer_map(graph)
    graph_inputs = {i.name for i in graph.input}
    wanted = set(op_types) | ({"Gather"} if include_embeddings else set())
    found: list[QuantizableNode] = []
    skipped: list[SkippedNode] = []
    for index, node in enumerate(graph.node):
        if node.op_type not in wanted:
            continue
        name = node_name(node, index)
        w_idx = WEIGHT_INPUT[node.op_type]
        a_idx = ACTIVATION_INPUT[node.op_type]
        if len(node.input) <= max(w_idx, a_idx):
            skipped.append(SkippedNode(name, node.op_type, "missing inputs"))
            continue
        weight = node.input[w_idx]
        if weight not in inits:
            why = "weight is a graph input" if weight in graph_inputs else "weight is computed, not an initializer"
            if node.op_type == "MatMul" and node.input[0] in inits:
                why = "constant is the left operand (A), not B"
            if node.op_type == "Gather":
                continue  # an ordinary Gather on activations is not an embedding
            skipped.append(SkippedNode(name, node.op_type, why))
            continue
        tensor = inits[weight]
        if tensor.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16):
            if node.op_type != "Gather":
                skipped.append(SkippedNode(name, node.op_type, f"weight dtype {onnx.TensorProto.DataType.Name(tensor.data_type)} is not float"))
            continue
        shape = tuple(int(d) for d in tensor.dims)
        if node.op_type in ("MatMul", "Gather") and len(shape) != 2:
            skipped.append(SkippedNode(name, node.op_type, f"weight rank {len(shape)} is not 2"))
            continue
        found.append(QuantizableNode(name, node.op_type, weight, node.input[a_idx], shape, index))
    return found, skipped


def weight_array(model: onnx.ModelProto, name: str) -> np.ndarray:
    inits = initializer_map(model.graph)
    return numpy_helper.to_array(inits[name])
