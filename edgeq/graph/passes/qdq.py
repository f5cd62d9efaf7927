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

import ml_dtypes
import numpy as np
import onnx
import onnx_ir as ir

from edgeq.graph.ops import POOLING_OPS, SHAPE_OPS
from edgeq.graph.passes.base import (
    GraphPass,
    NameMaker,
    constant,
    is_constant,
    nodes_by_name,
    readers,
    set_initializer,
    set_input,
    single_reader,
    tidy,
    to_ir,
    values_by_name,
)

MIN_OPSET = 13  # per-channel Q/DQ (axis attribute)
CONVS = ("Conv", "ConvTranspose")


@dataclass(frozen=True)
class QdqElement:
    """The element type Q/DQ write: its name, the largest code magnitude (scale = amax / qmax) and dtype."""

    name: str  # "int8" | "fp8"
    qmax: float
    dtype: np.dtype
    min_opset: int


INT8_ELEMENT = QdqElement("int8", 127.0, np.dtype(np.int8), MIN_OPSET)
# FLOAT8E4M3FN Q/DQ first exist in opset 19; 448 is E4M3's largest finite value.
FP8_ELEMENT = QdqElement("fp8", 448.0, np.dtype(ml_dtypes.float8_e4m3fn), 19)


def weight_axis(model_node: ir.Node, weight_rank: int) -> int | None:
    """The output-channel axis of a compute node's weight, None when per-channel is impossible."""
    op = model_node.op_type
    if op == "Conv":
        return 0
    if op == "ConvTranspose":
        return 1 if model_node.attributes.get_int("group", 1) == 1 else None
    if op == "Gemm":
        return 0 if model_node.attributes.get_int("transB", 0) else 1
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


def plan_qdq(model: onnx.ModelProto | ir.Model, node_names: list[str], conv_outputs_into_add: bool = False) -> QdqPlan:
    """Decide the Q/DQ placement for quantizing ``node_names`` (compute nodes with constant weights).

    ``conv_outputs_into_add`` also quantizes the conv side of a residual ``Add``: TensorRT fuses
    that Add into the conv and wants its float output, but onnxruntime runs a conv in int8 only
    when its output is quantized, and then adds the two int8 tensors.
    """
    graph = to_ir(model).graph
    by_name = nodes_by_name(graph)
    wanted = set(node_names)
    plan = QdqPlan(nodes=[n for n in node_names if n in by_name], weight_axes={})
    for name in plan.nodes:
        node = by_name[name]
        weight = constant(node.inputs[1])
        rank = 0 if weight is None else weight.ndim
        plan.weight_axes[name] = weight_axis(node, rank)
        plan.add(_name(node.inputs[0]), name, 0, f"input of {node.op_type} {name}")
    quantized_convs = {by_name[n].outputs[0] for n in plan.nodes if by_name[n].op_type in CONVS}
    for node in graph:
        if node.op_type != "Add" or len(node.inputs) != 2:
            continue
        from_conv = [i for i, v in enumerate(node.inputs) if v in quantized_convs]
        if not from_conv:
            continue
        # The Add fuses into the Conv whose output only it reads; the other input is the residual.
        # (Both inputs may come from convs: the skip input is the one with other readers.)
        fusable = [i for i in from_conv if single_reader(_value(node, i)) is not None]
        conv_slot = (fusable or from_conv)[-1]
        other = 1 - conv_slot
        residual = node.inputs[other]
        if is_constant(residual):
            continue
        plan.add(_name(residual), _name(node), other, f"residual input of Add {node.name} after a quantized Conv")
        if conv_outputs_into_add:
            conv_output = _value(node, conv_slot)
            conv = _name(conv_output.producer())
            role = f"output of Conv {conv} into Add {node.name}, so onnxruntime runs both in int8"
            plan.add(_name(conv_output), _name(node), conv_slot, role)
    # Pooling and Concat stay in int8 when their inputs are quantized too; repeat until nothing
    # changes, since a Concat may feed a pool that feeds a quantized conv.
    changed = True
    while changed:
        changed = False
        for node in graph:
            if node.op_type not in POOLING_OPS and node.op_type not in ("Concat", "Pad"):
                continue
            if node.name in wanted:
                continue
            output = _quantized_output(plan, node)
            if not output:
                continue
            inputs = [(i, _name(v)) for i, v in enumerate(node.inputs) if v is not None and v.name and not is_constant(v)]
            if node.op_type in POOLING_OPS or node.op_type == "Pad":
                inputs = inputs[:1]
            for slot, tensor in inputs:
                if (node.name, slot) not in plan.readers_of(tensor):
                    role = f"input of {node.op_type} {node.name}, so it runs in int8"
                    plan.add(tensor, _name(node), slot, role)
                    changed = True
            if node.op_type in ("Concat", "Pad"):
                group = sorted({t for _, t in inputs} | {output})
                if group not in plan.shared_scale:
                    plan.shared_scale.append(group)
    return plan


def _name(item: ir.Value | ir.Node | None) -> str:
    return "" if item is None or item.name is None else item.name


