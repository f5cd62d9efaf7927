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

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeq.graph.passes.base import NameMaker, Pass, PassResult, opset_version

FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
FP16_MAX = float(np.finfo(np.float16).max)
QDQ_FP16_OPSET = 19
FP16_TINY = float(2.0**-24)  # smallest positive fp16 (subnormal)

# Always fp16: the compute-heavy ops.
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
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


def _subgraph_references(graph: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in graphs:
                names |= {i for n in sub.node for i in n.input}
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


class Fp16Pass(Pass):
    """Rewrite float parts to fp16 (see the module docstring for which, and why)."""

    def __init__(self) -> None:
        self.report = Fp16Report()

    def call(self, model: onnx.ModelProto) -> PassResult:
        self.report = Fp16Report()
        report = self.report
        graph = model.graph
        # Q/DQ take fp16 data and scales from opset 19 on; before that they stay fp32, with casts.
        follow = FOLLOW_OPS if opset_version(model) >= QDQ_FP16_OPSET else FOLLOW_OPS - {"QuantizeLinear", "DequantizeLinear"}
        types = _float_types(model)
        names = NameMaker(graph)
        initializers = {t.name: t for t in graph.initializer}
        constant_nodes: dict[str, onnx.NodeProto] = {}
        for n in graph.node:
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and types.get(n.output[0]) == FLOAT:
                constant_copy = onnx.NodeProto()
                constant_copy.CopyFrom(n)
                constant_nodes[n.output[0]] = constant_copy
        pinned_fp32 = _subgraph_references(graph) | {o.name for o in graph.output if o.name in initializers}

        def is_constant(name: str) -> bool:
            return name in initializers or name in constant_nodes

        producers = {o: n.op_type for n in graph.node for o in n.output}
        # int8 Q/DQ layers keep fp32 types: their per-channel scales (BN-folded, equalized) reach
        # 1e-11, far below fp16, and TensorRT runs them in int8 whatever the float type around.
        int8_dq_outputs = {
            n.output[0] for n in graph.node
            if n.op_type == "DequantizeLinear" and types.get(n.input[0]) in (TensorProto.INT8, TensorProto.UINT8)
        }
        current: dict[str, int] = dict(types)  # type of each tensor after the rewrite
        cast_cache: dict[tuple[str, int], str] = {}
        fp16_constant: dict[str, str] = {}
        constant_readers: dict[str, set[int]] = {}  # constant -> wanted types
        new_nodes: list[onnx.NodeProto] = []

        def cast(name: str, to: int) -> str:
            key = (name, to)
            if key not in cast_cache:
                out = names(f"{name}__{'fp16' if to == FLOAT16 else 'fp32'}")
                new_nodes.append(helper.make_node("Cast", [name], [out], name=names(f"Cast_{out}"), to=to))
                report.casts_added += 1
                current[out] = to
                cast_cache[key] = out
            return cast_cache[key]

        def wants(name: str, to: int) -> str:
            """The name of ``name`` in type ``to`` (a constant is converted later, a tensor is cast)."""
            if is_constant(name):
                constant_readers.setdefault(name, set()).add(to)
                if current.get(name) == to:
                    return name
                if to == FLOAT16:
                    fp16_constant.setdefault(name, "")
                    return f"\x00fp16:{name}"  # resolved once every reader is known
                return name
            if current.get(name) == to:
                return name
            return cast(name, to)

        for node in list(graph.node):
            if node.op_type == "Constant" and node.output and node.output[0] in constant_nodes:
                new_nodes.append(constant_nodes[node.output[0]])
                continue
            domain_ok = node.domain in ("", "ai.onnx")
            float_inputs = [i for i, n in enumerate(node.input) if n and types.get(n) in (FLOAT, FLOAT16)]
            fixed = FIXED_FLOAT_INPUTS.get(node.op_type, set())
            follow_inputs = [i for i in float_inputs if i not in fixed]
            # A tensor of unknown type (an op shape inference does not know) is never cast: its
            # readers stay fp32 and its producer, having unknown outputs, stays fp32 too.
            outputs_known = all(not o or o in types for o in node.output)
            inputs_known = all(not i or i in types for i in node.input)
            outputs_pinned = any(o in pinned_fp32 for o in node.output)
            fp16 = False
            int8_layer = node.op_type == "QuantizeLinear" or node.output[0] in int8_dq_outputs or (
                node.op_type in COMPUTE_OPS and any(i in int8_dq_outputs for i in node.input)
            )
            if int8_layer:
                report.int8_layers_fp32 += node.op_type in COMPUTE_OPS
            elif domain_ok and outputs_known and inputs_known and not outputs_pinned:
                if node.op_type in COMPUTE_OPS:
                    fp16 = True
                elif node.op_type in QUANTIZED_POOLING and "DequantizeLinear" in follow:
                    # Global pooling written as ReduceMean after a (weight-only) DQ: fp16 like any
                    # pooling. A ReduceMean of float data (a LayerNorm's statistics) stays fp32.
                    dynamic = [node.input[0]] if node.input else []
                    fp16 = bool(dynamic) and all(
                        current.get(n) == FLOAT16 and producers.get(n) == "DequantizeLinear" for n in dynamic
                    )
                elif node.op_type in follow:
                    dynamic = [node.input[i] for i in follow_inputs if not is_constant(node.input[i])]
                    fp16 = all(current.get(n) == FLOAT16 for n in dynamic)
                    if not dynamic and not follow_inputs:
                        fp16 = False
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            if node.op_type in TYPE_AGNOSTIC_OPS and domain_ok:
                report.fp32_nodes += 1
                new_nodes.append(copy)
                continue
            target = FLOAT16 if fp16 else FLOAT
            for i in follow_inputs if fp16 else float_inputs:
                copy.input[i] = wants(node.input[i], target)
            if fp16:
                for i in fixed:
                    if i < len(node.input) and node.input[i] and types.get(node.input[i]) in (FLOAT, FLOAT16):
                        copy.input[i] = wants(node.input[i], FLOAT)
                report.fp16_nodes += 1
            else:
                report.fp32_nodes += 1
                sensitive = node.op_type not in (COMPUTE_OPS | FOLLOW_OPS | QUANTIZED_POOLING) and not int8_layer
                if sensitive and any(types.get(o) == FLOAT for o in node.output):
                    report.kept_fp32[node.op_type] = report.kept_fp32.get(node.op_type, 0) + 1
            for out in node.output:
                if out and types.get(out) in (FLOAT, FLOAT16):
                    current[out] = FLOAT16 if fp16 else types[out]
            new_nodes.append(copy)

        scales = {n.input[1] for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 1}
        # Constants: convert in place when every reader wants fp16, else add an fp16 copy.
        resolved: dict[str, str] = {}
        for name in fp16_constant:
            only_fp16 = constant_readers.get(name) == {FLOAT16} and name not in pinned_fp32
            if name in initializers:
                array = numpy_helper.to_array(initializers[name])
                if only_fp16:
                    initializers[name].CopyFrom(numpy_helper.from_array(_to_fp16(array, report, name in scales), name))
                    resolved[name] = name
                else:
                    copy_name = names(f"{name}__fp16")
                    graph.initializer.append(numpy_helper.from_array(_to_fp16(array, report, name in scales), copy_name))
                    resolved[name] = copy_name
            else:
                node = constant_nodes[name]
                array = numpy_helper.to_array(next(a.t for a in node.attribute if a.name == "value"))
                if only_fp16:
                    del node.attribute[:]
                    node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(_to_fp16(array, report, name in scales))))
                    resolved[name] = name
                else:
                    copy_name = names(f"{name}__fp16")
                    graph.initializer.append(numpy_helper.from_array(_to_fp16(array, report, name in scales), copy_name))
                    resolved[name] = copy_name
            report.constants_converted += 1
        for node in new_nodes:
            for i, name in enumerate(node.input):
                if name.startswith("\x00fp16:"):
                    node.input[i] = resolved[name[len("\x00fp16:"):]]

        # Graph outputs keep float32: the fp16 producer writes a new name, a Cast restores the old.
        renames: dict[str, str] = {}
        for output in graph.output:
            if current.get(output.name) == FLOAT16 and types.get(output.name) == FLOAT:
                renames[output.name] = names(f"{output.name}__fp16")
        if renames:
            for node in new_nodes:
                for i, name in enumerate(node.output):
                    if name in renames:
                        node.output[i] = renames[name]
                for i, name in enumerate(node.input):
                    if name in renames:
                        node.input[i] = renames[name]
            for original, renamed in renames.items():
                new_nodes.append(helper.make_node("Cast", [renamed], [original], name=names(f"Cast_{original}"), to=FLOAT))
                report.casts_added += 1

        del graph.node[:]
        graph.node.extend(new_nodes)
        del graph.value_info[:]  # stale float32 annotations; onnxruntime and the checker re-infer

        return PassResult(model, report.fp16_nodes > 0)
