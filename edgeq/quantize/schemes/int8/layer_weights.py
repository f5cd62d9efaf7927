"""What a compute node's layout means for its int8 weight: the grid width onnxruntime can run,
the output-channel axis, where the bias lives, and the data-fitted weights (GPTQ rounding, the
least-squares refit) on the node's own geometry.

The numerics (Hessians, the GPTQ walk, the refit) live in ``edgeq.numerics.int8``; this module
only reads the node (op type, group, strides, pads) to call them with the right shapes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.graph.passes.base import constant, input_value, is_constant, single_reader
from edgeq.numerics.int8 import gptq as int8_gptq
from edgeq.numerics.int8 import refit as int8_refit
from edgeq.numerics.int8 import statistics as int8_statistics
from edgeq.numerics.int8 import weights as int8_weights


def _group(node: onnx.NodeProto | ir.Node) -> int:
    if isinstance(node, ir.Node):
        return node.attributes.get_int("group", 1)
    found = next((a for a in node.attribute if a.name == "group"), None)
    return 1 if found is None else int(onnx.helper.get_attribute_value(found))


def weight_qmax(node: onnx.NodeProto | ir.Node, weight: np.ndarray, reduce_range: bool) -> int:
    """The weight grid's half width. Reduced only where onnxruntime runs a GEMM (dense and grouped
    convs, MatMul, Gemm); its depthwise kernel accumulates in 32 bits and keeps all of int8."""
    if not reduce_range:
        return int8_weights.WEIGHT_QMAX
    group = _group(node) if node.op_type == "Conv" else 1
    depthwise = group > 1 and group == weight.shape[0] and weight.ndim > 1 and weight.shape[1] == 1
    return int8_weights.WEIGHT_QMAX if depthwise else int8_weights.REDUCED_WEIGHT_QMAX


def output_channel_axis(node: ir.Node) -> int:
    """The axis of the node's output that indexes its output channels."""
    return 1 if node.op_type in ("Conv", "ConvTranspose") else -1


def bias_slot(node: ir.Node) -> tuple[str, int] | None:
    """Where a compute node's bias lives (or may be added): its own input 2, or a following Add."""
    bias = input_value(node, 2)
    if node.op_type in ("Conv", "ConvTranspose"):
        if bias is not None and not is_constant(bias):
            return None
        return (node.name or "", 2)
    if node.op_type == "Gemm":
        if bias is not None:
            c = constant(bias)
            if c is None or c.ndim != 1:
                return None
        return (node.name or "", 2)
    output = node.outputs[0]
    reader = single_reader(output)
    if reader is not None and reader.op_type == "Add":
        other = 1 if reader.inputs[0] is output else 0
        value = constant(reader.inputs[other])
        if value is not None and value.ndim == 1:
            return (reader.name or "", other)
    return None


def _conv_geometry(node: ir.Node, weight: np.ndarray) -> tuple[Any, ...] | None:
    """(kernel, strides, pads, dilations, depthwise) of a dense or depthwise Conv; None for other groupings."""
    group = node.attributes.get_int("group", 1)
    depthwise = group > 1 and group == weight.shape[0] and weight.shape[1] == 1
    if group != 1 and not depthwise:
        return None
    kernel = (weight.shape[2], weight.shape[3])
    strides = tuple(node.attributes.get_ints("strides", [1, 1]))
    pads = tuple(node.attributes.get_ints("pads", [0, 0, 0, 0]))
    dilations = tuple(node.attributes.get_ints("dilations", [1, 1]))
    return kernel, strides, pads, dilations, depthwise


def gptq_values(
    node: ir.Node, weight: np.ndarray, scale: np.ndarray, axis: int, inputs: list[np.ndarray], qmax: int
) -> np.ndarray | None:
    """GPTQ integers on the per-channel grid, or None for layouts it does not handle."""
    if node.op_type == "Conv" and weight.ndim == 4 and axis == 0:
        geometry = _conv_geometry(node, weight)
        if geometry is None:
            return None
        hessian = int8_statistics.conv_hessian(inputs, *geometry)  # type: ignore[arg-type]
        rows = weight.reshape(weight.shape[0], -1)
        return int8_gptq.gptq_int8(rows, scale, hessian, act_order=False, qmax=qmax).reshape(weight.shape)
    if node.op_type in ("MatMul", "Gemm") and weight.ndim == 2:
        if node.op_type == "Gemm" and node.attributes.get_int("transA", 0) != 0:
            return None
        hessian = int8_statistics.matmul_hessian(inputs)
        rows = weight if axis == 0 else weight.T
        q = int8_gptq.gptq_int8(rows, scale, hessian, act_order=False, qmax=qmax)
        return q if axis == 0 else q.T
    return None


def rows_per_weight(node: ir.Node, weight: np.ndarray, inputs: list[np.ndarray]) -> float:
    """Input rows (patch positions or token rows) per weight of one output channel."""
    if node.op_type == "Conv" and weight.ndim == 4:
        rows = sum(int(np.prod(x.shape[2:])) * x.shape[0] for x in inputs)  # ~ output positions
        per_channel = int(np.prod(weight.shape[1:]))
    else:
        rows = sum(int(np.prod(x.shape[:-1])) for x in inputs)
        per_channel = inputs[0].shape[-1]
    return min(rows, int8_statistics.MAX_ROWS) / max(per_channel, 1)


def refitted_weight(node: ir.Node, weight: np.ndarray, axis: int, inputs: list[np.ndarray], targets: list[np.ndarray]) -> np.ndarray | None:
    """The layer's weight refitted (ridge least squares) so its quantized input maps to the float output."""
    if node.op_type == "Conv" and weight.ndim == 4 and axis == 0:
        geometry = _conv_geometry(node, weight)
        if geometry is None:
            return None
        hessian, cross = int8_statistics.conv_statistics(inputs, targets, *geometry)  # type: ignore[arg-type]
        assert cross is not None
        rows = weight.reshape(weight.shape[0], -1)
        return int8_refit.corrected_weight(rows, hessian, cross).reshape(weight.shape)
    if node.op_type in ("MatMul", "Gemm") and weight.ndim == 2:
        if node.op_type == "Gemm" and node.attributes.get_int("transA", 0) != 0:
            return None
        hessian, cross = int8_statistics.matmul_statistics(inputs, targets)
        assert cross is not None
        rows = weight if axis == 0 else weight.T
        fitted = int8_refit.corrected_weight(rows, hessian, cross)
        return fitted if axis == 0 else fitted.T
    return None
