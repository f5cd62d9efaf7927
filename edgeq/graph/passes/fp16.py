"""Float parts of a model to fp16, for strongly typed TensorRT builds.

From TensorRT 10 a Q/DQ model is built strongly typed: every layer runs in the type the ONNX
says, so float parts left in fp32 *run* in fp32 (no ``--fp16`` flag rescues them). This pass
rewrites the float parts to fp16 where that is safe, and only there:

- Conv/ConvTranspose/MatMul/Gemm always run in fp16 (that is where the time goes);
- element-wise, layout and pooling ops run in fp16 only when every non-constant float input is
  already fp16, so a chain that started in fp32 stays fp32;
- everything else stays fp32, notably the statistics of normalisation (LayerNormalization,
  ReduceMean, Pow, Sqrt), Softmax, Exp/Log, and any op of another domain. That is also why an
  ``x + 1e-12`` after a variance stays fp32 (1e-12 is 0 in fp16) and an attention mask of
  ``-3.4e38`` is never added in fp16 (it would become -inf);
- graph inputs and outputs keep their float32 type, with Casts at the boundary, so callers and
  the runtime feed the same arrays as before.

Constants read only by fp16 nodes are stored as fp16 (half the bytes); shared ones get an fp16
copy. int8 Q/DQ layers (and the Conv/MatMul they feed) keep fp32 types: their per-channel scales
go far below fp16's range, and TensorRT runs them in int8 anyway. Weight-only INT4 blocks run
fp16 with fp16 scales (TensorRT >= 10 takes them; opset 19+), zero points keep their types. The result passes ``onnx.checker`` and runs on onnxruntime's CPU
provider (which inserts its own casts around kernels it lacks in fp16).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto

from edgeq.graph.ops import COMPUTE_OPS
from edgeq.graph.passes.base import GraphPass, NameMaker, constant, set_initializer

FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
FP16_MAX = float(np.finfo(np.float16).max)
QDQ_FP16_OPSET = 19
FP16_TINY = float(2.0**-24)  # smallest positive fp16 (subnormal)

# Always fp16: COMPUTE_OPS (edgeq.graph.ops), the compute-heavy ops.
# fp16 when all their non-constant float inputs already are.
FOLLOW_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Max", "Min", "Where",
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Erf", "Gelu",
    "Elu", "Selu", "Softplus", "Mish",
    "Concat", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Split", "Gather",
    "Expand", "Tile", "Identity", "Pad", "DepthToSpace", "SpaceToDepth",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization", "Resize",
    "QuantizeLinear", "DequantizeLinear",
})
# fp16 only when they pool a dequantized tensor (quantized global pooling).
QUANTIZED_POOLING = frozenset({"ReduceMean", "ReduceMax"})
# Ops whose fp32 placement is a choice of this pass, not a precision need (not "kept for precision").
KNOWN_OPS = frozenset(COMPUTE_OPS) | FOLLOW_OPS | QUANTIZED_POOLING
# Ops that read any input type and produce a fixed type: never need an input cast.
TYPE_AGNOSTIC_OPS = frozenset({"Cast", "Shape", "Size", "CastLike"})
# Float inputs that stay float32 even when the node runs in fp16 (op -> input positions).
FIXED_FLOAT_INPUTS = {"Resize": {1, 2}}


@dataclass
class Fp16Report:
    """What the pass did: counts for the export summary, and the ops it kept in fp32."""

    fp16_nodes: int = 0
    fp32_nodes: int = 0
    casts_added: int = 0
    constants_converted: int = 0
    clipped_values: int = 0
    raised_scales: int = 0
    int8_layers_fp32: int = 0
    kept_fp32: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        kept = ", ".join(f"{op} {n}" for op, n in sorted(self.kept_fp32.items(), key=lambda kv: -kv[1]))
        text = f"fp16: {self.fp16_nodes} nodes, fp32: {self.fp32_nodes} nodes"
        if kept:
            text += f" (kept for precision: {kept})"
        text += f", {self.casts_added} casts"
        if self.clipped_values:
            text += f", {self.clipped_values} constant values clipped to the fp16 range"
        if self.int8_layers_fp32:
            text += f", {self.int8_layers_fp32} int8 Q/DQ layers keep fp32 types"
        if self.raised_scales:
            text += f", {self.raised_scales} scales raised to 2^-24 (smallest fp16)"
        return text


def _float_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor the graph knows after shape inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, ValueError):
        inferred = model
    types: dict[str, int] = {}
    graph = inferred.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    types[node.output[0]] = attr.t.data_type
    return types


def _subgraph_references(graph: ir.Graph) -> set[str]:
    """Names read inside subgraphs (If/Loop bodies): those tensors keep their float32 type."""
    names: set[str] = set()
    for node in graph:
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                subgraphs: Sequence[ir.Graph] = [attr.as_graph()]
            elif attr.type == ir.AttributeType.GRAPHS:
                subgraphs = attr.as_graphs()
            else:
                continue
            for sub in subgraphs:
                names |= {v.name for n in sub for v in n.inputs if v is not None and v.name}
                names |= _subgraph_references(sub)
    return names


def _to_fp16(array: np.ndarray, report: Fp16Report, scale: bool = False) -> np.ndarray:
    """fp16 values; out-of-range ones clipped. A Q/DQ scale never becomes 0 (TensorRT needs > 0)."""
    finite = np.isfinite(array)
    over = finite & (np.abs(array) > FP16_MAX)
    report.clipped_values += int(over.sum())
    out = np.where(over, np.sign(array) * FP16_MAX, array).astype(np.float16)
    if scale:
        vanished = (out == 0) & (array != 0)
        if vanished.any():
            report.raised_scales += int(vanished.sum())
            out = np.where(vanished, np.sign(array) * FP16_TINY, out).astype(np.float16)
    return out


class Fp16Pass(GraphPass):
    """Rewrite float parts to fp16 (see the module docstring for which, and why)."""

    def __init__(self) -> None:
        super().__init__()
        self.report = Fp16Report()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.report = Fp16Report()
        rewrite = _Rewrite(model, self.report)
        for node in list(model.graph):
            rewrite.node(node)
        rewrite.constants()
        rewrite.outputs()
        rewrite.drop_stale_types()
        report = self.report
        return ir.passes.PassResult(model, bool(report.fp16_nodes or report.casts_added or report.constants_converted))


class _Rewrite:
    """One run of the pass: the types before and after, and the casts and constants it made.

    Tensors are tracked by name (``types`` comes from onnx shape inference on the serialized
    model); the graph is edited in place, so a node's inputs are its original values until the
    node itself is rewritten.
    """

    def __init__(self, model: ir.Model, report: Fp16Report) -> None:
        self.graph = graph = model.graph
        self.report = report
        # Q/DQ take fp16 data and scales from opset 19 on; before that they stay fp32, with casts.
        opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))
        self.follow = FOLLOW_OPS if opset >= QDQ_FP16_OPSET else FOLLOW_OPS - {"QuantizeLinear", "DequantizeLinear"}
        self.types = types = _float_types(ir.serde.serialize_model(model))
        self.names = NameMaker(graph)
        self.constant_nodes: dict[str, ir.Node] = {
            _name(n.outputs[0]): n for n in graph
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and types.get(_name(n.outputs[0])) == FLOAT
        }
        self.pinned_fp32 = _subgraph_references(graph) | {_name(v) for v in graph.outputs if _name(v) in graph.initializers}
        self.producers = {_name(v): n.op_type for n in graph for v in n.outputs}
        # int8 Q/DQ layers keep fp32 types: their per-channel scales (BN-folded, equalized) reach
        # 1e-11, far below fp16, and TensorRT runs them in int8 whatever the float type around.
        self.int8_dq_outputs = {
            _name(n.outputs[0]) for n in graph
            if n.op_type == "DequantizeLinear" and types.get(_name(n.inputs[0])) in (TensorProto.INT8, TensorProto.UINT8)
        }
        self.scales = {_name(n.inputs[1]) for n in graph if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.inputs) > 1}
        self.current: dict[str, int] = dict(types)  # type of each tensor after the rewrite
        self.cast_cache: dict[tuple[str, int], ir.Value] = {}
        self.fp16_constant: dict[str, None] = {}  # constants some reader wants in fp16, in order
        self.constant_readers: dict[str, set[int]] = {}  # constant -> wanted types
        self.pending: list[tuple[ir.Node, int, str]] = []  # (reader, slot, constant) resolved once every reader is known

    def is_constant(self, name: str) -> bool:
        return name in self.graph.initializers or name in self.constant_nodes

    def cast(self, value: ir.Value, to: int, before: ir.Node) -> ir.Value:
        key = (_name(value), to)
        if key not in self.cast_cache:
            out = ir.Value(name=self.names(f"{value.name}__{'fp16' if to == FLOAT16 else 'fp32'}"))
            node = ir.node("Cast", [value], {"to": to}, outputs=[out], name=self.names(f"Cast_{out.name}"))
            self.graph.insert_before(before, node)
            self.report.casts_added += 1
            self.current[_name(out)] = to
            self.cast_cache[key] = out
        return self.cast_cache[key]

    def wants(self, node: ir.Node, slot: int, to: int) -> None:
        """Make input ``slot`` of ``node`` type ``to`` (a constant is converted later, a tensor is cast)."""
        value = node.inputs[slot]
        assert value is not None
        name = _name(value)
        if self.is_constant(name):
            self.constant_readers.setdefault(name, set()).add(to)
            if self.current.get(name) != to and to == FLOAT16:
                self.fp16_constant.setdefault(name, None)
                self.pending.append((node, slot, name))
        elif self.current.get(name) != to:
            node.replace_input_with(slot, self.cast(value, to, node))

    def node(self, node: ir.Node) -> None:
        """Decide ``node``'s type and cast or convert its float inputs to it."""
        report, types, current = self.report, self.types, self.current
        if node.op_type == "Constant" and node.outputs and node.outputs[0].name in self.constant_nodes:
            return
        inputs = [_name(v) for v in node.inputs]
        outputs = [_name(v) for v in node.outputs]
        domain_ok = node.domain in ("", "ai.onnx")
        float_inputs = [i for i, n in enumerate(inputs) if n and types.get(n) in (FLOAT, FLOAT16)]
        fixed = FIXED_FLOAT_INPUTS.get(node.op_type, set())
        follow_inputs = [i for i in float_inputs if i not in fixed]
        # A tensor of unknown type (an op shape inference does not know) is never cast: its
        # readers stay fp32 and its producer, having unknown outputs, stays fp32 too.
        outputs_known = all(not o or o in types for o in outputs)
        inputs_known = all(not i or i in types for i in inputs)
        outputs_pinned = any(o in self.pinned_fp32 for o in outputs)
        fp16 = False
        int8_layer = node.op_type == "QuantizeLinear" or outputs[0] in self.int8_dq_outputs or (
            node.op_type in COMPUTE_OPS and any(i in self.int8_dq_outputs for i in inputs)
        )
        if int8_layer:
            report.int8_layers_fp32 += node.op_type in COMPUTE_OPS
        elif domain_ok and outputs_known and inputs_known and not outputs_pinned:
            if node.op_type in COMPUTE_OPS:
                fp16 = True
            elif node.op_type in QUANTIZED_POOLING and "DequantizeLinear" in self.follow:
                # Global pooling written as ReduceMean after a (weight-only) DQ: fp16 like any
                # pooling. A ReduceMean of float data (a LayerNorm's statistics) stays fp32.
                dynamic = inputs[:1]
                fp16 = bool(dynamic) and all(
                    current.get(n) == FLOAT16 and self.producers.get(n) == "DequantizeLinear" for n in dynamic
                )
            elif node.op_type in self.follow:
                dynamic = [inputs[i] for i in follow_inputs if not self.is_constant(inputs[i])]
                fp16 = all(current.get(n) == FLOAT16 for n in dynamic)
                if not dynamic and not follow_inputs:
                    fp16 = False
        if node.op_type in TYPE_AGNOSTIC_OPS and domain_ok:
            report.fp32_nodes += 1
            return
        target = FLOAT16 if fp16 else FLOAT
        for i in follow_inputs if fp16 else float_inputs:
            self.wants(node, i, target)
        if fp16:
            for i in fixed:
                if i < len(inputs) and inputs[i] and types.get(inputs[i]) in (FLOAT, FLOAT16):
                    self.wants(node, i, FLOAT)
            report.fp16_nodes += 1
        else:
            report.fp32_nodes += 1
            sensitive = node.op_type not in KNOWN_OPS and not int8_layer
            if sensitive and any(types.get(o) == FLOAT for o in outputs):
                report.kept_fp32[node.op_type] = report.kept_fp32.get(node.op_type, 0) + 1
        for out in outputs:
            if out and types.get(out) in (FLOAT, FLOAT16):
                current[out] = FLOAT16 if fp16 else types[out]

    def constants(self) -> None:
        """Convert constants in place when every reader wants fp16, else add an fp16 copy."""
        graph, report = self.graph, self.report
        resolved: dict[str, ir.Value] = {}
        for name in self.fp16_constant:
            only_fp16 = self.constant_readers.get(name) == {FLOAT16} and name not in self.pinned_fp32
            node = self.constant_nodes.get(name)
            value = graph.initializers[name] if node is None else node.outputs[0]
            array = constant(value)
            assert array is not None
            halved = _to_fp16(array, report, name in self.scales)
            if not only_fp16:
                resolved[name] = set_initializer(graph, self.names(f"{name}__fp16"), halved)
            elif node is None:
                resolved[name] = set_initializer(graph, name, halved)
            else:
                node.attributes.clear()
                node.attributes["value"] = ir.AttrTensor("value", ir.tensor(halved))
                resolved[name] = value
            report.constants_converted += 1
        for node, slot, name in self.pending:
            node.replace_input_with(slot, resolved[name])

    def outputs(self) -> None:
        """Graph outputs keep float32: the fp16 producer writes a new name, a Cast restores the old."""
        graph = self.graph
        renamed: dict[str, ir.Value] = {}
        for output in graph.outputs:
            name = _name(output)
            if name not in renamed and self.current.get(name) == FLOAT16 and self.types.get(name) == FLOAT:
                renamed[name] = output
        kept: dict[str, ir.Value] = {}
        for name, value in renamed.items():
            kept[name] = ir.Value(name=name, type=value.type, shape=value.shape)
            value.name = self.names(f"{name}__fp16")
        for name, value in renamed.items():
            graph.append(ir.node("Cast", [value], {"to": FLOAT}, outputs=[kept[name]], name=self.names(f"Cast_{name}")))
            self.report.casts_added += 1
        for index, output in enumerate(graph.outputs):
            for name, value in renamed.items():
                if output is value:
                    graph.outputs[index] = kept[name]

    def drop_stale_types(self) -> None:
        """Forget the (float32) annotations of intermediate tensors and constants, so the file has no
        ``value_info``; onnxruntime and the checker re-infer (a tensor's type is in its data)."""
        boundary = {*self.graph.inputs, *self.graph.outputs}
        values = [v for node in self.graph for v in node.outputs]
        for value in [*values, *self.graph.initializers.values()]:
            if value not in boundary:
                value.type = None
                value.shape = None


def _name(value: ir.Value | None) -> str:
    return "" if value is None or value.name is None else value.name
