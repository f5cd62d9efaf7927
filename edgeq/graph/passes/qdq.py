"""Q/DQ placement for TensorRT explicit quantization, and the pass that writes it.

Where Q/DQ go decides what TensorRT runs in int8, so placement follows TensorRT's rules
(see docs in shared reference): Q/DQ on the *inputs* of Conv, ConvTranspose, MatMul and
Gemm (never on their outputs), the residual input of an ``Add`` that follows a quantized Conv
(so the Add fuses into the Conv), the input of a pooling node whose output is quantized
(``DQ -> pool -> Q`` runs in int8) and every input of a ``Concat`` whose output is quantized,
all with one scale. Weights are stored as int8 initializers read by a per-output-channel
``DequantizeLinear``; biases stay float. Tensor names of node outputs are kept, so the float
and quantized graphs can be compared tensor by tensor.

Planning (``plan_qdq``) is separate from writing (``InsertQdq``) because calibration needs to
know which tensors will be quantized before any number is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeq.graph.passes.base import (
    GraphIndex,
    NameMaker,
    Pass,
    PassResult,
    get_attribute,
    remove_unused_initializers,
    set_initializer,
    topological_sort,
)

COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
POOLING_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean")
# Ops that only move values around: a quantized tensor after them is "the same" tensor.
SHAPE_OPS = ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity")
MIN_OPSET = 13  # per-channel Q/DQ (axis attribute)


def weight_axis(model_node: onnx.NodeProto, weight_rank: int) -> int | None:
    """The output-channel axis of a compute node's weight, None when per-channel is impossible."""
    op = model_node.op_type
    if op == "Conv":
        return 0
    if op == "ConvTranspose":
        return 1 if int(get_attribute(model_node, "group", 1)) == 1 else None
    if op == "Gemm":
        return 0 if int(get_attribute(model_node, "transB", 0)) else 1
    if op == "MatMul":
        return weight_rank - 1
    raise ValueError(f"not a compute op: {op}")


@dataclass
class QdqPlan:
    """Which tensors get Q/DQ, which readers read the dequantized copy, and why.

    ``activations[tensor]`` lists ``(reader node name, input index)`` pairs rewired to the DQ
    output; ``roles[tensor]`` says why the tensor is quantized; tensors in one
    ``shared_scale`` group must use one scale (Concat inputs and output).
    """

    nodes: list[str]
    weight_axes: dict[str, int | None]
    activations: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    shared_scale: list[list[str]] = field(default_factory=list)

    def add(self, tensor: str, reader: str, slot: int, role: str) -> None:
        readers = self.activations.setdefault(tensor, [])
        if (reader, slot) not in readers:
            readers.append((reader, slot))
        self.roles.setdefault(tensor, role)

    def readers_of(self, tensor: str) -> list[tuple[str, int]]:
        return self.activations.get(tensor, [])


def _source_through_shape_ops(index: GraphIndex, tensor: str) -> tuple[str, onnx.NodeProto | None]:
    """Walk back through shape-only ops to the tensor they reshape and its producer."""
    node = index.producer.get(tensor)
    while node is not None and node.op_type in SHAPE_OPS and node.input:
        tensor = node.input[0]
        node = index.producer.get(tensor)
    return tensor, node


def plan_qdq(model: onnx.ModelProto, node_names: list[str], conv_outputs_into_add: bool = False) -> QdqPlan:
    """Decide the Q/DQ placement for quantizing ``node_names`` (compute nodes with constant weights).

    ``conv_outputs_into_add`` also quantizes the conv side of a residual ``Add``: TensorRT fuses
    that Add into the conv and wants its float output, but onnxruntime runs a conv in int8 only
    when its output is quantized, and then adds the two int8 tensors.
    """
    graph = model.graph
    index = GraphIndex(graph)
    by_name = {n.name: n for n in graph.node}
    wanted = set(node_names)
    plan = QdqPlan(nodes=[n for n in node_names if n in by_name], weight_axes={})
    for name in plan.nodes:
        node = by_name[name]
        weight = index.constant(node.input[1])
        rank = 0 if weight is None else weight.ndim
        plan.weight_axes[name] = weight_axis(node, rank)
        plan.add(node.input[0], name, 0, f"input of {node.op_type} {name}")
    quantized_convs = {by_name[n].output[0] for n in plan.nodes if by_name[n].op_type in ("Conv", "ConvTranspose")}
    for node in graph.node:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        from_conv = [i for i, t in enumerate(node.input) if t in quantized_convs]
        if not from_conv:
            continue
        # The Add fuses into the Conv whose output only it reads; the other input is the residual.
        # (Both inputs may come from convs: the skip input is the one with other readers.)
        fusable = [i for i in from_conv if index.single_reader(node.input[i]) is not None]
        conv_slot = (fusable or from_conv)[-1]
        other = 1 - conv_slot
        residual = node.input[other]
        if index.is_constant(residual):
            continue
        plan.add(residual, node.name, other, f"residual input of Add {node.name} after a quantized Conv")
        if conv_outputs_into_add:
            conv = index.producer[node.input[conv_slot]].name
            plan.add(node.input[conv_slot], node.name, conv_slot, f"output of Conv {conv} into Add {node.name}, so onnxruntime runs both in int8")
    # Pooling and Concat stay in int8 when their inputs are quantized too; repeat until nothing
    # changes, since a Concat may feed a pool that feeds a quantized conv.
    changed = True
    while changed:
        changed = False
        for node in graph.node:
            if node.op_type not in POOLING_OPS and node.op_type not in ("Concat", "Pad"):
                continue
            if node.name in wanted:
                continue
            if not _output_is_quantized(index, plan, node):
                continue
            inputs = [(i, t) for i, t in enumerate(node.input) if t and not index.is_constant(t)]
            if node.op_type in POOLING_OPS or node.op_type == "Pad":
                inputs = inputs[:1]
            for slot, tensor in inputs:
                if (node.name, slot) not in plan.readers_of(tensor):
                    role = f"input of {node.op_type} {node.name}, so it runs in int8"
                    plan.add(tensor, node.name, slot, role)
                    changed = True
            if node.op_type in ("Concat", "Pad"):
                group = sorted({t for _, t in inputs} | {_quantized_output(index, plan, node)})
                if group not in plan.shared_scale:
                    plan.shared_scale.append(group)
    return plan


