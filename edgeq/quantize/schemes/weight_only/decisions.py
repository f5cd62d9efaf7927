"""What the summary says about one weight: left in float and why, or how it was written.

The weight-only and mixed schemes report in the same words, so a summary reads the same
whichever of them wrote the model.
"""

from __future__ import annotations

import onnx

from edgeq.graph.passes.weight_only import LeftInFloat
from edgeq.numerics.codecs import BlockQuantized
from edgeq.quantize.api import QuantizeResult
from edgeq.quantize.summary import NodeDecision, QuantizationSummary


def left_decision(skipped: LeftInFloat) -> NodeDecision:
    """A node the planner left in float, with its reason."""
    return NodeDecision(name=skipped.name, op_type=skipped.op_type, quantized=False, reason=skipped.reason, weight=skipped.weight)


def nothing_to_quantize(model: onnx.ModelProto, summary: QuantizationSummary) -> QuantizeResult:
    """The model unchanged, its summary saying there was no weight to quantize."""
    summary.notes.append("no MatMul/Gemm/Gather node with a constant float weight: nothing to quantize")
    summary.weight_bytes_after = summary.weight_bytes_before
    return QuantizeResult(model, summary)


def scheme_label(q: BlockQuantized, kind: str, method: str, *, input_scale: bool, bias_correction: bool, note: str) -> str:
    """``int4 block32 sym gptq +input scale +bias correction (note)``: one written weight in a line."""
    scheme = f"{q.codec.name} block{q.block_size} {kind} {method}"
    if input_scale:
        scheme += " +input scale"
    if bias_correction:
        scheme += " +bias correction"
    if note:
        scheme += f" ({note})"
    return scheme
