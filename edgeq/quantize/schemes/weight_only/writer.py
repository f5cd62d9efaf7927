"""Writing one quantized weight into the graph, in the ONNX format the user chose.

MatMulNBits, MatMulBnb4, standard DequantizeLinear blocks (``qdq``) or GatherBlockQuantized for
tables, with AWQ's input scale and GPTQ/AWQ's bias correction around them.
"""

from __future__ import annotations

import onnx

from edgeq.graph.formats import Emitted, bnb4, gather, matmulnbits, qdq
from edgeq.graph.passes.weight_only import WeightOnlyRewriter, WeightTarget
from edgeq.numerics.weight_only import AlgorithmResult
from edgeq.quantize.config import OnnxFormat, WeightOnlyConfig


def emit_target(
    rewriter: WeightOnlyRewriter,
    target: WeightTarget,
    result: AlgorithmResult,
    config: WeightOnlyConfig,
    fmt: OnnxFormat,
    prefix: str,
    readers: set[int],
) -> Emitted:
    """Nodes computing the target's output from its quantized weight in format ``fmt``."""
    emitted = Emitted()
    q = result.quantized
    activation = target.activation
    if result.input_scale is not None:
        activation, scaling = rewriter.scaled_activation(target, result.input_scale, prefix, readers)
        emitted.extend(scaling)
    if target.is_embedding:
        if fmt is OnnxFormat.QDQ:
            emitted.extend(qdq.emit_gather(q, activation, target.output, prefix, target.dtype))
        else:
            emitted.extend(gather.emit(q, activation, target.output, prefix, target.dtype))
        return emitted
    output_bias = None
    if result.bias is not None:
        output_bias = rewriter.fold_output_bias(target, result.bias, prefix)
    needs_add = target.bias is not None or output_bias is not None
    product = target.output if not needs_add else rewriter.fresh(f"{prefix}_product")
    if fmt is OnnxFormat.MATMULNBITS:
        emitted.extend(matmulnbits.emit(q, activation, product, prefix, target.dtype, accuracy_level(config, target, q.codec.bits)))
    elif fmt is OnnxFormat.QDQ:
        emitted.extend(qdq.emit(q, activation, product, prefix, target.dtype))
    else:
        emitted.extend(bnb4.emit(q, target.rows, target.cols, activation, product, prefix, target.dtype))
    if target.bias is not None:
        gemm_out = target.output if output_bias is None else rewriter.fresh(f"{prefix}_gemm")
        emitted.extend(rewriter.gemm_bias(target, product, prefix, gemm_out))
        product = gemm_out
    if output_bias is not None:
        emitted.extend(output_bias)
        emitted.nodes.append(
            onnx.helper.make_node("Add", [product, output_bias.initializers[0].name], [target.output], name=rewriter.fresh(f"{prefix}_bias_correction"))
        )
    return emitted


# onnxruntime's CPU MatMulNBits has a fast 8-bit path only with int8 activations (accuracy_level
# 4, A quantized per block of K to int8); below it each call dequantizes the whole weight:
# SmolLM2's int8 LM head (49152 x 576) took a decode step from 29 ms to 249 ms on 2 threads, for
# +0.06 perplexity (benchmarks/RESULTS.md). GPU providers ignore the attribute.
HEAD_INT8_ACCURACY_LEVEL = 4


def accuracy_level(config: WeightOnlyConfig, target: WeightTarget, bits: int) -> int:
    """``--accuracy-level`` as given; 4 for an int8 LM head when none is (see HEAD_INT8_ACCURACY_LEVEL)."""
    if config.accuracy_level or not (target.lm_head and bits == 8):
        return config.accuracy_level
    return HEAD_INT8_ACCURACY_LEVEL
