"""TensorRT explicit-quantization lint: does a Q/DQ graph follow the rules TensorRT needs?

A Q/DQ model that breaks them still builds, but TensorRT quietly runs the offending layers in
fp16/fp32 (or refuses asymmetric scales), which users discover as an "int8" engine slower than
fp16. The lint names each node that breaks a rule so the model can be fixed before a
40-minute engine build on the board. It reads any Q/DQ graph, not only edgeq's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from edgeq.graph.proto import GraphIndex, get_attribute
from edgeq.serialization import Serializable

COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
POOLING_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean")
SHAPE_OPS = ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Quantized types TensorRT's ONNX parser accepts for Q/DQ.
ALLOWED_TYPES = {
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.INT4: "int4",
    onnx.TensorProto.FLOAT8E4M3FN: "fp8",
}


@dataclass
class LintViolation(Serializable):
    """One broken rule at one node. ``rule`` is a stable identifier tests and scripts match on."""

    schema_type = "edgeq.LintViolation"
    schema_version = 1

    rule: str
    node: str
    message: str

    def __str__(self) -> str:
        return f"{self.node}: [{self.rule}] {self.message}"


def _name(node: onnx.NodeProto, position: int) -> str:
    return node.name or f"{node.op_type}_{position}"


class _Linter:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.index = GraphIndex(model.graph)
        self.names = {tuple(n.output): _name(n, i) for i, n in enumerate(model.graph.node)}
        self.violations: list[LintViolation] = []
        self.opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)

    def add(self, rule: str, node: onnx.NodeProto, message: str) -> None:
        self.violations.append(LintViolation(rule, self.names.get(tuple(node.output), node.name), message))

    def dq_of(self, tensor: str) -> onnx.NodeProto | None:
        node = self.index.producer.get(tensor)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    def is_weight_qdq(self, node: onnx.NodeProto) -> bool:
        """A Q/DQ on a constant (a weight), as opposed to one on an activation."""
        if node.op_type == "QuantizeLinear":
            return self.index.is_constant(node.input[0])
        source = node.input[0]
        if self.index.is_constant(source):
            return True
        q = self.index.producer.get(source)
        return q is not None and q.op_type == "QuantizeLinear" and self.index.is_constant(q.input[0])

    def scale_of(self, node: onnx.NodeProto) -> np.ndarray | None:
        return self.index.constant(node.input[1]) if len(node.input) > 1 else None

    def check_qdq_node(self, node: onnx.NodeProto) -> None:
        zp = self.index.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if len(node.input) > 2 and node.input[2] and zp is None:
            self.add("zero-point-not-constant", node, "zero point is computed at run time; TensorRT needs a constant 0")
        if zp is not None and np.any(np.asarray(zp, np.float64) != 0):
            self.add("asymmetric-zero-point", node, f"zero point {np.asarray(zp).ravel()[:4].tolist()} is not 0; TensorRT quantization is symmetric")
        qtype = self._quantized_type(node, zp)
        if qtype is not None and qtype not in ALLOWED_TYPES:
            tname = onnx.TensorProto.DataType.Name(qtype).lower()
            self.add("unsupported-type", node, f"quantized type {tname}; TensorRT takes int8 (or int4/fp8 weights)")
        scale = self.scale_of(node)
        if scale is None:
            self.add("scale-not-constant", node, "scale is computed at run time; TensorRT needs a constant scale")
            return
        if np.any(~np.isfinite(scale)) or np.any(scale <= 0):
            self.add("invalid-scale", node, "scale has zero, negative or non-finite values")
        per_channel = scale.size > 1
        if per_channel and not self.is_weight_qdq(node):
            self.add("per-channel-activation", node, f"activation quantized with {scale.size} scales; TensorRT takes one scale per activation tensor")
        if per_channel and self.opset < 13:
            self.add("opset", node, f"per-channel Q/DQ needs opset >= 13, model has {self.opset}")

    def _quantized_type(self, node: onnx.NodeProto, zp: np.ndarray | None) -> int | None:
        if len(node.input) > 2 and node.input[2] in self.index.initializers:
            return int(self.index.initializers[node.input[2]].data_type)
        if node.op_type == "DequantizeLinear" and node.input[0] in self.index.initializers:
            return int(self.index.initializers[node.input[0]].data_type)
        if node.op_type == "QuantizeLinear" and (len(node.input) < 3 or not node.input[2]):
            attr = get_attribute(node, "output_dtype", 0)
            return int(attr) if attr else onnx.TensorProto.UINT8  # ONNX default without a zero point
        if zp is not None:
            return int(onnx.helper.np_dtype_to_tensor_dtype(np.asarray(zp).dtype))
        return None

    def check_compute(self, node: onnx.NodeProto) -> None:
        if len(node.input) < 2:
            return
        act_dq = self.dq_of(node.input[0])
        weight_dq = self.dq_of(node.input[1])
        if act_dq is None and weight_dq is None:
            return  # a float layer: allowed (the summary says why it stayed float)
        if act_dq is None:
            self.add("unquantized-input", node, f"weight is quantized but input {node.input[0]!r} has no Q/DQ; TensorRT runs this layer in float")
        if weight_dq is None:
            if not self.index.is_constant(node.input[1]):
                self.add("unquantized-input", node, f"input {node.input[0]!r} is quantized but input {node.input[1]!r} has no Q/DQ; TensorRT runs this layer in float")
                return
            self.add("unquantized-weight", node, f"input is quantized but weight {node.input[1]!r} has no DQ; TensorRT runs this layer in float")
        else:
            self.check_weight_axis(node, weight_dq)
        if len(node.input) > 2 and node.input[2] and self.dq_of(node.input[2]) is not None:
            self.add("quantized-bias", node, "bias goes through DequantizeLinear; keep biases in float for TensorRT")

    def check_weight_axis(self, node: onnx.NodeProto, dq: onnx.NodeProto) -> None:
        scale = self.scale_of(dq)
        if scale is None or scale.size <= 1 or int(get_attribute(dq, "block_size", 0)):
            return  # per-tensor, or block-wise (int4 weight-only): no per-channel axis to check
        weight = self.index.constant(dq.input[0])
        q = self.index.producer.get(dq.input[0])
        if weight is None and q is not None and q.op_type == "QuantizeLinear":
            weight = self.index.constant(q.input[0])
        if weight is None:
            return
        axis = int(get_attribute(dq, "axis", 1))
        axis = axis + weight.ndim if axis < 0 else axis
        expected = _expected_axis(node, weight.ndim)
        if expected is None:
            self.add("weight-axis", dq, f"{node.op_type} {self.names.get(tuple(node.output), node.name)} cannot take per-channel weights (grouped ConvTranspose)")
        elif axis != expected:
            self.add("weight-axis", dq, f"weight scales along axis {axis}; {node.op_type} needs the output-channel axis {expected}")
        elif scale.size != weight.shape[axis]:
            self.add("weight-axis", dq, f"{scale.size} scales for {weight.shape[axis]} output channels")
        if weight.dtype == np.int8 and np.any(weight == -128):
            self.add("weight-range", dq, "int8 weight uses -128; TensorRT weights are symmetric in [-127, 127]")

    def quantized_conv_outputs(self) -> set[str]:
        out = set()
        for node in self.graph.node:
            quantized = len(node.input) > 1 and (self.dq_of(node.input[0]) is not None or self.dq_of(node.input[1]) is not None)
            if node.op_type in ("Conv", "ConvTranspose") and quantized:
                out.add(node.output[0])
        return out

    def feeds_quantize(self, tensor: str) -> bool:
        frontier = [tensor]
        while frontier:
            t = frontier.pop()
            for reader in self.index.readers(t):
                if reader.op_type == "QuantizeLinear":
                    return True
                if reader.op_type in SHAPE_OPS and reader.input[0] == t:  # data, not a shape operand
                    frontier.append(reader.output[0])
        return False

    def check_add(self, node: onnx.NodeProto, conv_outputs: set[str]) -> None:
        if len(node.input) != 2 or not any(t in conv_outputs for t in node.input):
            return
        if any(self.dq_of(t) is not None or self.index.is_constant(t) for t in node.input):
            return
        residual = next((t for t in node.input if t not in conv_outputs), node.input[1])
        self.add("unquantized-residual", node, f"residual input {residual!r} of the Add after a quantized Conv has no Q/DQ; TensorRT cannot fuse the Add into the Conv")

    def check_pool_or_concat(self, node: onnx.NodeProto) -> None:
        if not node.output or not self.feeds_quantize(node.output[0]):
            return
        inputs = [t for t in node.input if t and not self.index.is_constant(t)]
        if node.op_type in POOLING_OPS:
            inputs = inputs[:1]
        missing = [t for t in inputs if self.dq_of(t) is None]
        if missing:
            self.add("float-" + ("pooling" if node.op_type in POOLING_OPS else "concat"), node, f"output is quantized but input {missing[0]!r} has no Q/DQ; TensorRT runs {node.op_type} in float between two int8 layers")
            return
        if node.op_type == "Concat":
            scales = []
            for t in inputs:
                dq = self.dq_of(t)
                scale = self.scale_of(dq) if dq is not None else None
                if scale is not None:
                    scales.append(float(np.ravel(scale)[0]))
            if scales and (max(scales) - min(scales)) > 1e-6 * max(scales):
                self.add("concat-scales", node, f"inputs use different scales ({min(scales):.4g} .. {max(scales):.4g}); TensorRT concatenates in int8 only with one scale")

    def run(self) -> list[LintViolation]:
        conv_outputs = self.quantized_conv_outputs()
        for node in self.graph.node:
            if node.op_type in QDQ_OPS:
                self.check_qdq_node(node)
            elif node.op_type in COMPUTE_OPS:
                self.check_compute(node)
            elif node.op_type == "Add":
                self.check_add(node, conv_outputs)
            elif node.op_type in POOLING_OPS or node.op_type == "Concat":
                self.check_pool_or_concat(node)
        return self.violations


def _expected_axis(node: onnx.NodeProto, rank: int) -> int | None:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1 if int(get_attribute(node, "group", 1)) == 1 else None
    if node.op_type == "Gemm":
        return 0 if int(get_attribute(node, "transB", 0)) else 1
    return rank - 1


def lint_tensorrt(model: onnx.ModelProto) -> list[LintViolation]:
    """Every place ``model`` breaks TensorRT's explicit-quantization rules, by node name."""
    return _Linter(model).run()