def _value(node: ir.Node, slot: int) -> ir.Value:
    value = node.inputs[slot]
    assert value is not None
    return value


def _quantized_output(plan: QdqPlan, node: ir.Node) -> str:
    """The quantized tensor this node's output reaches through shape-only ops ('' if none)."""
    frontier = [node.outputs[0]]
    while frontier:
        value = frontier.pop()
        if _name(value) in plan.activations:
            return _name(value)
        for reader in readers(value):
            if reader.op_type in SHAPE_OPS and reader.inputs[0] is value:  # data, not a shape operand
                frontier.append(reader.outputs[0])
    return ""


@dataclass
class WeightQuantization:
    """A compute node's quantized weight: values, scales (per channel along ``axis``) and float bias."""

    values: np.ndarray  # int8, or float8_e4m3fn for FP8
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


class InsertQdq(GraphPass):
    """Write Q/DQ for ``plan`` with per-tensor ``activation_amax`` and per-node ``weights``.

    ``element`` is the quantized type (int8, or FP8 E4M3 with scale amax / 448); placement and
    zero points of 0 are the same for both, as TensorRT's rules are.
    """

    def __init__(
        self, plan: QdqPlan, activation_amax: dict[str, float], weights: dict[str, WeightQuantization],
        element: QdqElement = INT8_ELEMENT,
    ) -> None:
        super().__init__()
        self.element = element
        self.plan = plan
        self.activation_amax = unify_shared_scales(plan, activation_amax)
        self.weights = weights

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = bool(self.plan.activations) or bool(self.weights)
        if not modified:
            return ir.passes.PassResult(model, False)
        for domain in ("", "ai.onnx"):
            version = model.opset_imports.get(domain)
            if version is not None and version < self.element.min_opset:
                raise ValueError(f"{self.element.name} Q/DQ needs opset >= {self.element.min_opset}, model has {version}")
        graph = model.graph
        names = NameMaker(graph)
        by_name = nodes_by_name(graph)
        values = values_by_name(graph)
        for tensor, tensor_readers in self.plan.activations.items():
            self._activation(graph, names, by_name, values[tensor], tensor_readers)
        for node_name, wq in self.weights.items():
            self._weight(graph, names, by_name, by_name[node_name], wq)
        tidy(model)  # new nodes were appended: sort, and drop the float weights nothing reads
        return ir.passes.PassResult(model, True)

    def _activation(
        self, graph: ir.Graph, names: NameMaker, by_name: dict[str, ir.Node], value: ir.Value, tensor_readers: list[tuple[str, int]]
    ) -> None:
        tensor = _name(value)
        amax = self.activation_amax.get(tensor)
        if amax is None:
            raise ValueError(f"no activation range for planned tensor {tensor}")
        base = tensor.replace("/", "_").strip("_") or "t"
        qmax = self.element.qmax
        scale = set_initializer(graph, names(f"{base}_scale"), np.array(amax / qmax if amax > 0 else 1.0, np.float32))
        zero_point = set_initializer(graph, names(f"{base}_zero_point"), np.zeros((), self.element.dtype))
        q_out = ir.Value(name=names(f"{base}_quantized"))
        graph.append(ir.node("QuantizeLinear", [value, scale, zero_point], outputs=[q_out], name=names(f"{base}_QuantizeLinear")))
        # One DequantizeLinear per reader: runtimes (onnxruntime's QDQ fusion among them) fuse
        # a DQ into its reader only when it has no other reader.
        for reader, slot in tensor_readers:
            dq_out = ir.Value(name=names(f"{base}_dequantized"))
            graph.append(ir.node("DequantizeLinear", [q_out, scale, zero_point], outputs=[dq_out], name=names(f"{base}_DequantizeLinear")))
            by_name[reader].replace_input_with(slot, dq_out)

    def _weight(self, graph: ir.Graph, names: NameMaker, by_name: dict[str, ir.Node], node: ir.Node, wq: WeightQuantization) -> None:
        base = (node.name or _name(node.inputs[1])).replace("/", "_").strip("_")
        dtype = self.element.dtype
        values = set_initializer(graph, names(f"{base}_weight_{self.element.name}"), np.asarray(wq.values, dtype))
        scale_array = np.asarray(wq.scale, np.float32)
        scale = set_initializer(graph, names(f"{base}_weight_scale"), scale_array)
        zero_point = set_initializer(graph, names(f"{base}_weight_zero_point"), np.zeros(scale_array.shape, dtype))
        dq_out = ir.Value(name=names(f"{base}_weight_dequantized"))
        attrs = {"axis": int(wq.axis)} if wq.axis is not None and scale_array.ndim == 1 else {}
        dq = ir.node("DequantizeLinear", [values, scale, zero_point], attrs, outputs=[dq_out], name=names(f"{base}_weight_DequantizeLinear"))
        graph.append(dq)
        node.replace_input_with(1, dq_out)
        if wq.bias is not None:
            target_name, slot = wq.bias_slot or (_name(node), 2)
            bias = set_initializer(graph, names(f"{base}_bias_corrected"), np.asarray(wq.bias, np.float32))
            set_input(by_name[target_name], slot, bias)

