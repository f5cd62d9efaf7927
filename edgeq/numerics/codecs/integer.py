"""Block-wise integer codecs: int2, int4, int8, symmetric or with a zero point per block."""

from __future__ import annotations

from edgeq.numerics.codecs.base import Codec


def integer_codec(bits: int, symmetric: bool, positive_scales: bool = False) -> Codec:
    if bits not in (2, 4, 8):
        raise ValueError(f"integer codecs have 2, 4 or 8 bits, not {bits}")
    return Codec(name=f"int{bits}", bits=bits, symmetric=symmetric, positive_scales=positive_scales)
