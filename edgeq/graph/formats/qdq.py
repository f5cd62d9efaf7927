"""Standard ONNX: a blocked ``DequantizeLinear`` on the integer weight feeding ``MatMul`` / ``Gather``.

INT4/UINT4 (and INT8/UINT8) blocks need opset 21, INT2/UINT2 opset 25. Symmetric codes are
stored signed without a zero point; asymmetric codes unsigned with one. onnxruntime 1.32 runs
all of them, but its fusion of ``DequantizeLinear(INT2/UINT2) -> MatMul`` into MatMulNBits
computes wrong results unless N is a multiple of 4 and K a multiple of the block size
(measured on every small shape), so the other 2-bit MatMuls are refused.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeq.errors import UnsupportedError
from edgeq.graph.formats import Emitted
from edgeq.numerics.codecs import BlockQuantized
from edgeq.numerics.codecs.packing import pack_bits

_TYPES = {
    (2, True): TensorProto.INT2,
    (2, False): TensorProto.UINT2,
    (4, True): TensorProto.INT4,
    (4, False): TensorProto.UINT4,
    (8, True): TensorProto.INT8,
    (8, False): TensorProto.UINT8,
}


def required_opset(bits: int) -> int:
    return 25 if bits == 2 else 21


def check_supported(bits: int, integer: bool) -> None:
    if not integer:
        raise UnsupportedError("--format qdq holds integer codes only; nf4/fp4 need --format bnb4")


def check_matmul(q: BlockQuantized) -> str | None:
    """Why this MatMul cannot be written as DQ -> MatMul, or None when it can."""
    return check_matmul_shape(q.codec.bits, q.shape[0], q.shape[1], q.block_size)


def check_matmul_shape(bits: int, n: int, k: int, block_size: int) -> str | None:
    """:func:`check_matmul` from the shape alone, before anything is quantized."""
    if bits == 2 and (k % block_size or n % 4):
        return (
            f"N={n}, K={k}: onnxruntime 1.32 computes 2-bit DequantizeLinear->MatMul wrongly unless N % 4 == 0 "
            f"and K % block ({block_size}) == 0; use --format matmulnbits"
        )
    return None


def integer_tensor(codes: np.ndarray, bits: int, signed: bool, name: str) -> onnx.TensorProto:
    """An INT*/UINT* initializer from unsigned codes (signed ones shifted by 2^(bits-1))."""
    data_type = _TYPES[(bits, signed)]
    dims = list(codes.shape)
    if signed:
        values = codes.astype(np.int16) - (1 << (bits - 1))
    else:
        values = codes.astype(np.int16)
    if bits == 8:
        return numpy_helper.from_array(values.astype(np.int8 if signed else np.uint8), name)
    raw = pack_bits((values & ((1 << bits) - 1)).astype(np.uint8).reshape(-1), bits)
    return helper.make_tensor(name, data_type, dims, raw.tobytes(), raw=True)


def dequantize_nodes(
    q: BlockQuantized, prefix: str, scale_dtype: np.dtype, axis: int, transpose: bool
) -> tuple[Emitted, str]:
    """``DequantizeLinear`` of ``q`` (``[rows, cols]`` blocked along cols), optionally transposed.

    ``transpose`` stores the codes as ``[cols, rows]`` (a MatMul weight ``[K, N]``), blocked
    along axis 0; otherwise as ``[rows, cols]`` blocked along axis 1 (an embedding table).
    """
    signed = q.zero_points is None
    codes = q.codes.T if transpose else q.codes
    scales = q.scales.T if transpose else q.scales
    w_name, s_name, z_name, out = f"{prefix}_q", f"{prefix}_scale", f"{prefix}_zero_point", f"{prefix}_dq"
    inits = [
        integer_tensor(np.ascontiguousarray(codes), q.codec.bits, signed, w_name),
        numpy_helper.from_array(np.ascontiguousarray(scales).astype(scale_dtype), s_name),
    ]
    inputs = [w_name, s_name]
    if q.zero_points is not None:
        zp = q.zero_points.T if transpose else q.zero_points
        inits.append(integer_tensor(np.ascontiguousarray(zp), q.codec.bits, False, z_name))
        inputs.append(z_name)
    node = helper.make_node(
        "DequantizeLinear", inputs, [out], name=f"{prefix}_DequantizeLinear", axis=axis, block_size=q.block_size
    )
    return Emitted([node], inits, {"": required_opset(q.codec.bits)}), out


def emit(q: BlockQuantized, activation: str, output: str, prefix: str, scale_dtype: np.dtype) -> Emitted:
    """``activation @ DequantizeLinear(W_q)`` with ``W_q`` stored ``[K, N]`` (q is ``[N, K]``)."""
    check_supported(q.codec.bits, q.codec.is_integer)
    reason = check_matmul(q)
    if reason:
        raise UnsupportedError(reason)
    emitted, weight = dequantize_nodes(q, prefix, scale_dtype, axis=0, transpose=True)
    emitted.nodes.append(helper.make_node("MatMul", [activation, weight], [output], name=f"{prefix}_MatMul"))
    return emitted


def emit_gather(q: BlockQuantized, indices: str, output: str, prefix: str, scale_dtype: np.dtype, axis: int = 0) -> Emitted:
    """``Gather(DequantizeLinear(table_q), indices)`` for an embedding table ``[V, D]`` (q is ``[V, D]``)."""
    check_supported(q.codec.bits, q.codec.is_integer)
    emitted, table = dequantize_nodes(q, prefix, scale_dtype, axis=1, transpose=False)
    emitted.nodes.append(helper.make_node("Gather", [table, indices], [output], name=f"{prefix}_Gather", axis=axis))
    return emitted


def matrix_view(w: np.ndarray, axis: int, per_channel: bool) -> np.ndarray:
    """``w`` of any rank as the ``[rows, cols]`` matrix the codecs quantize, for :func:`dequantize_weight`.

    ``per_channel``: one row per index of ``axis`` (a conv's output channels), the rest flattened
    into the row. Otherwise blocks run along ``axis`` (an LSTM's input dimension, a MatMul's K):
    ``axis`` becomes the columns and every other index a row.
    """
    if per_channel:
        moved = np.moveaxis(w, axis, 0)
        return np.ascontiguousarray(moved.reshape(moved.shape[0], -1))
    moved = np.moveaxis(w, axis, -1)
    return np.ascontiguousarray(moved.reshape(-1, moved.shape[-1]))


def _stored(values: np.ndarray, shape: tuple[int, ...], axis: int, per_channel: bool, scales: bool) -> np.ndarray:
    """The inverse of :func:`matrix_view`: codes back to ``shape``, scales to what DequantizeLinear reads."""
    if per_channel:
        if scales:
            return np.ascontiguousarray(values.reshape(shape[axis]))
        moved = (shape[axis], *shape[:axis], *shape[axis + 1:])
        return np.ascontiguousarray(np.moveaxis(values.reshape(moved), 0, axis))
    moved = (*shape[:axis], *shape[axis + 1:], values.shape[-1])
    return np.ascontiguousarray(np.moveaxis(values.reshape(moved), -1, axis))


def dequantize_weight(
    q: BlockQuantized, shape: tuple[int, ...], axis: int, per_channel: bool, prefix: str, scale_dtype: np.dtype
) -> tuple[Emitted, str]:
    """A ``DequantizeLinear`` giving back a weight of ``shape`` from ``q`` (its :func:`matrix_view`).

    Per-channel: 1-D scales along ``axis`` (int8 from opset 13, int4 from 21). Blocked: scales
    of the weight's rank with ``ceil(shape[axis] / block)`` along ``axis`` (opset 21). The
    consumer node is untouched: it reads the dequantized tensor where it read the float one.
    """
    signed = q.zero_points is None
    codes = _stored(q.codes, shape, axis, per_channel, scales=False)
    scales = _stored(q.scales, shape, axis, per_channel, scales=True)
    w_name, s_name, z_name, out = f"{prefix}_q", f"{prefix}_scale", f"{prefix}_zero_point", f"{prefix}_dq"
    inits = [
        integer_tensor(codes, q.codec.bits, signed, w_name),
        numpy_helper.from_array(scales.astype(scale_dtype), s_name),
    ]
    inputs = [w_name, s_name]
    if q.zero_points is not None:
        inits.append(integer_tensor(_stored(q.zero_points, shape, axis, per_channel, scales=True), q.codec.bits, False, z_name))
        inputs.append(z_name)
    node = helper.make_node("DequantizeLinear", inputs, [out], name=f"{prefix}_DequantizeLinear", axis=axis)
    if not per_channel:
        node.attribute.append(helper.make_attribute("block_size", q.block_size))
    opset = 13 if per_channel and q.codec.bits == 8 else required_opset(q.codec.bits)
    return Emitted([node], inits, {"": opset}), out
