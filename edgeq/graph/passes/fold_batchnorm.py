"""Fold inference-mode BatchNormalization into the Conv before it.

Quantizing a Conv whose output is then rescaled per channel by a BatchNormalization wastes the
int8 grid on the wrong ranges, and TensorRT folds BN before quantizing anyway; folding first
makes the weights edgeq quantizes the weights the engine runs.
"""

from __future__ import annotations

import numpy as np
import onnx

from edgeq.graph.passes.base import (
    GraphIndex,
    NameMaker,
    Pass,
    PassResult,
    get_attribute,
    remove_unused_initializers,
    replace_nodes,
    set_initializer,
)


def fold_batchnorm_params(
    weight: np.ndarray,
    bias: np.ndarray | None,
    gamma: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float,
    channel_axis: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of ``BN(conv(x))`` as one conv, computed in float64."""
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    shape = [1] * weight.ndim
    shape[channel_axis] = -1
    folded_w = np.asarray(weight, np.float64) * scale.reshape(shape)
    b = np.zeros_like(scale) if bias is None else np.asarray(bias, np.float64)
    folded_b = (b - np.asarray(mean, np.float64)) * scale + np.asarray(beta, np.float64)
    return folded_w.astype(weight.dtype), folded_b.astype(weight.dtype)


class FoldBatchNorm(Pass):
    """Conv/ConvTranspose -> BatchNormalization (inference form) becomes one Conv.

    ``folded`` lists ``(conv, batchnorm)`` node names; ``skipped`` lists ``(batchnorm, why)``.
    """

    def __init__(self) -> None:
        self.folded: list[tuple[str, str]] = []
        self.skipped: list[tuple[str, str]] = []

    def _why_not(self, index: GraphIndex, bn: onnx.NodeProto) -> str | None:
        conv = index.producer.get(bn.input[0])
        if conv is None or conv.op_type not in ("Conv", "ConvTranspose"):
            return "input is not produced by a Conv"
        if len([o for o in bn.output if o]) != 1:
            return "training-mode BatchNormalization (more than one output)"
        if index.single_reader(conv.output[0]) is None:
            return f"the output of {conv.name} is read by other nodes too"
        if len(conv.input) < 2 or index.constant(conv.input[1]) is None:
            return f"the weight of {conv.name} is not a constant"
        if len(conv.input) > 2 and conv.input[2] and index.constant(conv.input[2]) is None:
            return f"the bias of {conv.name} is not a constant"
        if any(index.constant(name) is None for name in bn.input[1:5]):
            return "scale, bias, mean or variance is not a constant"
        if conv.op_type == "ConvTranspose" and int(get_attribute(conv, "group", 1)) != 1:
            return "grouped ConvTranspose"
        return None

    def call(self, model: onnx.ModelProto) -> PassResult:
        graph = model.graph
        modified = False
        names = NameMaker(graph)
        remove: set[int] = set()
        index = GraphIndex(graph)
        # Folded weights get new initializers, so a weight shared with another node stays intact.
        for position, bn in enumerate(graph.node):
            if bn.op_type != "BatchNormalization":
                continue
            why = self._why_not(index, bn)
            if why is not None:
                self.skipped.append((bn.name, why))
                continue
            conv = index.producer[bn.input[0]]
            weight = index.constant(conv.input[1])
            bias = index.constant(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
            gamma, beta, mean, var = (index.constant(n) for n in bn.input[1:5])
            eps = float(get_attribute(bn, "epsilon", 1e-5))
            assert weight is not None and gamma is not None and beta is not None
            assert mean is not None and var is not None
            axis = 1 if conv.op_type == "ConvTranspose" else 0
            new_w, new_b = fold_batchnorm_params(weight, bias, gamma, beta, mean, var, eps, axis)
            w_name = names(f"{conv.name or conv.output[0]}.weight_bnfolded")
            b_name = names(f"{conv.name or conv.output[0]}.bias_bnfolded")
            set_initializer(graph, w_name, new_w)
            set_initializer(graph, b_name, new_b)
            conv.input[1] = w_name
            if len(conv.input) > 2:
                conv.input[2] = b_name
            else:
                conv.input.append(b_name)
            conv.output[0] = bn.output[0]  # the BN's output name survives: readers and graph outputs keep working
            remove.add(position)
            self.folded.append((conv.name, bn.name))
            modified = True
        if modified:
            keep = [n for i, n in enumerate(graph.node) if i not in remove]
            replace_nodes(graph, keep)
            remove_unused_initializers(graph)
        return PassResult(model, modified)
