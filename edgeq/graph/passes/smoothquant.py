"""SmoothQuant as a graph rewrite: divide an activation per channel, multiply the weights back.

The division is folded into a LayerNormalization that produces the activation when it can
(no extra op at run time); otherwise a ``Mul`` by a constant vector is inserted before the
consumers. Every reader of the activation must be a quantized MatMul/Gemm with a constant
weight, or the division would change what the other readers see.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper

from edgeq.graph.passes.base import (
    GraphIndex,
    NameMaker,
    Pass,
    PassResult,
    get_attribute,
    set_initializer,
    topological_sort,
)
from edgeq.numerics.int8.smoothquant import smoothquant_scales


def _weight_rows(node: onnx.NodeProto, weight: np.ndarray) -> np.ndarray:
    """The weight as [input channels, outputs]."""
    if node.op_type == "Gemm" and int(get_attribute(node, "transB", 0)):
        return weight.T
    return weight


def smoothable_tensors(model: onnx.ModelProto, quantized: set[str]) -> dict[str, list[str]]:
    """Activation tensor -> the quantized MatMul/Gemm nodes reading it (all its readers)."""
    index = GraphIndex(model.graph)
    by_tensor: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.name not in quantized or node.op_type not in ("MatMul", "Gemm"):
            continue
        if node.op_type == "Gemm" and int(get_attribute(node, "transA", 0)):
            continue
        weight = index.constant(node.input[1])
        if weight is None or weight.ndim != 2:
            continue
        by_tensor.setdefault(node.input[0], []).append(node.name)
    result = {}
    for tensor, readers in by_tensor.items():
        all_readers = index.readers(tensor)
        if tensor in index.graph_outputs or len(all_readers) != len(readers) or index.is_constant(tensor):
            continue
        if any(r.input[0] != tensor or r.input[1] == tensor for r in all_readers):
            continue
        result[tensor] = readers
    return result


class SmoothQuant(Pass):
    """Apply ``scales[tensor]`` (divisors per input channel) to each smoothable tensor."""

    def __init__(self, readers: dict[str, list[str]], scales: dict[str, np.ndarray]) -> None:
        self.readers = readers
        self.scales = scales
        self.applied: list[str] = []
        self.folded_into_layernorm: list[str] = []

    @classmethod
    def from_data(cls, model: onnx.ModelProto, data: Any, quantized: set[str], alpha: float, progress: bool = False) -> SmoothQuant:
        """Measure per-channel activation maxima on ``data`` and compute the scales."""
        from edgeq.calibrate.collector import collect
        from edgeq.calibrate.observers import ChannelMagnitudeObserver

        readers = smoothable_tensors(model, quantized)
        observers: dict[str, list[Any]] = {t: [ChannelMagnitudeObserver(-1)] for t in readers}
        if observers:
            collect(model, data, observers, progress=progress, description="smoothquant statistics")
        index = GraphIndex(model.graph)
        by_name = {n.name: n for n in model.graph.node}
        scales = {}
        for tensor, names in readers.items():
            act = observers[tensor][0].absmax
            rows = []
            for name in names:
                weight = index.constant(by_name[name].input[1])
                assert weight is not None
                rows.append(np.abs(_weight_rows(by_name[name], weight)).max(axis=1))
            w_max = np.max(np.stack(rows), axis=0)
            if act.size != w_max.size:
                continue
            scales[tensor] = smoothquant_scales(act, w_max, alpha)
        return cls(readers, scales)

    def _fold_into_layernorm(self, index: GraphIndex, graph: onnx.GraphProto, names: NameMaker, tensor: str, s: np.ndarray) -> bool:
        producer = index.producer.get(tensor)
        if producer is None or producer.op_type != "LayerNormalization" or producer.output[0] != tensor:
            return False
        if int(get_attribute(producer, "axis", -1)) != -1:
            return False
        gamma = index.constant(producer.input[1])
        beta = index.constant(producer.input[2]) if len(producer.input) > 2 and producer.input[2] else None
        if gamma is None or gamma.shape != s.shape or (beta is not None and beta.shape != s.shape):
            return False
        g_name = names(f"{producer.name}.scale_smoothed")
        set_initializer(graph, g_name, (gamma / s).astype(gamma.dtype))
        producer.input[1] = g_name
        if beta is not None:
            b_name = names(f"{producer.name}.bias_smoothed")
            set_initializer(graph, b_name, (beta / s).astype(beta.dtype))
            producer.input[2] = b_name
        return True

    def call(self, model: onnx.ModelProto) -> PassResult:
        graph = model.graph
        names = NameMaker(graph)
        modified = False
        for tensor, reader_names in self.readers.items():
            if tensor not in self.scales:
                continue
            s = np.asarray(self.scales[tensor], np.float64)
            index = GraphIndex(graph)
            by_name = {n.name: n for n in graph.node}
            for name in reader_names:
                node = by_name[name]
                weight = index.constant(node.input[1])
                assert weight is not None
                transposed = node.op_type == "Gemm" and int(get_attribute(node, "transB", 0))
                new = weight * (s[None, :] if transposed else s[:, None])
                w_name = names(f"{name}.weight_smoothed")
                set_initializer(graph, w_name, new.astype(weight.dtype))
                node.input[1] = w_name
            if self._fold_into_layernorm(index, graph, names, tensor, s.astype(np.float32)):
                self.folded_into_layernorm.append(tensor)
            else:
                inv_name = names(f"{tensor}_smooth_inverse")
                out_name = names(f"{tensor}_smoothed")
                set_initializer(graph, inv_name, (1.0 / s).astype(np.float32))
                graph.node.append(helper.make_node("Mul", [tensor, inv_name], [out_name], name=names(f"{tensor}_SmoothQuant")))
                for name in reader_names:
                    by_name[name].input[0] = out_name
            self.applied.append(tensor)
            modified = True
        if modified:
            topological_sort(graph)
            from edgeq.graph.passes.base import remove_unused_initializers

            remove_unused_initializers(graph)
        return PassResult(model, modified)
