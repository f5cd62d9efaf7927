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
import onnx_ir as ir

from edgeq.graph.passes.base import GraphPass, NameMaker, constant, input_value, scalar, set_initializer, tidy

INT32_LIMIT = 2**31 - 1


class Int32GemmBias(GraphPass):
    """Quantize the float bias of every Gemm that reads a per-tensor DQ activation and a DQ weight
    whose scales run along the output axis; ``converted`` lists the Gemms."""

    def __init__(self) -> None:
        super().__init__()
        self.converted: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        names = NameMaker(graph)
        added: list[ir.Node] = []
        for gemm in graph:
            bias_value = input_value(gemm, 2)
            if gemm.op_type != "Gemm" or bias_value is None or gemm.attributes.get_int("transA", 0) != 0:
                continue
            bias = constant(bias_value)
            act_dq = gemm.inputs[0].producer() if gemm.inputs[0] is not None else None
            act_scale = scalar(act_dq, 1) if act_dq is not None and act_dq.op_type == "DequantizeLinear" else None
            weight_dq = gemm.inputs[1].producer() if gemm.inputs[1] is not None else None
            if bias is None or bias.ndim != 1 or act_scale is None or weight_dq is None or weight_dq.op_type != "DequantizeLinear":
                continue
            weight_scale = constant(input_value(weight_dq, 1))
            values = constant(input_value(weight_dq, 0))
            if weight_scale is None or values is None or values.ndim != 2:
                continue
            out_axis = 0 if gemm.attributes.get_int("transB", 0) != 0 else 1
            if weight_scale.size > 1 and weight_dq.attributes.get_int("axis", 1) % 2 != out_axis:
                continue  # scales along the input features: no single grid per output
            scale = act_scale * np.broadcast_to(weight_scale.astype(np.float64).reshape(-1), bias.shape)
            if np.any(scale <= 0):
                continue
            codes = np.rint(bias.astype(np.float64) / scale)
            if np.any(np.abs(codes) > INT32_LIMIT):
                continue
            base = gemm.name or gemm.outputs[0].name
            codes_name, scale_name, zero_name = names(f"{base}_bias_int32"), names(f"{base}_bias_scale"), names(f"{base}_bias_zero_point")
            inputs = [
                set_initializer(graph, codes_name, codes.astype(np.int32)),
                set_initializer(graph, scale_name, scale.astype(np.float32)),
                set_initializer(graph, zero_name, np.zeros(bias.shape, np.int32)),
            ]
            dequantized = ir.Value(name=names(f"{base}_bias_dequantized"))
            dq = ir.node("DequantizeLinear", inputs, {"axis": 0}, outputs=[dequantized], name=names(f"{base}_bias_DequantizeLinear"))
            added.append(dq)
            gemm.replace_input_with(2, dequantized)
            self.converted.append(gemm.name or "")
        if not added:
            return ir.passes.PassResult(model, False)
        graph.extend(added)
        tidy(model)
        return ir.passes.PassResult(model, True)
