"""Weight-only algorithms, one module each: they choose codes and scales for one weight.

``run(method, codec, w, block_size, stats)`` dispatches; every algorithm takes plain numpy
arrays (the weight ``[rows, cols]`` and :class:`LayerStats`) so it is tested without a model.
"""

from __future__ import annotations

import numpy as np

from edgeq.numerics.codecs import Codec
from edgeq.numerics.weight_only.awq import awq
from edgeq.numerics.weight_only.common import (
    DATA_DRIVEN,
    AlgorithmResult,
    LayerStats,
    output_error,
    weighted_error,
)
from edgeq.numerics.weight_only.gptq import gptq
from edgeq.numerics.weight_only.hqq import hqq
from edgeq.numerics.weight_only.rtn import rtn

__all__ = ["AlgorithmResult", "LayerStats", "output_error", "run", "weighted_error"]


def run(
    method: str,
    codec: Codec,
    w: np.ndarray,
    block_size: int,
    stats: LayerStats | None = None,
    gptq_damp: float = 0.01,
    gptq_act_order: bool = True,
) -> AlgorithmResult:
    """Quantize ``w`` ``[rows, cols]`` with ``method`` (rtn, hqq, gptq, awq)."""
    method = getattr(method, "value", method)
    if method == "rtn":
        return rtn(codec, w, block_size, stats)
    if method == "hqq":
        return hqq(codec, w, block_size, stats)
    if method in DATA_DRIVEN and stats is None:
        raise ValueError(f"{method} needs calibration statistics")
    assert stats is not None
    if method == "gptq":
        return gptq(codec, w, block_size, stats, damp=gptq_damp, act_order=gptq_act_order)
    if method == "awq":
        return awq(codec, w, block_size, stats)
    raise ValueError(f"unknown method {method!r}")
