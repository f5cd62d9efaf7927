"""One matrix in one candidate format: the fit, and the exact bytes the written model holds for it.

Sizes come from the very emitters that write the file (GatherBlockQuantized, MatMulNBits,
MatMulBnb4), so the knapsack prices an option by what it really costs on disk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeq.graph.formats import Emitted, bnb4, gather, matmulnbits
from edgeq.graph.passes.weight_only import WeightTarget
from edgeq.numerics import weight_only as algorithms
from edgeq.numerics.codecs import BlockQuantized, get_codec, num_blocks
from edgeq.numerics.weight_only import AlgorithmResult, LayerStats
from edgeq.numerics.weight_only.common import data_free_fallback
from edgeq.quantize.config import Method
from edgeq.quantize.schemes.mixed.candidates import FLOAT


@dataclass
class Fitted:
    """A matrix quantized in one candidate format, ready to measure or emit."""

    result: AlgorithmResult
    method: Method
    note: str
    flat: bool  # bnb4 layout with blocks across rows: the weight was fitted as one flat row

    def effective(self, shape: tuple[int, int]) -> np.ndarray:
        return self.result.effective_weight().reshape(shape)


def unavailable_reason(target: WeightTarget, fmt: str) -> str | None:
    """Why ``fmt`` cannot hold this matrix in a format onnxruntime runs, or None."""
    if fmt == FLOAT:
        return None
    codec = get_codec(fmt, True)
    if target.is_embedding:
        probe = BlockQuantized(codec, 16, np.zeros((1, target.cols), np.uint8), np.zeros((1, 1), np.float32))
        return gather.check_table(probe)
    return None


def fit(w: np.ndarray, target: WeightTarget, fmt: str, block_size: int, method: Method, stats: dict[str, LayerStats]) -> Fitted:
    """Quantize one ``[rows, cols]`` weight with the weight-only algorithms, as the weight-only scheme does."""
    codec = get_codec(fmt, True)
    layer_stats = stats.get(target.activation)
    flat = not codec.is_integer and not target.is_embedding and bnb4.flat_layout(target.rows, target.cols, block_size)
    chosen, note = data_free_fallback(
        method, table=target.is_embedding, has_hessian=layer_stats is not None and layer_stats.hessian is not None,
        flat=flat, cols=target.cols, block_size=block_size,
    )
    method = Method(chosen)
    result = algorithms.run(method.value, codec, w.reshape(1, -1) if flat else w, block_size, layer_stats)
    return Fitted(result, method, note, flat)


def weight_nodes(target: WeightTarget, q: BlockQuantized, activation: str, product: str, prefix: str) -> Emitted:
    """The format's node(s) for the weight itself: GatherBlockQuantized, MatMulNBits or MatMulBnb4."""
    if target.is_embedding:
        return gather.emit(q, activation, target.output, prefix, target.dtype)
    if q.codec.is_integer:
        return matmulnbits.emit(q, activation, product, prefix, target.dtype)
    return bnb4.emit(q, target.rows, target.cols, activation, product, prefix, target.dtype)


def extra_bytes(target: WeightTarget, result: AlgorithmResult) -> int:
    """AWQ's input scale and GPTQ/AWQ's bias correction, each one vector in the weight's dtype."""
    itemsize = np.dtype(target.dtype).itemsize
    total = 0 if result.input_scale is None else int(result.input_scale.size) * itemsize
    if result.bias is not None and not target.is_embedding:
        total += int(result.bias.size) * itemsize
    return total


def stored_bytes(target: WeightTarget, result: AlgorithmResult) -> int:
    """Bytes the written model holds for this matrix: the emitters' initializers, plus its extra vectors."""
    emitted = weight_nodes(target, result.quantized, "x", "y", "edgeq_size")
    return emitted.nbytes() + extra_bytes(target, result)


def float_bytes(target: WeightTarget) -> int:
    """Bytes of the matrix kept as it is (the ``float`` candidate)."""
    return target.rows * target.cols * np.dtype(target.dtype).itemsize


def planned_bytes(target: WeightTarget, fmt: str, block_size: int) -> int:
    """Bytes of ``fmt`` from the shapes alone (what every algorithm writes, AWQ's input scale aside)."""
    if fmt == FLOAT:
        return float_bytes(target)
    codec = get_codec(fmt, True)
    rows, cols = target.rows, target.cols
    if not codec.is_integer and not target.is_embedding and bnb4.flat_layout(rows, cols, block_size):
        rows, cols = 1, rows * cols
    q = BlockQuantized(
        codec, block_size, np.zeros((rows, cols), np.uint8), np.zeros((rows, num_blocks(cols, block_size)), np.float32)
    )
    return weight_nodes(target, q, "x", "y", "edgeq_size").nbytes()
