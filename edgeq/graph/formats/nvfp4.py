"""NVFP4 weights as NVIDIA Model Optimizer writes them for TensorRT: two DequantizeLinear nodes.

For a MatMul weight ``W [K, N]``::

    block_scale = DequantizeLinear(scale_e4m3 [K/16, N], scale2 float32 scalar)        # opset 19+
    W           = DequantizeLinear(w_e2m1 [K, N], block_scale, axis=0, block_size=16)  # opset 23
    y           = MatMul(x, W)

FLOAT4E2M1 exists from opset 23 (two values per byte, the first in the low nibble, as INT4).
TensorRT parses this form from 10.8 on Blackwell (Thor). onnxruntime 1.32 has no CPU kernel for a
FLOAT4E2M1 DequantizeLinear, so :func:`dequantized_copy` gives the same graph with each chain
replaced by its float64-reference values for checks that must run in onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper

from edgeq.graph.passes.base import (
    GraphPass,
    NameMaker,
    constant,
    nodes_by_name,
    set_initializer,
    tidy,
    to_ir,
)
from edgeq.numerics.codecs.minifloat import NVFP4_BLOCK, NvFp4
from edgeq.numerics.codecs.packing import pack_bits

OPSET = 23


def e2m1_tensor(codes: np.ndarray, name: str) -> onnx.TensorProto:
    """A FLOAT4E2M1 initializer from E2M1 bit patterns (packed low nibble first)."""
    raw = pack_bits(np.asarray(codes, np.uint8).reshape(-1) & 0x0F, 4)
    return helper.make_tensor(name, TensorProto.FLOAT4E2M1, list(codes.shape), raw.tobytes(), raw=True)


def e4m3_tensor(codes: np.ndarray, name: str) -> onnx.TensorProto:
    """A FLOAT8E4M3FN initializer from E4M3 bit patterns."""
    return helper.make_tensor(name, TensorProto.FLOAT8E4M3FN, list(codes.shape), np.asarray(codes, np.uint8).tobytes(), raw=True)


class WriteNvFp4(GraphPass):
    """Each ``MatMul`` named in ``weights`` reads its weight through the NVFP4 two-level DQ chain.

    ``weights[name]`` is the NVFP4 of the weight transposed (``[N, K]``, blocks along K).
    """

    def __init__(self, weights: dict[str, NvFp4]) -> None:
        super().__init__()
        self.weights = weights

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if not self.weights:
            return ir.passes.PassResult(model, False)
        if model.opset_imports.get("", 0) < OPSET:
            raise ValueError(f"NVFP4 (FLOAT4E2M1) DequantizeLinear needs opset >= {OPSET}")
        graph = model.graph
        names = NameMaker(graph)
        by_name = nodes_by_name(graph)
        for node_name, q in self.weights.items():
            node = by_name[node_name]
            base = node_name.replace("/", "_").strip("_") or "matmul"
            w = ir.serde.deserialize_tensor(e2m1_tensor(np.ascontiguousarray(q.codes.T), names(f"{base}_weight_nvfp4")))
            s = ir.serde.deserialize_tensor(e4m3_tensor(np.ascontiguousarray(q.block_scales.T), names(f"{base}_block_scale_e4m3")))
            w_value = ir.Value(name=w.name, shape=ir.Shape(w.shape.numpy()), type=ir.TensorType(w.dtype), const_value=w)
            s_value = ir.Value(name=s.name, shape=ir.Shape(s.shape.numpy()), type=ir.TensorType(s.dtype), const_value=s)
            graph.register_initializer(w_value)
            graph.register_initializer(s_value)
            scale2 = set_initializer(graph, names(f"{base}_scale2"), np.array(q.scale2, np.float32))
            block = ir.Value(name=names(f"{base}_block_scale"))
            graph.append(ir.node("DequantizeLinear", [s_value, scale2], outputs=[block], name=names(f"{base}_scale_DequantizeLinear")))
            weight = ir.Value(name=names(f"{base}_weight_dequantized"))
            graph.append(ir.node("DequantizeLinear", [w_value, block], {"axis": 0, "block_size": NVFP4_BLOCK},
                                 outputs=[weight], name=names(f"{base}_weight_DequantizeLinear")))
            node.replace_input_with(1, weight)
        tidy(model)
        return ir.passes.PassResult(model, True)


def nvfp4_chain(dq: ir.Node) -> NvFp4 | None:
    """The NVFP4 a FLOAT4E2M1 weight DequantizeLinear reads (codes ``[K, N]`` as stored), or None."""
    codes, scale_value = dq.inputs[0], dq.inputs[1] if len(dq.inputs) > 1 else None
    if codes is None or codes.const_value is None or codes.dtype != ir.DataType.FLOAT4E2M1 or scale_value is None:
        return None
    scale_dq = scale_value.producer()
    if scale_dq is None or scale_dq.op_type != "DequantizeLinear":
        return None
    block, scale2 = scale_dq.inputs[0], constant(scale_dq.inputs[1])
    if block is None or block.const_value is None or block.dtype != ir.DataType.FLOAT8E4M3FN or scale2 is None:
        return None
    codes_u8 = np.asarray(codes.const_value.numpy()).view(np.uint8).reshape(codes.const_value.shape.numpy())
    block_u8 = np.asarray(block.const_value.numpy()).view(np.uint8).reshape(block.const_value.shape.numpy())
    return NvFp4(codes_u8, block_u8, float(np.asarray(scale2).reshape(())))


def dequantized_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every NVFP4 DQ chain replaced by its weight in float32 (float64 reference, rounded once)."""
    graph_ir = to_ir(onnx.ModelProto.FromString(model.SerializeToString()))
    graph = graph_ir.graph
    names = NameMaker(graph)
    for node in list(graph):
        if node.op_type != "DequantizeLinear" or node.attributes.get_int("block_size", 0) != NVFP4_BLOCK:
            continue
        q = nvfp4_chain(node)
        if q is None:
            continue
        # Stored [K, N] blocked along axis 0: the codec's [rows, cols] layout is the transpose.
        weight = NvFp4(q.codes.T, q.block_scales.T, q.scale2).dequantize().T
        value = set_initializer(graph, names(f"{node.outputs[0].name}_reference"), weight.astype(np.float32))
        node.outputs[0].replace_all_uses_with(value)
    tidy(graph_ir, sort=False)
    return ir.serde.serialize_model(graph_ir)
