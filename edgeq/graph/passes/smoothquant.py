"""SmoothQuant as a graph rewrite: divide an activation per channel, multiply the weights back.

The division is folded into a LayerNormalization that produces the activation when it can
(no extra op at run time); otherwise a ``Mul`` by a constant vector is inserted before the
consumers. Every reader of the activation must be a quantized MatMul/Gemm with a constant
weight, or the division would change what the other readers see. The per-channel activation
maxima are measured by the caller (the int8 scheme calibrates; a graph pass does not run data).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.graph.passes.base import (
    GraphPass,
    NameMaker,
    constant,
    input_value,
    is_constant,
    nodes_by_name,
    readers,
    set_initializer,
    tidy,
    to_ir,
)
from edgeq.numerics.int8.smoothquant import smoothquant_scales


def _weight_rows(node: ir.Node, weight: np.ndarray) -> np.ndarray:
    """The weight as [input channels, outputs]."""
    if node.op_type == "Gemm" and node.attributes.get_int("transB", 0) != 0:
        return weight.T
    return weight


def smoothable_tensors(model: onnx.ModelProto | ir.Model, quantized: set[str]) -> dict[str, list[str]]:
    """Activation tensor -> the quantized MatMul/Gemm nodes reading it (all its readers)."""
    by_tensor: dict[ir.Value, list[str]] = {}
    for node in to_ir(model).graph:
        if node.name not in quantized or node.op_type not in ("MatMul", "Gemm"):
            continue
        if node.op_type == "Gemm" and node.attributes.get_int("transA", 0) != 0:
            continue
        weight = constant(input_value(node, 1))
        if weight is None or weight.ndim != 2 or node.inputs[0] is None:
            continue
        by_tensor.setdefault(node.inputs[0], []).append(node.name)
    result = {}
    for tensor, names in by_tensor.items():
        all_readers = readers(tensor)
        if tensor.is_graph_output() or len(all_readers) != len(names) or is_constant(tensor):
            continue
        if any(r.inputs[0] is not tensor or r.inputs[1] is tensor for r in all_readers):
            continue
        result[tensor.name or ""] = names
    return result


class SmoothQuant(GraphPass):
    """Apply ``scales[tensor]`` (divisors per input channel) to each smoothable tensor."""

    def __init__(self, readers: dict[str, list[str]], scales: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.readers = readers
        self.scales = scales
        self.applied: list[str] = []
        self.folded_into_layernorm: list[str] = []

    @classmethod
    def from_magnitudes(
        cls, model: onnx.ModelProto | ir.Model, readers: dict[str, list[str]], magnitudes: dict[str, np.ndarray], alpha: float
    ) -> SmoothQuant:
        """The pass for ``readers`` (from :func:`smoothable_tensors`), with scales from each
        tensor's measured per-channel absolute maxima and its readers' weights."""
        by_name = nodes_by_name(to_ir(model).graph)
        scales = {}
        for tensor, names in readers.items():
            act = magnitudes[tensor]
            rows = []
            for name in names:
                weight = constant(by_name[name].inputs[1])
                assert weight is not None
                rows.append(np.abs(_weight_rows(by_name[name], weight)).max(axis=1))
            w_max = np.max(np.stack(rows), axis=0)
            if act.size != w_max.size:
                continue
            scales[tensor] = smoothquant_scales(act, w_max, alpha)
        return cls(readers, scales)

    @staticmethod
    def _fold_into_layernorm(graph: ir.Graph, names: NameMaker, tensor: ir.Value, s: np.ndarray) -> bool:
        producer = tensor.producer()
        if producer is None or producer.op_type != "LayerNormalization" or producer.outputs[0] is not tensor:
            return False
        if producer.attributes.get_int("axis", -1) != -1:
            return False
        gamma = constant(input_value(producer, 1))
        beta = constant(input_value(producer, 2))
        if gamma is None or gamma.shape != s.shape or (beta is not None and beta.shape != s.shape):
            return False
        g_name = names(f"{producer.name}.scale_smoothed")
        producer.replace_input_with(1, set_initializer(graph, g_name, (gamma / s).astype(gamma.dtype)))
        if beta is not None:
            b_name = names(f"{producer.name}.bias_smoothed")
            producer.replace_input_with(2, set_initializer(graph, b_name, (beta / s).astype(beta.dtype)))
        return True

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        names = NameMaker(graph)
        by_name = nodes_by_name(graph)
        modified = False
        for tensor_name, reader_names in self.readers.items():
            if tensor_name not in self.scales:
                continue
            s = np.asarray(self.scales[tensor_name], np.float64)
            tensor = by_name[reader_names[0]].inputs[0]
            assert tensor is not None
            for name in reader_names:
                node = by_name[name]
                weight = constant(node.inputs[1])
                assert weight is not None
                transposed = node.op_type == "Gemm" and node.attributes.get_int("transB", 0) != 0
                new = weight * (s[None, :] if transposed else s[:, None])
                w_name = names(f"{name}.weight_smoothed")
                node.replace_input_with(1, set_initializer(graph, w_name, new.astype(weight.dtype)))
            if self._fold_into_layernorm(graph, names, tensor, s.astype(np.float32)):
                self.folded_into_layernorm.append(tensor_name)
            else:
                inv_name = names(f"{tensor_name}_smooth_inverse")
                out_name = names(f"{tensor_name}_smoothed")
                inverse = set_initializer(graph, inv_name, (1.0 / s).astype(np.float32))
                mul = ir.node("Mul", [tensor, inverse], outputs=[ir.Value(name=out_name)], name=names(f"{tensor_name}_SmoothQuant"))
                graph.append(mul)
                for name in reader_names:
                    by_name[name].replace_input_with(0, mul.outputs[0])
            self.applied.append(tensor_name)
            modified = True
        if modified:
            tidy(model)
        return ir.passes.PassResult(model, modified)
