"""``com.microsoft.MatMulNBits``: the onnxruntime kernel for 2-, 4- and 8-bit block weights.

Layout (checked against onnxruntime 1.32): ``B`` is uint8 ``[N, k_blocks, blob]`` with codes
packed low-order first inside each block, ``scales`` ``[N, k_blocks]`` in A's type, optional
``zero_points`` packed the same way per row, ``[N, ceil(k_blocks * bits / 8)]``; without zero
points the kernel uses 2^(bits-1), which is edgeq's symmetric convention.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeq.errors import UnsupportedError
from edgeq.graph.formats import MS_DOMAIN, Emitted
from edgeq.numerics.codecs import BlockQuantized
from edgeq.numerics.codecs.packing import pack_bits

SUPPORTED_BITS = (2, 4, 8)


def check_supported(bits: int, integer: bool) -> None:
    if not integer:
        raise UnsupportedError("--format matmulnbits holds integer codes only; nf4/fp4 need --format bnb4")
    if bits not in SUPPORTED_BITS:
        raise UnsupportedError(f"MatMulNBits has no {bits}-bit kernel; use --weights int2, int4 or int8")


def packed_weight(q: BlockQuantized) -> np.ndarray:
    """``[N, k_blocks, blob]`` uint8 blobs; the partial last block is padded with code 0."""
    rows, cols = q.shape
    padded = np.zeros((rows, q.n_blocks * q.block_size), np.uint8)
    padded[:, :cols] = q.codes
    return pack_bits(padded.reshape(rows, q.n_blocks, q.block_size), q.codec.bits)


def emit(
    q: BlockQuantized,
    activation: str,
    output: str,
    prefix: str,
    scale_dtype: np.dtype,
    accuracy_level: int = 0,
    bias: str | None = None,
) -> Emitted:
    """One MatMulNBits computing ``activation @ dequantize(q).T`` (q is ``[N, K]``)."""
    check_supported(q.codec.bits, q.codec.is_integer)
    n, k = q.shape
    b_name, s_name, z_name = f"{prefix}_Q{q.codec.bits}", f"{prefix}_scales", f"{prefix}_zero_points"
    inits = [
        numpy_helper.from_array(packed_weight(q), b_name),
        numpy_helper.from_array(q.scales.astype(scale_dtype), s_name),
    ]
    inputs = [activation, b_name, s_name]
    if q.zero_points is not None:
        inits.append(numpy_helper.from_array(pack_bits(q.zero_points, q.codec.bits), z_name))
        inputs.append(z_name)
    if bias is not None:
        inputs += [""] * (5 - len(inputs)) + [bias]
    attrs: dict[str, Any] = {"K": k, "N": n, "bits": q.codec.bits, "block_size": q.block_size}
    if accuracy_level:
        attrs["accuracy_level"] = accuracy_level
    node = helper.make_node("MatMulNBits", inputs, [output], name=f"{prefix}_MatMulNBits", domain=MS_DOMAIN, **attrs)
    return Emitted([node], inits, {MS_DOMAIN: 1})


def make_bias(values: np.ndarray, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values), name)
