"""Quantization: codecs (numbers), algorithms (choosing them), formats (ONNX), schemes (glue)."""

from __future__ import annotations

import onnx

from edgeq.quantize.api import QuantizeInputs, QuantizeResult, quantize, quantize_file, register
from edgeq.quantize.config import (
    Int8Config,
    Method,
    MixedPrecisionConfig,
    OnnxFormat,
    WeightFormat,
    WeightOnlyConfig,
)
from edgeq.quantize.summary import NodeDecision, QuantizationSummary

__all__ = [
    "Int8Config",
    "Method",
    "MixedPrecisionConfig",
    "NodeDecision",
    "OnnxFormat",
    "QuantizationSummary",
    "QuantizeInputs",
    "QuantizeResult",
    "WeightFormat",
    "WeightOnlyConfig",
    "quantize",
    "quantize_file",
    "register",
    "rewrite_for_onnxruntime",
]


def rewrite_for_onnxruntime(model: onnx.ModelProto) -> str | None:
    """The int8 scheme's exact onnxruntime rewrites, in place (what changed, or None).

    Imported on call: importing a scheme registers it, and schemes register only when needed.
    """
    from edgeq.quantize.schemes.int8.scheme import rewrite_for_onnxruntime as rewrite

    return rewrite(model)
