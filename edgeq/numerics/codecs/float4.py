"""NF4 and FP4 with the bitsandbytes code tables, scaled by the absmax of each block.

The tables are indexed by the 4-bit code exactly as bitsandbytes (and onnxruntime's
``MatMulBnb4``) decode them; the unit tests check both against onnxruntime.
"""

from __future__ import annotations

import numpy as np

from edgeq.numerics.codecs.base import Codec

# NormalFloat4 (QLoRA): quantiles of N(0, 1) normalised to [-1, 1], with an exact zero.
NF4_TABLE = np.array(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ],
    dtype=np.float32,
)

# bitsandbytes FP4 (1 sign, 2 exponent, 1 mantissa bit; bias chosen so the largest value is
# 12, then divided by 12). Code bit 3 is the sign; 0b1000 is a negative zero.
_FP4_POSITIVE = np.array([0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0]) / 12.0
FP4_TABLE = np.concatenate([_FP4_POSITIVE, -_FP4_POSITIVE]).astype(np.float32)


def nf4_codec() -> Codec:
    return Codec(name="nf4", bits=4, symmetric=True, table=NF4_TABLE)


def fp4_codec() -> Codec:
    return Codec(name="fp4", bits=4, symmetric=True, table=FP4_TABLE)
