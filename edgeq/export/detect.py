"""What quantization a model already carries, so export can plan around it instead of redoing it.

A model from ``edgeq quantize`` (or any other tool) arrives with int8 Q/DQ, blocked
DequantizeLinear weights, or onnxruntime's contrib MatMuls; the bundle's precision plan is read
from those nodes, and the weakest weight format decides what the board must support.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import onnx

if TYPE_CHECKING:
    import onnx_ir as ir

CONTRIB = "com.microsoft"


@dataclass
class ModelFormats:
    """The quantization a model already carries (a model from ``edgeq quantize`` or elsewhere)."""

    int8_activations: int = 0  # QuantizeLinear on non-constant tensors (int8)
    fp8_activations: int = 0  # the same with FLOAT8E4M3FN
    dq_weights: dict[str, int] = field(default_factory=dict)  # "int4" -> count of constant DQs
    nbits: dict[int, int] = field(default_factory=dict)  # MatMulNBits bits -> count
    bnb4: dict[str, int] = field(default_factory=dict)  # "nf4"/"fp4" -> count
    other_contrib: dict[str, int] = field(default_factory=dict)
    block_sizes: set[int] = field(default_factory=set)

    @property
    def quantized(self) -> bool:
        return bool(self.int8_activations or self.fp8_activations or self.dq_weights or self.nbits or self.bnb4)

    def weights(self) -> str:
        """The weight format that decides the plan: the one TensorRT has least support for."""
        found = {*self.dq_weights, *(f"int{b}" for b in self.nbits), *self.bnb4}
        for name in ("nf4", "fp4", "int2", "nvfp4", "int4", "fp8", "int8"):
            if name in found:
                return name
        return "fp32"

    def describe(self) -> str:
        parts = []
        if self.int8_activations:
            parts.append(f"int8 Q/DQ on {self.int8_activations} activations")
        if self.fp8_activations:
            parts.append(f"fp8 Q/DQ on {self.fp8_activations} activations")
        parts += [f"{n} {k} DequantizeLinear weights" for k, n in sorted(self.dq_weights.items())]
        parts += [f"{n} int{b} MatMulNBits" for b, n in sorted(self.nbits.items())]
        parts += [f"{n} {k} MatMulBnb4" for k, n in sorted(self.bnb4.items())]
        return ", ".join(parts) or "float"


_DQ_NAMES: dict[int, str] = {
    onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "int8", onnx.TensorProto.INT4: "int4",
    onnx.TensorProto.UINT4: "int4", onnx.TensorProto.FLOAT8E4M3FN: "fp8", onnx.TensorProto.FLOAT4E2M1: "nvfp4",
}
if hasattr(onnx.TensorProto, "INT2"):
    _DQ_NAMES.update({onnx.TensorProto.INT2: "int2", onnx.TensorProto.UINT2: "int2"})


def model_formats(model: onnx.ModelProto | ir.Model) -> ModelFormats:
    """Count the quantized nodes of ``model`` by format (int8 Q/DQ, DQ weights, contrib MatMuls)."""
    import onnx_ir as ir

    from edgeq.graph.passes.base import is_constant, to_ir

    found = ModelFormats()
    for node in to_ir(model).graph:
        if node.domain in ("", "ai.onnx"):
            source = node.inputs[0] if node.inputs else None
            if node.op_type == "QuantizeLinear" and not is_constant(source):
                zero_point = node.inputs[2] if len(node.inputs) > 2 else None
                fp8 = zero_point is not None and zero_point.dtype == ir.DataType.FLOAT8E4M3FN
                if fp8:
                    found.fp8_activations += 1
                else:
                    found.int8_activations += 1
            elif node.op_type == "DequantizeLinear" and source is not None and source.is_initializer() and source.const_value is not None:
                if _is_block_scale(node):
                    continue  # NVFP4's E4M3 block scales: part of the FP4 weight they scale
                weight = _DQ_NAMES.get(int(source.const_value.dtype), "other")
                found.dq_weights[weight] = found.dq_weights.get(weight, 0) + 1
                block = node.attributes.get_int("block_size", 0)
                if block:
                    found.block_sizes.add(block)
        elif node.domain == CONTRIB:
            if node.op_type == "MatMulNBits":
                bits = node.attributes.get_int("bits", 4)
                found.nbits[bits] = found.nbits.get(bits, 0) + 1
                found.block_sizes.add(node.attributes.get_int("block_size", 0))
            elif node.op_type == "MatMulBnb4":
                kind = "nf4" if node.attributes.get_int("quant_type", 1) == 1 else "fp4"
                found.bnb4[kind] = found.bnb4.get(kind, 0) + 1
                found.block_sizes.add(node.attributes.get_int("block_size", 0))
            else:
                found.other_contrib[node.op_type] = found.other_contrib.get(node.op_type, 0) + 1
    # int8/fp8 weight DQs of a W8A8 model are part of that plan, not weight-only.
    if found.int8_activations and "int8" in found.dq_weights:
        del found.dq_weights["int8"]
    if found.fp8_activations and "fp8" in found.dq_weights:
        del found.dq_weights["fp8"]
    return found


def _is_block_scale(node: ir.Node) -> bool:
    """A DequantizeLinear whose output is another DequantizeLinear's scale (NVFP4's two levels)."""
    return any(use.node.op_type == "DequantizeLinear" and use.idx == 1 for use in node.outputs[0].uses())
