"""Weight formats TensorRT lacks, carried into containers it has.

TensorRT's ONNX parser takes INT8, INT4 (blocked DequantizeLinear) and FP8/FP4 weights, never
INT2, NF4 or onnxruntime's contrib ops (MatMulNBits, MatMulBnb4). A 2-bit or NF4 model still
reaches the GPU by *widening*: its exact weight values are stored in a container TensorRT has.

- INT2 -> INT4 blocks: every int2 value (and zero point) is an int4 value, scales unchanged, so
  the model computes exactly what it did; it costs twice the weight bytes of int2.
- anything -> float (fp16 on the GPU): the dequantized weights as a float initializer read by a
  plain MatMul. NF4 must go this way (its 16 levels are not a uniform grid); so must INT2 when the
  TensorRT has no INT4. Costs 2 bytes per weight.
- MatMulNBits (symmetric 4/2-bit, whole blocks) -> DequantizeLinear INT4 + MatMul: the same
  values in the standard operator TensorRT parses.

Dequantized values come from onnxruntime running the quantized node itself (the kernel the model
was verified with), so "the accuracy of the 2-bit model" is exact by construction, and the
byte counts before and after go into the export summary.

The rewrites are onnx-ir passes (:class:`WidenWeights`; the opset is lowered afterwards by
``edgeq.graph.passes.lower_opset``); the functions at the bottom keep the protobuf-in-place
interface the exporter calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ml_dtypes
import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper
from onnx_ir.passes import common as ir_common

from edgeq.errors import UnsupportedError
from edgeq.graph.passes.base import GraphPass, NameMaker, input_value, is_constant, set_initializer, tidy

CONTRIB = "com.microsoft"
INT2_TYPES: dict[int, int] = {TensorProto.INT2: TensorProto.INT4, TensorProto.UINT2: TensorProto.UINT4} if hasattr(
    TensorProto, "INT2") else {}
INT4_TYPES = (TensorProto.INT4, TensorProto.UINT4)
BITS: dict[int, int] = {TensorProto.INT4: 4, TensorProto.UINT4: 4, TensorProto.INT8: 8, TensorProto.UINT8: 8,
        **{t: 2 for t in INT2_TYPES}}
FLOAT_WEIGHT_BYTES = 2  # a float container is fp16 on the GPU (fp16 pass or --fp16)


@dataclass
class WidenedNode:
    name: str
    op_type: str
    source: str  # e.g. "int2 DequantizeLinear", "nf4 MatMulBnb4"
    container: str  # "int4" | "float"
    weights: int  # number of weight values
    bytes_before: int
    bytes_after: int


@dataclass
class WidenReport:
    """What widening did and what it costs in memory (weights, on the device)."""

    nodes: list[WidenedNode] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def bytes_before(self) -> int:
        return sum(n.bytes_before for n in self.nodes)

    @property
    def bytes_after(self) -> int:
        return sum(n.bytes_after for n in self.nodes)

    def describe(self) -> str:
        if not self.nodes:
            return "no weights needed widening"
        sources = sorted({n.source for n in self.nodes})
        containers = sorted({n.container for n in self.nodes})
        before, after = self.bytes_before, self.bytes_after
        ratio = after / before if before else float("inf")
        return (
            f"widened {len(self.nodes)} weights ({', '.join(sources)}) to {'/'.join(containers)}: "
            f"{_mb(before)} -> {_mb(after)} of weights on the device (+{_mb(after - before)}, {ratio:.2f}x); "
            "outputs unchanged"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "nodes": len(self.nodes),
            "sources": sorted({n.source for n in self.nodes}),
            "containers": sorted({n.container for n in self.nodes}),
            "weight_bytes_before": self.bytes_before,
            "weight_bytes_after": self.bytes_after,
            "notes": list(self.notes),
        }


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def _tensor_bytes(value: ir.Value) -> int:
    """Bytes of an initializer's values as stored (sub-byte types packed)."""
    tensor = value.const_value
    assert tensor is not None
    dims = tensor.shape.numpy()
    count = int(np.prod(dims)) if dims else 1
    bits = BITS.get(int(tensor.dtype))
    if bits is not None:
        return (count * bits + 7) // 8
    return count * helper.tensor_dtype_to_np_dtype(int(tensor.dtype)).itemsize


