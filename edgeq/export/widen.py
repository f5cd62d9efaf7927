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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeq.errors import UnsupportedError
from edgeq.graph.opset import opset_version
from edgeq.graph.proto import GraphIndex, NameMaker, get_attribute

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


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    count = int(np.prod(tensor.dims)) if tensor.dims else 1
    bits = BITS.get(tensor.data_type)
    if bits is not None:
        return (count * bits + 7) // 8
    return count * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _evaluate(model: onnx.ModelProto, node: onnx.NodeProto, feeds: dict[str, np.ndarray],
              inits: list[onnx.TensorProto], out_type: int) -> np.ndarray:
    """Run one node in onnxruntime: the kernel the quantized model was verified with."""
    from edgeq.graph.session import run_nodes

    return run_nodes([node], model.opset_import, model.ir_version, inits, feeds, out_type)


class _Widener:
    def __init__(self, model: onnx.ModelProto, container: str, only_contrib: bool = False) -> None:
        if container not in ("int4", "float"):
            raise ValueError(f"container {container!r}")
        self.only_contrib = only_contrib
        self.model = model
        self.graph = model.graph
        self.container = container
        self.index = GraphIndex(model.graph)
        self.names = NameMaker(model.graph)
        self.report = WidenReport()
        self.replaced: dict[int, list[onnx.NodeProto]] = {}  # node position -> replacement nodes
        self.new_inits: list[onnx.TensorProto] = []
        self.drop_inits: set[str] = set()

    def init(self, name: str) -> onnx.TensorProto | None:
        return self.index.initializers.get(name)

    def run(self) -> WidenReport:
        for position, node in enumerate(self.graph.node):
            if node.op_type == "DequantizeLinear" and node.domain in ("", "ai.onnx"):
                if not self.only_contrib:
                    self._dequantize_linear(position, node)
            elif node.op_type == "MatMulBnb4" and node.domain == CONTRIB:
                self._bnb4(position, node)
            elif node.op_type == "MatMulNBits" and node.domain == CONTRIB:
                self._nbits(position, node)
        if not self.report.nodes:
            return self.report
        nodes: list[onnx.NodeProto] = []
        for position, node in enumerate(self.graph.node):
            nodes.extend(self.replaced.get(position, [node]))
        still_read = {i for n in nodes for i in n.input}
        kept = [t for t in self.graph.initializer if t.name not in self.drop_inits or t.name in still_read]
        copies = [onnx.NodeProto() for _ in nodes]
        for copy, node in zip(copies, nodes, strict=True):
            copy.CopyFrom(node)
        del self.graph.node[:]
        self.graph.node.extend(copies)
        del self.graph.initializer[:]
        self.graph.initializer.extend([*kept, *self.new_inits])
        return self.report

    # -- DequantizeLinear with a constant INT2 (or, for a float container, any int) input -------
    def _dequantize_linear(self, position: int, node: onnx.NodeProto) -> None:
        weight = self.init(node.input[0])
        if weight is None:
            return  # an activation DQ (after a Q): nothing to widen
        is_int2 = weight.data_type in INT2_TYPES
        if self.container == "int4" and not is_int2:
            return
        if self.container == "float" and weight.data_type not in (*INT2_TYPES, *INT4_TYPES):
            return  # int8 stays: TensorRT has it
        if any(not self.index.is_constant(i) for i in node.input if i):
            return
        inputs = [self.init(i) for i in node.input if i]
        extra = [t for t in inputs if t is not None]
        source = f"{'int2' if is_int2 else 'int4'} DequantizeLinear"
        count = int(np.prod(weight.dims))
        before = sum(_tensor_bytes(t) for t in extra)
        if self.container == "int4":
            widened = []
            for name in node.input[:3:2]:  # x and zero point share the type
                tensor = self.init(name) if name else None
                if tensor is None:
                    continue
                values = numpy_helper.to_array(tensor).astype(np.int8)
                target = ml_dtypes.int4 if tensor.data_type == TensorProto.INT2 else ml_dtypes.uint4
                new = numpy_helper.from_array(values.astype(target), self.names(f"{name}_int4"))
                widened.append((tensor, new))
            replacement = onnx.NodeProto()
            replacement.CopyFrom(node)
            for old, new in widened:
                for i, name in enumerate(replacement.input):
                    if name == old.name:
                        replacement.input[i] = new.name
                self.new_inits.append(new)
                self.drop_inits.add(old.name)
            after = before + sum(_tensor_bytes(new) - _tensor_bytes(tensor) for tensor, new in widened)
            self.replaced[position] = [replacement]
        else:
            scale = self.init(node.input[1])
            out_type = scale.data_type if scale is not None else TensorProto.FLOAT
            value = _evaluate(self.model, node, {}, extra, out_type).astype(np.float32)
            tensor = numpy_helper.from_array(value, self.names(f"{node.output[0]}_widened"))
            self.new_inits.append(tensor)
            self.drop_inits.update(i for i in node.input if i)
            self.replaced[position] = [helper.make_node("Identity", [tensor.name], [node.output[0]],
                                                        name=self.names(f"{node.name or 'dq'}_widened"))]
            after = count * FLOAT_WEIGHT_BYTES
        self.report.nodes.append(WidenedNode(node.name or node.output[0], node.op_type, source,
                                             self.container, count, before, after))

    # -- MatMulBnb4 (nf4/fp4): only a float container holds its levels ------------------------
    def _bnb4(self, position: int, node: onnx.NodeProto) -> None:
        k = int(get_attribute(node, "K"))  # type: ignore[arg-type]
        n = int(get_attribute(node, "N"))  # type: ignore[arg-type]
        quant_type = int(get_attribute(node, "quant_type", 1))  # type: ignore[arg-type]
        consts = [self.init(i) for i in node.input[1:3]]
        if any(c is None for c in consts):
            raise UnsupportedError(f"{node.name}: MatMulBnb4 with non-constant weights cannot be widened")
        weight = self._eye_evaluate(node, k, [i for i in node.input[1:3]])
        source = f"{'nf4' if quant_type == 1 else 'fp4'} MatMulBnb4"
        before = sum(_tensor_bytes(c) for c in consts if c is not None)
        self._float_matmul(position, node, weight, source, before, k * n, bias=None)

    # -- MatMulNBits: to DequantizeLinear INT4 when exact, else to float ------------------------
    def _nbits(self, position: int, node: onnx.NodeProto) -> None:
        k = int(get_attribute(node, "K"))  # type: ignore[arg-type]
        n = int(get_attribute(node, "N"))  # type: ignore[arg-type]
        bits = int(get_attribute(node, "bits", 4))  # type: ignore[arg-type]
        block = int(get_attribute(node, "block_size"))  # type: ignore[arg-type]
        inputs = list(node.input) + [""] * (6 - len(node.input))
        blob, scales = self.init(inputs[1]), self.init(inputs[2])
        if blob is None or scales is None:
            raise UnsupportedError(f"{node.name}: MatMulNBits with non-constant weights cannot be widened")
        has_zero_point = bool(inputs[3])
        has_g_idx = bool(inputs[4])
        bias = inputs[5] or None
        before = _tensor_bytes(blob) + _tensor_bytes(scales) + (
            _tensor_bytes(self.init(inputs[3])) if has_zero_point and self.init(inputs[3]) else 0)  # type: ignore[arg-type]
        source = f"int{bits} MatMulNBits"
        exact_int4 = (self.container == "int4" and bits in (2, 4) and not has_zero_point and not has_g_idx
                      and k % block == 0)
        if not exact_int4:
            weight = self._eye_evaluate(node, k, [i for i in inputs[1:5]])
            self._float_matmul(position, node, weight, source, before, k * n, bias=bias)
            return
        packed = numpy_helper.to_array(blob).reshape(n, -1)
        per_byte = 8 // bits
        shifts = (np.arange(per_byte) * bits).astype(np.uint8)
        codes = ((packed[..., None] >> shifts) & ((1 << bits) - 1)).reshape(n, -1)[:, :k]
        values = codes.astype(np.int8) - (1 << (bits - 1))  # default zero point 2^(bits-1)
        q = numpy_helper.from_array(values.T.copy().astype(ml_dtypes.int4), self.names(f"{blob.name}_int4"))
        scale_array = numpy_helper.to_array(scales).reshape(n, k // block).T.copy()
        s = numpy_helper.from_array(scale_array, self.names(f"{scales.name}_blocks"))
        self.new_inits += [q, s]
        self.drop_inits.update([blob.name, scales.name])
        dq_out = self.names(f"{node.output[0]}_weight")
        nodes = [
            helper.make_node("DequantizeLinear", [q.name, s.name], [dq_out], name=self.names(f"{node.name}_dq"),
                             axis=0, block_size=block),
        ]
        self._matmul_with_bias(nodes, node, dq_out, bias)
        self.replaced[position] = nodes
        after = _tensor_bytes(q) + _tensor_bytes(s)
        self.report.nodes.append(WidenedNode(node.name or node.output[0], node.op_type, source, "int4",
                                             k * n, before, after))

    def _eye_evaluate(self, node: onnx.NodeProto, k: int, const_inputs: list[str]) -> np.ndarray:
        """The [K, N] float weight a contrib MatMul node multiplies by: run it on the identity."""
        a_type = self._float_type(node.input[0])
        eye = np.eye(k, dtype=helper.tensor_dtype_to_np_dtype(a_type))
        probe = onnx.NodeProto()
        probe.CopyFrom(node)
        del probe.input[:]
        probe.input.extend([node.input[0], *const_inputs])
        while probe.input and not probe.input[-1]:
            del probe.input[-1]
        del probe.output[1:]
        inits = [t for t in (self.init(i) for i in const_inputs if i) if t is not None]
        return _evaluate(self.model, probe, {node.input[0]: eye}, inits, a_type).astype(np.float32)

    def _float_type(self, name: str) -> int:
        for value in [*self.graph.input, *self.graph.value_info]:
            if value.name == name and value.type.tensor_type.elem_type:
                return value.type.tensor_type.elem_type
        return TensorProto.FLOAT

    def _float_matmul(self, position: int, node: onnx.NodeProto, weight: np.ndarray, source: str,
                      before: int, count: int, bias: str | None) -> None:
        tensor = numpy_helper.from_array(weight, self.names(f"{node.name or node.output[0]}_weight"))
        self.new_inits.append(tensor)
        self.drop_inits.update(i for i in node.input[1:] if i and i != bias)
        nodes: list[onnx.NodeProto] = []
        self._matmul_with_bias(nodes, node, tensor.name, bias)
        self.replaced[position] = nodes
        self.report.nodes.append(WidenedNode(node.name or node.output[0], node.op_type, source, "float",
                                             count, before, count * FLOAT_WEIGHT_BYTES))

    def _matmul_with_bias(self, nodes: list[onnx.NodeProto], node: onnx.NodeProto, weight: str,
                          bias: str | None) -> None:
        if bias:
            mm_out = self.names(f"{node.output[0]}_nobias")
            nodes.append(helper.make_node("MatMul", [node.input[0], weight], [mm_out], name=self.names(node.name or "mm")))
            nodes.append(helper.make_node("Add", [mm_out, bias], [node.output[0]], name=self.names(f"{node.name}_bias")))
        else:
            nodes.append(helper.make_node("MatMul", [node.input[0], weight], [node.output[0]],
                                          name=self.names(node.name or "mm")))


def widen_weights(model: onnx.ModelProto, container: str) -> WidenReport:
    """Widen, in place, every weight TensorRT cannot parse into ``container`` ("int4" or "float").

    With "int4": INT2 DequantizeLinear -> INT4, MatMulNBits (exact cases) -> DequantizeLinear INT4,
    other contrib MatMuls -> float. With "float": every INT2/INT4 weight and contrib MatMul -> float.
    """
    report = _Widener(model, container).run()
    if report.nodes:
        _drop_unused_opsets(model)
    return report


def convert_contrib_matmuls(model: onnx.ModelProto) -> WidenReport:
    """MatMulNBits/MatMulBnb4 (onnxruntime-only ops) -> standard ONNX TensorRT can parse, in place.

    Symmetric 4/2-bit MatMulNBits become DequantizeLinear INT4 + MatMul (same values); the rest
    (NF4/FP4, zero points, act-order) become a float weight.
    """
    report = _Widener(model, "int4", only_contrib=True).run()
    if report.nodes:
        _drop_unused_opsets(model)
    return report


def _drop_unused_opsets(model: onnx.ModelProto) -> None:
    used = {n.domain for n in model.graph.node}
    keep = [o for o in model.opset_import if o.domain in ("", "ai.onnx") or o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def lower_opset(model: onnx.ModelProto, floor: int) -> int:
    """Lower the default-domain opset towards ``floor`` as far as the checker allows; returns it.

    A quantizer raises the opset for the types it writes (INT2 needs 25, INT4 21); once widening
    has removed them, older TensorRT parsers want the lowest opset the graph still validates at.
    Type-only schema changes between opsets are all this relies on: a node whose schema changed
    shape (a new input, a new op) fails the full check and the opset stays where it was.
    """
    current = opset_version(model)
    if current <= floor:
        return current
    entry = next(o for o in model.opset_import if o.domain in ("", "ai.onnx"))
    for version in range(floor, current):
        entry.version = version
        try:
            onnx.checker.check_model(model, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
            continue
        return version
    entry.version = current
    return current
