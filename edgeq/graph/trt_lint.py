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
import onnx_ir as ir

from edgeq.graph.formats.nvfp4 import nvfp4_chain
from edgeq.graph.ops import COMPUTE_OPS, POOLING_OPS, SHAPE_OPS
from edgeq.graph.passes.base import constant, input_value, is_constant, to_ir
from edgeq.numerics.codecs.minifloat import E4M3
from edgeq.serialization import Serializable

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Quantized types TensorRT's ONNX parser accepts for Q/DQ.
ALLOWED_TYPES = {
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.INT4: "int4",
    onnx.TensorProto.FLOAT8E4M3FN: "fp8",
    onnx.TensorProto.FLOAT4E2M1: "fp4",
}
NVFP4_BLOCK = 16  # E2M1 values per E4M3 scale in TensorRT's (and ModelOpt's) FP4


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


def _name(node: ir.Node, position: int) -> str:
    return node.name or f"{node.op_type}_{position}"


def _tensor(value: ir.Value | None) -> str:
    """A value's name as messages quote it ("" for a missing optional input)."""
    return (value.name or "") if value is not None else ""


def _readers(graph: ir.Graph, value: ir.Value) -> list[ir.Node]:
    """Top-level nodes reading ``value``, once per input slot (a subgraph's use is not a reader here)."""
    return [use.node for use in value.uses() if use.node.graph is graph]


def _initializer(value: ir.Value | None) -> ir.TensorProtocol | None:
    """The stored tensor of an initializer (not of a ``Constant`` node), else None."""
    return value.const_value if value is not None and value.is_initializer() else None