def _array(value: ir.Value) -> np.ndarray:
    assert value.const_value is not None
    return value.const_value.numpy()


def _label(node: ir.Node) -> str:
    """The node's name as the protobuf has it ("" when unnamed)."""
    return node.name or ""


def _evaluate(model: ir.Model, nodes: list[onnx.NodeProto], feeds: dict[str, np.ndarray],
              inits: list[ir.Value], out_type: int) -> np.ndarray:
    """Run one node in onnxruntime: the kernel the quantized model was verified with."""
    from edgeq.graph.session import run_nodes

    opsets = [helper.make_opsetid(domain, version) for domain, version in model.opset_imports.items()]
    tensors = []
    for value in inits:
        assert value.const_value is not None and value.name is not None
        tensor = ir.serde.serialize_tensor(value.const_value)
        tensor.name = value.name
        tensors.append(tensor)
    return run_nodes(nodes, opsets, model.ir_version, tensors, feeds, out_type)


class WidenWeights(GraphPass):
    """Every weight TensorRT cannot parse, rewritten into ``container`` ("int4" or "float").

    ``only_contrib`` leaves DequantizeLinear alone and converts only the contrib MatMuls.
    ``report`` says what was widened and what it costs.
    """

    def __init__(self, container: str, only_contrib: bool = False) -> None:
        super().__init__()
        if container not in ("int4", "float"):
            raise ValueError(f"container {container!r}")
        self.container = container
        self.only_contrib = only_contrib
        self.report = WidenReport()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.model = model
        self.graph = model.graph
        self.names = NameMaker(model.graph)
        self.report = WidenReport()
        for node in list(self.graph):
            if node.op_type == "DequantizeLinear" and node.domain == "":
                if not self.only_contrib:
                    self._dequantize_linear(node)
            elif node.op_type == "MatMulBnb4" and node.domain == CONTRIB:
                self._bnb4(node)
            elif node.op_type == "MatMulNBits" and node.domain == CONTRIB:
                self._nbits(node)
        if not self.report.nodes:
            return ir.passes.PassResult(model, modified=False)
        # The replaced weights (and the contrib domain, once unused) go.
        tidy(model)
        ir_common.RemoveUnusedOpsetsPass()(model)
        return ir.passes.PassResult(model, modified=True)

    def _init(self, value: ir.Value | None) -> ir.Value | None:
        """``value`` when it is an initializer (a Constant node's output is not)."""
        return value if value is not None and value.is_initializer() and value.const_value is not None else None

    def _replace(self, node: ir.Node, nodes: list[ir.Node]) -> None:
        """``nodes`` where ``node`` was; the last one's output takes over its (first) output."""
        ir.convenience.replace_nodes_and_values(self.graph, node, [node], nodes, [node.outputs[0]],
                                                [nodes[-1].outputs[0]])

    # -- DequantizeLinear with a constant INT2 (or, for a float container, any int) input -------
    def _dequantize_linear(self, node: ir.Node) -> None:
        weight = self._init(node.inputs[0])
        if weight is None:
            return  # an activation DQ (after a Q): nothing to widen
        assert weight.const_value is not None
        dtype = int(weight.const_value.dtype)
        is_int2 = dtype in INT2_TYPES
        if self.container == "int4" and not is_int2:
            return
        if self.container == "float" and dtype not in (*INT2_TYPES, *INT4_TYPES):
            return  # int8 stays: TensorRT has it
        if any(not is_constant(v) for v in node.inputs if v is not None):
            return
        extra = [t for t in (self._init(v) for v in node.inputs if v is not None) if t is not None]
        source = f"{'int2' if is_int2 else 'int4'} DequantizeLinear"
        count = int(np.prod(weight.const_value.shape.numpy()))
        before = sum(_tensor_bytes(t) for t in extra)
        if self.container == "int4":
            widened = []
            for slot in (0, 2):  # x and zero point share the type
                tensor = self._init(input_value(node, slot))
                if tensor is None:
                    continue
                assert tensor.const_value is not None
                values = _array(tensor).astype(np.int8)
                target = ml_dtypes.int4 if int(tensor.const_value.dtype) == TensorProto.INT2 else ml_dtypes.uint4
                widened.append((tensor, values.astype(target), self.names(f"{tensor.name}_int4")))
            after = before
            for old, values, name in widened:
                new = set_initializer(self.graph, name, values)
                for i, current in enumerate(node.inputs):
                    if current is old:
                        node.replace_input_with(i, new)
                after += _tensor_bytes(new) - _tensor_bytes(old)
        else:
            scale = self._init(input_value(node, 1))
            out_type = int(scale.const_value.dtype) if scale is not None and scale.const_value is not None \
                else TensorProto.FLOAT
            value = _evaluate(self.model, [ir.serde.serialize_node(node)], {}, extra, out_type).astype(np.float32)
            tensor = set_initializer(self.graph, self.names(f"{node.outputs[0].name}_widened"), value)
            identity = ir.node("Identity", [tensor], name=self.names(f"{node.name or 'dq'}_widened"))
            self._replace(node, [identity])
            after = count * FLOAT_WEIGHT_BYTES
        self.report.nodes.append(WidenedNode(node.name or node.outputs[0].name or "", node.op_type, source,
                                             self.container, count, before, after))

    # -- MatMulBnb4 (nf4/fp4): only a float container holds its levels ------------------------
    def _bnb4(self, node: ir.Node) -> None:
        k = int(node.attributes.get_int("K"))  # type: ignore[arg-type]
        n = int(node.attributes.get_int("N"))  # type: ignore[arg-type]
        quant_type = int(node.attributes.get_int("quant_type", 1))
        consts = [self._init(input_value(node, slot)) for slot in (1, 2)]
        if any(c is None for c in consts):
            raise UnsupportedError(f"{_label(node)}: MatMulBnb4 with non-constant weights cannot be widened")
        weight = self._eye_evaluate(node, k, [input_value(node, 1), input_value(node, 2)])
        source = f"{'nf4' if quant_type == 1 else 'fp4'} MatMulBnb4"
        before = sum(_tensor_bytes(c) for c in consts if c is not None)
        self._float_matmul(node, weight, source, before, k * n, bias=None)

    # -- MatMulNBits: to DequantizeLinear INT4 when exact, else to float ------------------------
    def _nbits(self, node: ir.Node) -> None:
        k = int(node.attributes.get_int("K"))  # type: ignore[arg-type]
        n = int(node.attributes.get_int("N"))  # type: ignore[arg-type]
        bits = int(node.attributes.get_int("bits", 4))
        block = int(node.attributes.get_int("block_size"))  # type: ignore[arg-type]
        inputs = [input_value(node, slot) for slot in range(6)]
        blob, scales = self._init(inputs[1]), self._init(inputs[2])
        if blob is None or scales is None:
            raise UnsupportedError(f"{_label(node)}: MatMulNBits with non-constant weights cannot be widened")
        has_zero_point = inputs[3] is not None
        has_g_idx = inputs[4] is not None
        bias = inputs[5]
        zero_point = self._init(inputs[3])
        before = _tensor_bytes(blob) + _tensor_bytes(scales) + (
            _tensor_bytes(zero_point) if zero_point is not None else 0)
        source = f"int{bits} MatMulNBits"
        exact_int4 = (self.container == "int4" and bits in (2, 4) and not has_zero_point and not has_g_idx
                      and k % block == 0)
        if not exact_int4:
            weight = self._eye_evaluate(node, k, inputs[1:5])
            self._float_matmul(node, weight, source, before, k * n, bias=bias)
            return
        packed = _array(blob).reshape(n, -1)
        per_byte = 8 // bits
        shifts = (np.arange(per_byte) * bits).astype(np.uint8)
        codes = ((packed[..., None] >> shifts) & ((1 << bits) - 1)).reshape(n, -1)[:, :k]
        values = codes.astype(np.int8) - (1 << (bits - 1))  # default zero point 2^(bits-1)
        q = set_initializer(self.graph, self.names(f"{blob.name}_int4"), values.T.copy().astype(ml_dtypes.int4))
        scale_array = _array(scales).reshape(n, k // block).T.copy()
        s = set_initializer(self.graph, self.names(f"{scales.name}_blocks"), scale_array)
        dq_out = ir.Value(name=self.names(f"{node.outputs[0].name}_weight"))
        dq = ir.node("DequantizeLinear", [q, s], {"axis": 0, "block_size": block}, outputs=[dq_out],
                     name=self.names(f"{_label(node)}_dq"))
        self._replace(node, [dq, *self._matmul_with_bias(node, dq_out, bias)])
        after = _tensor_bytes(q) + _tensor_bytes(s)
        self.report.nodes.append(WidenedNode(node.name or node.outputs[0].name or "", node.op_type, source, "int4",
                                             k * n, before, after))

    def _eye_evaluate(self, node: ir.Node, k: int, const_inputs: list[ir.Value | None]) -> np.ndarray:
        """The [K, N] float weight a contrib MatMul node multiplies by: run it on the identity."""
        activation = node.inputs[0]
        assert activation is not None and activation.name is not None
        a_type = self._float_type(activation)
        eye = np.eye(k, dtype=helper.tensor_dtype_to_np_dtype(a_type))
        probe = ir.serde.serialize_node(node)
        del probe.input[:]
        probe.input.extend([activation.name, *(v.name or "" if v is not None else "" for v in const_inputs)])
        while probe.input and not probe.input[-1]:
            del probe.input[-1]
        del probe.output[1:]
        inits = [t for t in (self._init(v) for v in const_inputs) if t is not None]
        return _evaluate(self.model, [probe], {activation.name: eye}, inits, a_type).astype(np.float32)

    @staticmethod
    def _float_type(value: ir.Value) -> int:
        dtype = value.dtype
        return int(dtype) if dtype is not None and dtype != ir.DataType.UNDEFINED else TensorProto.FLOAT

    def _float_matmul(self, node: ir.Node, weight: np.ndarray, source: str, before: int, count: int,
                      bias: ir.Value | None) -> None:
        tensor = set_initializer(self.graph, self.names(f"{node.name or node.outputs[0].name}_weight"), weight)
        self._replace(node, self._matmul_with_bias(node, tensor, bias))
        self.report.nodes.append(WidenedNode(node.name or node.outputs[0].name or "", node.op_type, source, "float",
                                             count, before, count * FLOAT_WEIGHT_BYTES))

    def _matmul_with_bias(self, node: ir.Node, weight: ir.Value, bias: ir.Value | None) -> list[ir.Node]:
        if bias is not None:
            mm_out = ir.Value(name=self.names(f"{node.outputs[0].name}_nobias"))
            matmul = ir.node("MatMul", [node.inputs[0], weight], outputs=[mm_out], name=self.names(node.name or "mm"))
            return [matmul, ir.node("Add", [mm_out, bias], name=self.names(f"{_label(node)}_bias"))]
        return [ir.node("MatMul", [node.inputs[0], weight], name=self.names(node.name or "mm"))]


def widen_weights(model: onnx.ModelProto, container: str) -> WidenReport:
    """Widen, in place, every weight TensorRT cannot parse into ``container`` ("int4" or "float").

    With "int4": INT2 DequantizeLinear -> INT4, MatMulNBits (exact cases) -> DequantizeLinear INT4,
    other contrib MatMuls -> float. With "float": every INT2/INT4 weight and contrib MatMul -> float.
    """
    widen = WidenWeights(container)
    widen.apply(model)
    return widen.report


def convert_contrib_matmuls(model: onnx.ModelProto) -> WidenReport:
    """MatMulNBits/MatMulBnb4 (onnxruntime-only ops) -> standard ONNX TensorRT can parse, in place.

    Symmetric 4/2-bit MatMulNBits become DequantizeLinear INT4 + MatMul (same values); the rest
    (NF4/FP4, zero points, act-order) become a float weight.
    """
    convert = WidenWeights("int4", only_contrib=True)
    convert.apply(model)
    return convert.report
