"""Float reference vs quantized candidates: ``edgeq compare``.

``compare`` holds single-pass models (classifiers, encoders, anything): output agreement,
per-layer error, size and latency on ``--data`` batches. ``decoder`` holds autoregressive
language models with a KV cache, chosen automatically by ``compare_models`` when the reference
has that layout (``kv_cache``): perplexity on held-out tokens, next-token and greedy-generation
agreement with the reference, per-layer error, size.
"""

from __future__ import annotations

from edgeq.evaluate.compare import (
    CompareResult,
    VariantResult,
    compare_models,
    detect_task,
    file_bytes,
    measure_latency,
    quantized_layer_tensors,
)
from edgeq.evaluate.decoder import DecoderCompareResult, DecoderOptions

__all__ = [
    "CompareResult",
    "DecoderCompareResult",
    "DecoderOptions",
    "VariantResult",
    "compare_models",
    "detect_task",
    "file_bytes",
    "measure_latency",
    "quantized_layer_tensors",
]