class _Linter:
    def __init__(self, model: ir.Model) -> None:
        self.graph = model.graph
        self.names = {n: _name(n, i) for i, n in enumerate(model.graph)}
        self.violations: list[LintViolation] = []
        self.opset = max((v for d, v in model.opset_imports.items() if d in ("", "ai.onnx")), default=0)

    def add(self, rule: str, node: ir.Node, message: str) -> None:
        self.violations.append(LintViolation(rule, self.names.get(node, node.name or ""), message))

    def dq_of(self, value: ir.Value | None) -> ir.Node | None:
        node = value.producer() if value is not None else None
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    def is_weight_qdq(self, node: ir.Node) -> bool:
        """A Q/DQ on a constant (a weight), as opposed to one on an activation."""
        source = node.inputs[0]
        if node.op_type == "QuantizeLinear":
            return is_constant(source)
        if is_constant(source):
            return True
        q = source.producer() if source is not None else None
        return q is not None and q.op_type == "QuantizeLinear" and is_constant(q.inputs[0])

    def scale_of(self, node: ir.Node) -> np.ndarray | None:
        return constant(node.inputs[1]) if len(node.inputs) > 1 else None

    def check_qdq_node(self, node: ir.Node) -> None:
        zp_value = input_value(node, 2)
        zp = constant(zp_value)
        if zp_value is not None and zp is None:
            self.add("zero-point-not-constant", node, "zero point is computed at run time; TensorRT needs a constant 0")
        if zp is not None and np.any(np.asarray(zp, np.float64) != 0):
            self.add("asymmetric-zero-point", node, f"zero point {np.asarray(zp).ravel()[:4].tolist()} is not 0; TensorRT quantization is symmetric")
        qtype = self._quantized_type(node, zp)
        if qtype is not None and qtype not in ALLOWED_TYPES:
            tname = onnx.TensorProto.DataType.Name(qtype).lower()
            self.add("unsupported-type", node, f"quantized type {tname}; TensorRT takes int8 (or int4/fp8 weights)")
        scale = self.scale_of(node)
        if qtype == onnx.TensorProto.FLOAT4E2M1 and node.op_type == "DequantizeLinear":
            chain = nvfp4_chain(node)
            if chain is None:
                self.add("nvfp4-scale", node, "FP4 weights need their block scales as DequantizeLinear(E4M3 constant, "
                         "float32 constant), the two-level form TensorRT parses")
                return
            scale = E4M3.decode(chain.block_scales) * chain.scale2
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

    def _quantized_type(self, node: ir.Node, zp: np.ndarray | None) -> int | None:
        stored = _initializer(input_value(node, 2))
        if stored is not None:
            return int(stored.dtype)
        stored = _initializer(node.inputs[0])
        if node.op_type == "DequantizeLinear" and stored is not None:
            return int(stored.dtype)
        if node.op_type == "QuantizeLinear" and input_value(node, 2) is None:
            attr = node.attributes.get_int("output_dtype", 0)
            return int(attr) if attr else onnx.TensorProto.UINT8  # ONNX default without a zero point
        if zp is not None:
            return int(onnx.helper.np_dtype_to_tensor_dtype(np.asarray(zp).dtype))
        return None

    def check_compute(self, node: ir.Node) -> None:
        if len(node.inputs) < 2:
            return
        act, weight = node.inputs[0], node.inputs[1]
        act_dq = self.dq_of(act)
        weight_dq = self.dq_of(weight)
        if act_dq is None and weight_dq is None:
            return  # a float layer: allowed (the summary says why it stayed float)
        if act_dq is None:
            self.add("unquantized-input", node, f"weight is quantized but input {_tensor(act)!r} has no Q/DQ; TensorRT runs this layer in float")
        if weight_dq is None:
            if not is_constant(weight):
                self.add("unquantized-input", node, f"input {_tensor(act)!r} is quantized but input {_tensor(weight)!r} has no Q/DQ; TensorRT runs this layer in float")
                return
            self.add("unquantized-weight", node, f"input is quantized but weight {_tensor(weight)!r} has no DQ; TensorRT runs this layer in float")
        else:
            self.check_weight_axis(node, weight_dq)
        if self.dq_of(input_value(node, 2)) is not None:
            self.add("quantized-bias", node, "bias goes through DequantizeLinear; keep biases in float for TensorRT")

    def check_weight_axis(self, node: ir.Node, dq: ir.Node) -> None:
        scale = self.scale_of(dq)
        if scale is None or scale.size <= 1 or dq.attributes.get_int("block_size", 0) != 0:
            return  # per-tensor, or block-wise (int4 weight-only): no per-channel axis to check
        source = dq.inputs[0]
        weight = constant(source)
        q = source.producer() if source is not None else None
        if weight is None and q is not None and q.op_type == "QuantizeLinear":
            weight = constant(q.inputs[0])
        if weight is None:
            return
        axis = dq.attributes.get_int("axis", 1)
        axis = axis + weight.ndim if axis < 0 else axis
        expected = _expected_axis(node, weight.ndim)
        if expected is None:
            self.add("weight-axis", dq, f"{node.op_type} {self.names.get(node, node.name)} cannot take per-channel weights (grouped ConvTranspose)")
        elif axis != expected:
            self.add("weight-axis", dq, f"weight scales along axis {axis}; {node.op_type} needs the output-channel axis {expected}")
        elif scale.size != weight.shape[axis]:
            self.add("weight-axis", dq, f"{scale.size} scales for {weight.shape[axis]} output channels")
        if weight.dtype == np.int8 and np.any(weight == -128):
            self.add("weight-range", dq, "int8 weight uses -128; TensorRT weights are symmetric in [-127, 127]")

    def quantized_conv_outputs(self) -> set[ir.Value]:
        out = set()
        for node in self.graph:
            quantized = len(node.inputs) > 1 and (self.dq_of(node.inputs[0]) is not None or self.dq_of(node.inputs[1]) is not None)
            if node.op_type in ("Conv", "ConvTranspose") and quantized:
                out.add(node.outputs[0])
        return out

    def feeds_quantize(self, value: ir.Value) -> bool:
        frontier = [value]
        while frontier:
            v = frontier.pop()
            for reader in _readers(self.graph, v):
                if reader.op_type == "QuantizeLinear":
                    return True
                if reader.op_type in SHAPE_OPS and reader.inputs[0] is v:  # data, not a shape operand
                    frontier.append(reader.outputs[0])
        return False

    def check_add(self, node: ir.Node, conv_outputs: set[ir.Value]) -> None:
        if len(node.inputs) != 2 or not any(v in conv_outputs for v in node.inputs):
            return
        if any(self.dq_of(v) is not None or is_constant(v) for v in node.inputs):
            return
        residual = next((v for v in node.inputs if v not in conv_outputs), node.inputs[1])
        self.add("unquantized-residual", node, f"residual input {_tensor(residual)!r} of the Add after a quantized Conv has no Q/DQ; TensorRT cannot fuse the Add into the Conv")

    def check_pool_or_concat(self, node: ir.Node) -> None:
        if not node.outputs or not self.feeds_quantize(node.outputs[0]):
            return
        inputs = [v for v in node.inputs if v is not None and not is_constant(v)]
        if node.op_type in POOLING_OPS:
            inputs = inputs[:1]
        missing = [v for v in inputs if self.dq_of(v) is None]
        if missing:
            self.add("float-" + ("pooling" if node.op_type in POOLING_OPS else "concat"), node, f"output is quantized but input {_tensor(missing[0])!r} has no Q/DQ; TensorRT runs {node.op_type} in float between two int8 layers")
            return
        if node.op_type == "Concat":
            scales = []
            for v in inputs:
                dq = self.dq_of(v)
                scale = self.scale_of(dq) if dq is not None else None
                if scale is not None:
                    scales.append(float(np.ravel(scale)[0]))
            if scales and (max(scales) - min(scales)) > 1e-6 * max(scales):
                self.add("concat-scales", node, f"inputs use different scales ({min(scales):.4g} .. {max(scales):.4g}); TensorRT concatenates in int8 only with one scale")

    def run(self) -> list[LintViolation]:
        conv_outputs = self.quantized_conv_outputs()
        for node in self.graph:
            if node.op_type in QDQ_OPS:
                self.check_qdq_node(node)
            elif node.op_type in COMPUTE_OPS:
                self.check_compute(node)
            elif node.op_type == "Add":
                self.check_add(node, conv_outputs)
            elif node.op_type in POOLING_OPS or node.op_type == "Concat":
                self.check_pool_or_concat(node)
        return self.violations