def _quantized_output(index: GraphIndex, plan: QdqPlan, node: onnx.NodeProto) -> str:
    """The quantized tensor this node's output reaches through shape-only ops ('' if none)."""
    frontier = [node.output[0]]
    while frontier:
        tensor = frontier.pop()
        if tensor in plan.activations:
            return tensor
        for reader in index.readers(tensor):
            if reader.op_type in SHAPE_OPS and reader.input[0] == tensor:  # data, not a shape operand
                frontier.append(reader.output[0])
    return ""


def _output_is_quantized(index: GraphIndex, plan: QdqPlan, node: onnx.NodeProto) -> bool:
    return bool(_quantized_output(index, plan, node))


@dataclass
class WeightQuantization:
    """A compute node's int8 weight: values, scales (per channel along ``axis``) and float bias."""

    values: np.ndarray  # int8
    scale: np.ndarray  # float32, shape [channels] or scalar
    axis: int | None
    bias: np.ndarray | None = None  # new float bias (bias correction); None keeps the old one
    bias_slot: tuple[str, int] | None = None  # (node, input index) holding the bias, if not the node's own


def unify_shared_scales(plan: QdqPlan, amax: dict[str, float]) -> dict[str, float]:
    """One amax for every tensor in a shared-scale group (their maximum)."""
    result = dict(amax)
    for group in plan.shared_scale:
        values = [result[t] for t in group if t in result]
        if values:
            for t in group:
                result[t] = max(values)
    return result


class InsertQdq(Pass):
    """Write Q/DQ for ``plan`` with per-tensor ``activation_amax`` and per-node ``weights``."""

    def __init__(self, plan: QdqPlan, activation_amax: dict[str, float], weights: dict[str, WeightQuantization]) -> None:
        self.plan = plan
        self.activation_amax = unify_shared_scales(plan, activation_amax)
        self.weights = weights

    def call(self, model: onnx.ModelProto) -> PassResult:
        graph = model.graph
        names = NameMaker(graph)
        by_name = {n.name: n for n in graph.node}
        new_nodes: list[onnx.NodeProto] = []
        modified = False
        for tensor, readers in self.plan.activations.items():
            amax = self.activation_amax.get(tensor)
            if amax is None:
                raise ValueError(f"no activation range for planned tensor {tensor}")
            act_scale = np.array(amax / 127.0 if amax > 0 else 1.0, np.float32)
            base = tensor.replace("/", "_").strip("_") or "t"
            scale_name = names(f"{base}_scale")
            zp_name = names(f"{base}_zero_point")
            set_initializer(graph, scale_name, act_scale)
            set_initializer(graph, zp_name, np.array(0, np.int8))
            q_out = names(f"{base}_quantized")
            new_nodes.append(helper.make_node("QuantizeLinear", [tensor, scale_name, zp_name], [q_out], name=names(f"{base}_QuantizeLinear")))
            # One DequantizeLinear per reader: runtimes (onnxruntime's QDQ fusion among them) fuse
            # a DQ into its reader only when it has no other reader.
            for reader, slot in readers:
                dq_out = names(f"{base}_dequantized")
                new_nodes.append(helper.make_node("DequantizeLinear", [q_out, scale_name, zp_name], [dq_out], name=names(f"{base}_DequantizeLinear")))
                by_name[reader].input[slot] = dq_out
            modified = True
        for node_name, wq in self.weights.items():
            node = by_name[node_name]
            base = (node.name or node.input[1]).replace("/", "_").strip("_")
            q_name = names(f"{base}_weight_int8")
            scale_name = names(f"{base}_weight_scale")
            zp_name = names(f"{base}_weight_zero_point")
            dq_out = names(f"{base}_weight_dequantized")
            graph.initializer.append(numpy_helper.from_array(np.asarray(wq.values, np.int8, order="C"), q_name))
            scale = np.asarray(wq.scale, np.float32)
            set_initializer(graph, scale_name, scale)
            set_initializer(graph, zp_name, np.zeros(scale.shape, np.int8))
            attrs: dict[str, Any] = {"axis": int(wq.axis)} if wq.axis is not None and scale.ndim == 1 else {}
            new_nodes.append(
                helper.make_node("DequantizeLinear", [q_name, scale_name, zp_name], [dq_out], name=names(f"{base}_weight_DequantizeLinear"), **attrs)
            )
            node.input[1] = dq_out
            if wq.bias is not None:
                target_name, slot = wq.bias_slot or (node_name, 2)
                target = by_name[target_name]
                bias_name = names(f"{base}_bias_corrected")
                set_initializer(graph, bias_name, np.asarray(wq.bias, np.float32))
                while len(target.input) <= slot:
                    target.input.append("")
                target.input[slot] = bias_name
            modified = True
        if modified:
            graph.node.extend(new_nodes)
            topological_sort(graph)
            remove_unused_initializers(graph)
            for opset in model.opset_import:
                if opset.domain in ("", "ai.onnx") and opset.version < MIN_OPSET:
                    raise ValueError(f"per-channel Q/DQ needs opset >= {MIN_OPSET}, model has {opset.version}")
        return PassResult(model, modified)


