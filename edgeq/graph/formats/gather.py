"""``com.microsoft.GatherBlockQuantized``: an embedding table kept quantized by onnxruntime.

The table ``[V, D]`` is blocked along D (quantize_axis 1) and gathered along V. Measured on
onnxruntime 1.32: INT4/UINT4 data works for any D; uint8 data with ``bits`` 2 or 4 pads the
output to a whole byte when D is not a multiple of the codes per byte (a wrong shape), so 2-bit
tables need D % 4 == 0. Symmetric 4-bit tables are stored INT4 (zero point 0), asymmetric
UINT4 with UINT4 zero points; 2- and 8-bit tables are uint8 with the default zero point 2^(b-1)
or packed uint8 zero points.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper, numpy_helper

from edgeq.graph.formats import MS_DOMAIN, Emitted
from edgeq.graph.formats.qdq import integer_tensor
from edgeq.numerics.codecs import BlockQuantized
from edgeq.numerics.codecs.packing import pack_bits


def check_table(q: BlockQuantized) -> str | None:
    """Why onnxruntime cannot gather from this table, or None."""
    return check_table_shape(q.codec.name, q.codec.bits, q.codec.is_integer, q.shape[1])


def check_table_shape(name: str, bits: int, integer: bool, width: int) -> str | None:
    """:func:`check_table` from the codec and width alone, before anything is quantized."""
    if not integer:
        return f"GatherBlockQuantized has no {name} kernel"
    if bits == 2 and width % 4:
        return f"2-bit GatherBlockQuantized needs the embedding width ({width}) to be a multiple of 4; use --format qdq"
    return None


def emit(q: BlockQuantized, indices: str, output: str, prefix: str, scale_dtype: np.dtype) -> Emitted:
    reason = check_table(q)
    if reason:
        raise ValueError(reason)
    bits = q.codec.bits
    d_name, s_name, z_name = f"{prefix}_qdata", f"{prefix}_scales", f"{prefix}_zero_points"
    attrs: dict[str, Any] = {"gather_axis": 0, "quantize_axis": 1, "block_size": q.block_size}
    if bits == 4:
        signed = q.zero_points is None
        inits = [integer_tensor(q.codes, 4, signed, d_name)]
        zp = None if signed else integer_tensor(q.zero_points, 4, False, z_name)  # type: ignore[arg-type]
    else:
        attrs["bits"] = bits
        inits = [numpy_helper.from_array(pack_bits(q.codes, bits), d_name)]
        zp = None if q.zero_points is None else numpy_helper.from_array(pack_bits(q.zero_points, bits), z_name)
    inits.append(numpy_helper.from_array(q.scales.astype(scale_dtype), s_name))
    inputs = [d_name, indices, s_name]
    if zp is not None:
        inits.append(zp)
        inputs.append(z_name)
    node = helper.make_node(
        "GatherBlockQuantized", inputs, [output], name=f"{prefix}_GatherBlockQuantized", domain=MS_DOMAIN, **attrs
    )
    return Emitted([node], inits, {MS_DOMAIN: 1})
