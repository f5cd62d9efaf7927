"""``com.microsoft.MatMulBnb4``: NF4 / FP4 weights the bitsandbytes way.

The weight is stored transposed (``[N, K]``, PyTorch's Linear layout), flattened, and quantized
in blocks of ``block_size`` consecutive elements of that flat array with one float absmax each;
codes are packed two per byte, the first in the high nibble (checked against onnxruntime 1.32).
When K is not a multiple of the block size the flat blocks straddle rows, so the caller
quantizes the weight as one flat row then (``flat_layout``).
"""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from edgeq.errors import UnsupportedError
from edgeq.graph.formats import MS_DOMAIN, Emitted
from edgeq.numerics.codecs import BlockQuantized
from edgeq.numerics.codecs.packing import pack_nibbles_high_first

QUANT_TYPE = {"fp4": 0, "nf4": 1}


def check_supported(codec_name: str) -> None:
    if codec_name not in QUANT_TYPE:
        raise UnsupportedError(f"--format bnb4 holds nf4 or fp4 codes, not {codec_name}; use --format matmulnbits or qdq")


def flat_layout(n: int, k: int, block_size: int) -> bool:
    """True when the blocks of the flat ``[N*K]`` weight do not line up with rows of K."""
    return k % block_size != 0


def emit(q: BlockQuantized, n: int, k: int, activation: str, output: str, prefix: str, scale_dtype: np.dtype) -> Emitted:
    """``activation @ W`` with ``W^T`` = dequantize(q); q is ``[N, K]`` or the flat ``[1, N*K]``."""
    check_supported(q.codec.name)
    if q.codes.size != n * k:
        raise ValueError(f"{prefix}: {q.codes.size} codes for a {k}x{n} weight")
    b_name, a_name = f"{prefix}_Bnb4", f"{prefix}_absmax"
    inits = [
        numpy_helper.from_array(pack_nibbles_high_first(q.codes.reshape(-1)), b_name),
        numpy_helper.from_array(q.scales.reshape(-1).astype(scale_dtype), a_name),
    ]
    node = helper.make_node(
        "MatMulBnb4",
        [activation, b_name, a_name],
        [output],
        name=f"{prefix}_MatMulBnb4",
        domain=MS_DOMAIN,
        K=k,
        N=n,
        block_size=q.block_size,
        quant_type=QUANT_TYPE[q.codec.name],
    )
    return Emitted([node], inits, {MS_DOMAIN: 1})
