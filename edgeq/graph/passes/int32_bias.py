"""Give int8 Gemms an int32 bias, the form onnxruntime needs to fuse them into ``QGemm``.

onnxruntime's CPU fusion turns ``DQ(A), DQ(B), bias -> Gemm`` into one ``QGemm`` only when the
bias is itself a DequantizeLinear of int32 values on the grid ``scale_A * scale_B`` (per output
channel); with a float bias the Gemm runs in float and the int8 weight is dequantized on every
call. Rounding the bias to that grid moves it by at most half a step of the accumulator, far
below the activation and weight quantization already there. TensorRT reads float biases
directly, so only the onnxruntime layout uses this.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

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

INT32_LIMIT = 2**31 - 1


class Int32GemmBias(Pass):
    """Quantize the float bias of every Gemm that reads a per-tensor DQ activation and a DQ weight
    whose scales run along the output axis; ``converted`` lists the Gemms."""

    def __init__(self) -> None:
        self.converted: list[str] = []

    def call(self, model: onnx.ModelProto) -> PassResult:
        graph = model.graph
        index = GraphIndex(graph)
        names = NameMaker(graph)
        added: list[onnx.NodeProto] = []
        for gemm in graph.node:
            if gemm.op_type != "Gemm" or len(gemm.input) < 3 or not gemm.input[2] or int(get_attribute(gemm, "transA", 0)):
                continue
            bias = index.constant(gemm.input[2])
            act_dq = index.producer.get(gemm.input[0])
            act_scale = index.scalar(act_dq, 1) if act_dq is not None and act_dq.op_type == "DequantizeLinear" else None
            weight_dq = index.producer.get(gemm.input[1])
            if bias is None or bias.ndim != 1 or act_scale is None or weight_dq is None or weight_dq.op_type != "DequantizeLinear":
                continue
            weight_scale = index.constant(weight_dq.input[1])
            values = index.constant(weight_dq.input[0])
            if weight_scale is None or values is None or values.ndim != 2:
                continue
            out_axis = 0 if int(get_attribute(gemm, "transB", 0)) else 1
            if weight_scale.size > 1 and int(get_attribute(weight_dq, "axis", 1)) % 2 != out_axis:
                continue  # scales along the input features: no single grid per output
            scale = act_scale * np.broadcast_to(weight_scale.astype(np.float64).reshape(-1), bias.shape)
            if np.any(scale <= 0):
                continue
            codes = np.rint(bias.astype(np.float64) / scale)
            if np.any(np.abs(codes) > INT32_LIMIT):
                continue
            base = gemm.name or gemm.output[0]
            codes_name, scale_name, zero_name = names(f"{base}_bias_int32"), names(f"{base}_bias_scale"), names(f"{base}_bias_zero_point")
            set_initializer(graph, codes_name, codes.astype(np.int32))
            set_initializer(graph, scale_name, scale.astype(np.float32))
            set_initializer(graph, zero_name, np.zeros(bias.shape, np.int32))
            dequantized = names(f"{base}_bias_dequantized")
            added.append(helper.make_node("DequantizeLinear", [codes_name, scale_name, zero_name], [dequantized], name=names(f"{base}_bias_DequantizeLinear"), axis=0))
            gemm.input[2] = dequantized
            self.converted.append(gemm.name)
        if not added:
            return PassResult(model, False)
        graph.node.extend(added)
        topological_sort(graph)
        remove_unused_initializers(graph)
        return PassResult(model, True)
