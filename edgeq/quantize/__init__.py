"""Quantization: codecs (numbers), algorithms (choosing them), formats (ONNX), schemes (glue)."""

from edgeq.quantize.api import QuantizeInputs, QuantizeResult, quantize, quantize_file, register
from edgeq.quantize.config import (
    Int8Config,
    Method,
    MixedPrecisionConfig,
    OnnxFormat,
    WeightFormat,
    WeightOnlyConfig,
)
from edgeq.quantize.schemes.int8.scheme import rewrite_for_onnxruntime
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
