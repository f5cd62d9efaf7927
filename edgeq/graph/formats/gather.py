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
import onnx
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


def shares_matmulnbits(bits: int, integer: bool) -> str | None:
    """Why a GatherBlockQuantized cannot read a MatMulNBits head's packed weight, or None.

    The layouts are byte-compatible: MatMulNBits ``B`` ``[N, k_blocks, blob]`` (codes low-order
    first, each row padded to whole blocks with code 0) is, flattened to ``[N, k_blocks * blob]``,
    exactly GatherBlockQuantized's uint8 data with ``bits`` for a table ``[N, k_blocks * block]``
    blocked along axis 1; scales ``[N, k_blocks]`` and zero points packed per row are the same
    tensors for both ops, and both default the zero point to 2^(bits-1). The padding columns are
    sliced off after the gather (as onnxruntime-genai's shared embeddings do).
    """
    if not integer:
        return "GatherBlockQuantized has no kernel for a non-integer codec"
    if bits not in (2, 4, 8):
        return f"GatherBlockQuantized has no {bits}-bit kernel"
    return None


def emit_shared(
    matmul: onnx.NodeProto, rows: int, cols: int, indices: str, output: str, prefix: str
) -> Emitted:
    """A lookup reading the packed weight, scales and zero points of ``matmul`` (a MatMulNBits).

    ``Reshape(B, [rows, k_blocks * blob])`` is a view of the head's one initializer; when the
    table's width ``cols`` is not a multiple of the block the gathered rows are cut back to it.
    """
    attrs = {a.name: helper.get_attribute_value(a) for a in matmul.attribute}
    bits, block = int(attrs["bits"]), int(attrs["block_size"])
    reason = shares_matmulnbits(bits, True)
    if reason:
        raise ValueError(reason)
    padded = -(-cols // block) * block
    shape_name, flat = f"{prefix}_table_shape", f"{prefix}_table"
    inits = [numpy_helper.from_array(np.array([rows, padded * bits // 8], np.int64), shape_name)]
    nodes = [helper.make_node("Reshape", [matmul.input[1], shape_name], [flat], name=f"{prefix}_table_Reshape")]
    inputs = [flat, indices, matmul.input[2]]
    if len(matmul.input) > 3 and matmul.input[3]:
        inputs.append(matmul.input[3])
    gathered = output if padded == cols else f"{prefix}_padded"
    nodes.append(helper.make_node(
        "GatherBlockQuantized", inputs, [gathered], name=f"{prefix}_GatherBlockQuantized", domain=MS_DOMAIN,
        gather_axis=0, quantize_axis=1, block_size=block, bits=bits,
    ))
    if padded != cols:
        bounds = {"starts": 0, "ends": cols, "axes": -1}
        for key, value in bounds.items():
            inits.append(numpy_helper.from_array(np.array([value], np.int64), f"{prefix}_slice_{key}"))
        nodes.append(helper.make_node(
            "Slice", [gathered, *(f"{prefix}_slice_{k}" for k in bounds)], [output], name=f"{prefix}_Slice"
        ))
    return Emitted(nodes, inits, {MS_DOMAIN: 1})
