"""Number formats for weights: quantize, dequantize and pack, in pure numpy.

``get_codec("int4", symmetric=False)`` returns the :class:`Codec` for a ``--weights`` value;
:mod:`edgeq.numerics.codecs.packing` turns codes into the byte layouts the ONNX formats need.
"""

from __future__ import annotations

from edgeq.numerics.codecs.base import (
    BlockQuantized,
    Codec,
    from_blocks,
    num_blocks,
    quantize_with_params,
    to_blocks,
)
from edgeq.numerics.codecs.float4 import FP4_TABLE, NF4_TABLE, fp4_codec, nf4_codec
from edgeq.numerics.codecs.integer import integer_codec

__all__ = [
    "FP4_TABLE",
    "NF4_TABLE",
    "BlockQuantized",
    "Codec",
    "from_blocks",
    "get_codec",
    "num_blocks",
    "quantize_with_params",
    "to_blocks",
]


def get_codec(weights: str, symmetric: bool = True, positive_scales: bool = False) -> Codec:
    """The codec for ``weights`` (``int2``, ``int4``, ``int8``, ``nf4``, ``fp4``).

    ``positive_scales`` keeps every symmetric integer scale above zero, as standard
    DequantizeLinear consumers such as TensorRT require.
    """
    name = getattr(weights, "value", weights)
    if name == "nf4":
        return nf4_codec()
    if name == "fp4":
        return fp4_codec()
    if name in ("int2", "int4", "int8"):
        return integer_codec(int(name[3:]), symmetric, positive_scales)
    raise ValueError(f"unknown weight format {weights!r}")
