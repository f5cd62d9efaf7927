"""Fold inference-mode BatchNormalization into the Conv before it.

Quantizing a Conv whose output is then rescaled per channel by a BatchNormalization wastes the
int8 grid on the wrong ranges, and TensorRT folds BN before quantizing anyway; folding first
makes the weights edgeq quantizes the weights the engine runs.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.graph.passes.base import (
    GraphPass,
    NameMaker,
    constant,
    input_value,
    set_initializer,
    single_reader,
    tidy,
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


class FoldBatchNorm(GraphPass):
    """Conv/ConvTranspose -> BatchNormalization (inference form) becomes one Conv.

    ``folded`` lists ``(conv, batchnorm)`` node names; ``skipped`` lists ``(batchnorm, why)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.folded: list[tuple[str, str]] = []
        self.skipped: list[tuple[str, str]] = []

    @staticmethod
    def _why_not(bn: ir.Node) -> str | None:
        conv = bn.inputs[0].producer() if bn.inputs and bn.inputs[0] is not None else None
        if conv is None or conv.op_type not in ("Conv", "ConvTranspose"):
            return "input is not produced by a Conv"
        if len([o for o in bn.outputs if o.name]) != 1:
            return "training-mode BatchNormalization (more than one output)"
        if single_reader(conv.outputs[0]) is None:
            return f"the output of {conv.name} is read by other nodes too"
        if constant(input_value(conv, 1)) is None:
            return f"the weight of {conv.name} is not a constant"
        bias = input_value(conv, 2)
        if bias is not None and constant(bias) is None:
            return f"the bias of {conv.name} is not a constant"
        if any(constant(value) is None for value in bn.inputs[1:5]):
            return "scale, bias, mean or variance is not a constant"
        if conv.op_type == "ConvTranspose" and conv.attributes.get_int("group", 1) != 1:
            return "grouped ConvTranspose"
        return None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        names = NameMaker(graph)
        # Folded weights get new initializers, so a weight shared with another node stays intact.
        for bn in list(graph):
            if bn.op_type != "BatchNormalization":
                continue
            why = self._why_not(bn)
            if why is not None:
                self.skipped.append((bn.name or "", why))
                continue
            conv = bn.inputs[0].producer()  # type: ignore[union-attr]
            assert conv is not None
            weight = constant(conv.inputs[1])
            bias = constant(input_value(conv, 2))
            gamma, beta, mean, var = (constant(v) for v in bn.inputs[1:5])
            eps = float(bn.attributes.get_float("epsilon", 1e-5))
            assert weight is not None and gamma is not None and beta is not None
            assert mean is not None and var is not None
            axis = 1 if conv.op_type == "ConvTranspose" else 0
            new_w, new_b = fold_batchnorm_params(weight, bias, gamma, beta, mean, var, eps, axis)
            base = conv.name or conv.outputs[0].name
            w_value = set_initializer(graph, names(f"{base}.weight_bnfolded"), new_w)
            b_value = set_initializer(graph, names(f"{base}.bias_bnfolded"), new_b)
            conv.replace_input_with(1, w_value)
            if len(conv.inputs) < 3:
                conv.resize_inputs(3)
            conv.replace_input_with(2, b_value)
            # The BN's output (name, type) survives on the conv: readers and graph outputs keep working.
            folded_out, conv_out = bn.outputs[0], conv.outputs[0]
            folded_out.replace_all_uses_with(conv_out, replace_graph_outputs=True)
            graph.remove(bn, safe=True)
            conv_out.name, conv_out.type, conv_out.shape = folded_out.name, folded_out.type, folded_out.shape
            self.folded.append((conv.name or "", bn.name or ""))
            modified = True
        if modified:
            tidy(model, sort=False)
        return ir.passes.PassResult(model, modified)
