"""One matrix in one candidate format: the fit, and the exact bytes the written model holds for it.

Sizes come from the very emitters that write the file (GatherBlockQuantized, MatMulNBits,
MatMulBnb4), so the knapsack prices an option by what it really costs on disk: its stored
weight bytes (``--weight-budget``), or everything it puts in the file, nodes and tensor
headers included, in place of its float node (``--budget``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeq.graph.formats import Emitted, bnb4, gather, matmulnbits
from edgeq.graph.passes.weight_only import WeightTarget
from edgeq.numerics import weight_only as algorithms
from edgeq.numerics.codecs import BlockQuantized, get_codec, num_blocks
from edgeq.numerics.weight_only import AlgorithmResult, LayerStats
from edgeq.numerics.weight_only.common import data_free_fallback
from edgeq.quantize.config import Method
from edgeq.quantize.schemes.mixed.candidates import FLOAT
from edgeq.quantize.schemes.mixed.filesize import message_bytes

# (target, product, prefix) -> the Add of Gemm's bias after the quantized product.
GemmBias = Callable[[WeightTarget, str, str], Emitted]


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
    if target.shared_lookup is not None:
        refusal = gather.shares_matmulnbits(codec.bits, codec.is_integer)
        if refusal is not None:
            return f"the table is tied to {target.shared_lookup.name}, which cannot read it ({refusal})"
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
    if method is Method.AWQ and target.shared_lookup is not None:
        # AWQ scales the head's input channels: its codes would no longer be the lookup's table.
        method, note = Method.RTN, "rtn for the tied head: AWQ's input scales would not suit the lookup"
    result = algorithms.run(method.value, codec, w.reshape(1, -1) if flat else w, block_size, layer_stats)
    return Fitted(result, method, note, flat)


def weight_nodes(target: WeightTarget, q: BlockQuantized, activation: str, product: str, prefix: str) -> Emitted:
    """The format's node(s) for the weight itself: GatherBlockQuantized, MatMulNBits or MatMulBnb4."""
    if target.is_embedding:
        return gather.emit(q, activation, target.output, prefix, target.dtype)
    if q.codec.is_integer:
        return matmulnbits.emit(q, activation, product, prefix, target.dtype)
    return bnb4.emit(q, target.rows, target.cols, activation, product, prefix, target.dtype)


def replacement(
    target: WeightTarget, result: AlgorithmResult, prefix: str, fresh: Callable[[str], str], gemm_bias: GemmBias,
) -> tuple[Emitted, Emitted]:
    """Everything that replaces the target node, and the weight's own part of it.

    AWQ's input scale as a ``Mul`` before, the weight node(s), GPTQ/AWQ's bias correction and
    Gemm's own bias as ``Add`` after: the writer splices it in, the file pricing measures it.
    """
    emitted = Emitted()
    activation = target.activation
    if result.input_scale is not None:
        # This matrix's own AWQ factors (fitted alone: its neighbours may use other formats).
        scale, scaled = fresh(f"{prefix}_awq_scale"), fresh(f"{prefix}_awq_input")
        mul = helper.make_node("Mul", [activation, scale], [scaled], name=fresh(f"{prefix}_awq_Mul"))
        emitted.extend(Emitted([mul], [numpy_helper.from_array(result.input_scale.astype(target.dtype), scale)]))
        activation = scaled
    correction = None if target.is_embedding else result.bias
    has_bias = not target.is_embedding and target.bias is not None
    product = fresh(f"{prefix}_product") if has_bias or correction is not None else target.output
    weight_part = weight_nodes(target, result.quantized, activation, product, prefix)
    emitted.extend(weight_part)
    if correction is not None:
        name = fresh(f"{prefix}_bias_correction")
        corrected = fresh(f"{prefix}_corrected") if has_bias else target.output
        add = helper.make_node("Add", [product, name], [corrected], name=fresh(f"{prefix}_correction_Add"))
        emitted.extend(Emitted([add], [numpy_helper.from_array(correction.astype(target.dtype), name)]))
        product = corrected
    if has_bias:
        emitted.extend(gemm_bias(target, product, prefix))
    return emitted, weight_part


def _plain_gemm_bias(target: WeightTarget, product: str, prefix: str) -> Emitted:
    """The writer's bias ``Add`` (beta = 1), for pricing: beta != 1 adds a scaled copy in its place."""
    return Emitted([helper.make_node("Add", [product, target.bias or ""], [target.output], name=f"{prefix}_bias_Add")])


def file_bytes(target: WeightTarget, result: AlgorithmResult, original: onnx.NodeProto) -> int:
    """Bytes the file gains for this matrix in ``result``'s format: its replacement as serialized,
    less the float node it replaces (the float weight itself is outside the fixed part already)."""
    # Named as the rewriter names it: the node's own name is taken, so its NameMaker adds "_1".
    base = re.sub(r"[^A-Za-z0-9_.]+", "_", target.name).strip("_") or target.weight
    prefix = f"{base}_1" if base == target.name else base
    emitted, _ = replacement(target, result, prefix, lambda base: base, _plain_gemm_bias)
    return message_bytes(emitted.nodes) + message_bytes(emitted.initializers) - message_bytes([original])


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