def _expected_axis(node: ir.Node, rank: int) -> int | None:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1 if node.attributes.get_int("group", 1) == 1 else None
    if node.op_type == "Gemm":
        return 0 if node.attributes.get_int("transB", 0) != 0 else 1
    return rank - 1


def lint_tensorrt(model: onnx.ModelProto | ir.Model) -> list[LintViolation]:
    """Every place ``model`` breaks TensorRT's explicit-quantization rules, by node name."""
    return _Linter(to_ir(model)).run()


def _weight_only_violations(model: ir.Model) -> tuple[list[LintViolation], set[str]]:
    """TensorRT's block-quantization rules on each blocked DequantizeLinear, and the names of the
    nodes they cover (the blocked DQs and their readers)."""
    graph = model.graph
    names = {n: _name(n, i) for i, n in enumerate(graph)}
    covered: set[str] = set()
    found: list[LintViolation] = []
    for node in graph:
        if node.op_type != "DequantizeLinear" or not node.attributes.get_int("block_size", 0):
            continue
        name = names[node]
        output = node.outputs[0]
        covered.add(name)
        covered.update(names[r] for r in _readers(graph, output))
        weight = _initializer(node.inputs[0])
        if weight is None:
            found.append(LintViolation("weight-only-not-constant", name, "blocked DequantizeLinear input is not a constant weight"))
            continue
        if weight.dtype not in (ir.DataType.INT4, ir.DataType.INT8, ir.DataType.FLOAT4E2M1):
            kind = onnx.TensorProto.DataType.Name(int(weight.dtype)).lower()
            found.append(LintViolation("weight-only-type", name, f"{kind} blocks; TensorRT takes INT4 (signed) or FP4 (E2M1) weight-only blocks"))
        if weight.dtype == ir.DataType.FLOAT4E2M1 and node.attributes.get_int("block_size", 0) != NVFP4_BLOCK:
            found.append(LintViolation("nvfp4-block", name, f"FP4 blocks of {node.attributes.get_int('block_size', 0)}; "
                                       f"TensorRT's NVFP4 blocks are {NVFP4_BLOCK} values"))
        dims = list(weight.shape.numpy())
        rank = len(dims)
        axis = node.attributes.get_int("axis", 1)
        axis = axis + rank if axis < 0 else axis
        if rank >= 2 and axis != rank - 2:
            found.append(LintViolation("weight-only-axis", name, f"blocks along axis {axis}; TensorRT blocks a MatMul weight along K (axis {rank - 2})"))
        if rank and dims[-1] % 2:
            found.append(LintViolation("weight-only-shape", name, f"last dimension {dims[-1]} is odd; INT4 packs two values per byte"))
        for reader in _readers(graph, output):
            if reader.op_type not in ("MatMul", "Gemm") or list(reader.inputs).index(output) != 1:
                found.append(LintViolation("weight-only-reader", name, f"feeds {reader.op_type}; TensorRT weight-only is DequantizeLinear -> MatMul/Gemm weight"))
    return found, covered


def tensorrt_violations(model: onnx.ModelProto | ir.Model) -> list[LintViolation]:
    """The TensorRT lint, plus the INT4 weight-only rules (blocked DequantizeLinear -> MatMul/Gemm).

    Weight-only layers have no activation Q/DQ and block their scales along K (the second-to-last
    weight axis) by design: the lint's int8 rules ``unquantized-input`` and ``weight-axis`` do not
    apply to them, TensorRT's block-quantization rules do (INT4, strictly positive scales, zero
    point 0, one blocked axis, an even last dimension).
    """
    graph = to_ir(model)
    own, covered = _weight_only_violations(graph)
    kept = [v for v in lint_tensorrt(graph)
            if not (v.rule in ("unquantized-input", "weight-axis") and v.node in covered)]
    return kept + own
