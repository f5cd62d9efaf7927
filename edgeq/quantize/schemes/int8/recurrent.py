"""Under W8A8, the weights no int8 kernel reads: LSTM/GRU/RNN ``W`` and ``R``, and subgraph weights.

onnxruntime and TensorRT have no recurrent kernel with int8 activations, and the Q/DQ placement
covers the top-level graph only. These weights still shrink: weight-only int8 through
``DequantizeLinear`` (``schemes.weight_only.dq_weights``), activations float, said so per node.
"""

from __future__ import annotations

import onnx

from edgeq.graph.passes.weight_dq import RECURRENT_OPS
from edgeq.quantize.config import Int8Config, WeightOnlyConfig
from edgeq.quantize.schemes.weight_only import dq_weights
from edgeq.quantize.summary import QuantizationSummary


def _config(config: Int8Config) -> WeightOnlyConfig:
    return WeightOnlyConfig(weights="int8", exclude=config.exclude)  # type: ignore[arg-type]


def required_opset(model: onnx.ModelProto, config: Int8Config) -> int:
    """The opset the recurrent / subgraph DequantizeLinear nodes need (0 when there are none)."""
    return dq_weights.required_opset(model, _config(config), RECURRENT_OPS)


def weight_only_rest(model: onnx.ModelProto, config: Int8Config, summary: QuantizationSummary) -> None:
    """Weight-only int8 on recurrent and subgraph weights of ``model`` (in place), rows into ``summary``."""
    outcome = dq_weights.quantize_dq_weights(model, _config(config), RECURRENT_OPS)
    for decision in outcome.decisions:
        if decision.quantized:
            where = f"inside {decision.subgraph}, where Q/DQ placement does not reach" if decision.subgraph else (
                f"no {decision.op_type} kernel takes int8 activations")
            decision.scheme = f"weight-only {decision.scheme}; activations float ({where})"
        summary.add(decision)
    summary.notes.extend(outcome.notes)
    summary.weight_bytes_before += outcome.bytes_before
    summary.weight_bytes_after += outcome.bytes_after