def _weight_only_violations(model: onnx.ModelProto) -> tuple[list[LintViolation], set[str]]:
    """TensorRT's block-quantization rules on each blocked DequantizeLinear, and the names of the
    nodes they cover (the blocked DQs and their readers)."""
    index = GraphIndex(model.graph)
    names = {id(n): n.name or f"{n.op_type}_{i}" for i, n in enumerate(model.graph.node)}
    covered: set[str] = set()
    found: list[LintViolation] = []
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or not get_attribute(node, "block_size", 0):
            continue
        name = names[id(node)]
        covered.add(name)
        covered.update(names[id(r)] for r in index.readers(node.output[0]))
        weight = index.initializers.get(node.input[0])
        if weight is None:
            found.append(LintViolation("weight-only-not-constant", name, "blocked DequantizeLinear input is not a constant weight"))
            continue
        if weight.data_type not in (onnx.TensorProto.INT4, onnx.TensorProto.INT8):
            kind = onnx.TensorProto.DataType.Name(weight.data_type).lower()
            found.append(LintViolation("weight-only-type", name, f"{kind} blocks; TensorRT takes INT4 (signed) weight-only blocks"))
        rank = len(weight.dims)
        axis = int(get_attribute(node, "axis", 1))  # type: ignore[call-overload]
        axis = axis + rank if axis < 0 else axis
        if rank >= 2 and axis != rank - 2:
            found.append(LintViolation("weight-only-axis", name, f"blocks along axis {axis}; TensorRT blocks a MatMul weight along K (axis {rank - 2})"))
        if rank and weight.dims[-1] % 2:
            found.append(LintViolation("weight-only-shape", name, f"last dimension {weight.dims[-1]} is odd; INT4 packs two values per byte"))
        for reader in index.readers(node.output[0]):
            if reader.op_type not in ("MatMul", "Gemm") or list(reader.input).index(node.output[0]) != 1:
                found.append(LintViolation("weight-only-reader", name, f"feeds {reader.op_type}; TensorRT weight-only is DequantizeLinear -> MatMul/Gemm weight"))
    return found, covered


def tensorrt_violations(model: onnx.ModelProto) -> list[LintViolation]:
    """The TensorRT lint, plus the INT4 weight-only rules (blocked DequantizeLinear -> MatMul/Gemm).

    Weight-only layers have no activation Q/DQ and block their scales along K (the second-to-last
    weight axis) by design: the lint's int8 rules ``unquantized-input`` and ``weight-axis`` do not
    apply to them, TensorRT's block-quantization rules do (INT4, strictly positive scales, zero
    point 0, one blocked axis, an even last dimension).
    """
    own, covered = _weight_only_violations(model)
    kept = [v for v in lint_tensorrt(model)
            if not (v.rule in ("unquantized-input", "weight-axis") and v.node in covered)]
    return kept + own
