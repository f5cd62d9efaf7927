"""Bit packing of small unsigned codes into bytes.

Two layouts exist in the formats edgeq writes, and both are tables of shifts (the HQQ way):

* low-order first along the last axis (MatMulNBits blobs and zero points, GatherBlockQuantized
  uint8 data, ONNX INT4/UINT4/INT2/UINT2 tensors): element ``j`` of a byte sits at bit ``bits*j``;
* high nibble first over a flat array (bitsandbytes, hence ``MatMulBnb4``).

Both round-trip exactly for any length, including lengths that do not fill the last byte.
"""

from __future__ import annotations

import numpy as np

SUPPORTED_BITS = (2, 4, 8)


def _check_bits(bits: int) -> int:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bit width {bits} is not one of {SUPPORTED_BITS}")
    return 8 // bits


def packed_length(count: int, bits: int) -> int:
    """Bytes needed for ``count`` codes of ``bits`` bits."""
    per_byte = _check_bits(bits)
    return -(-count // per_byte)


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned codes along the last axis, low-order bits first; pads the tail with zeros."""
    per_byte = _check_bits(bits)
    codes = np.asarray(codes)
    if codes.size and (codes.min() < 0 or codes.max() >= (1 << bits)):
        raise ValueError(f"codes out of range for {bits}-bit packing")
    length = codes.shape[-1]
    pad = (-length) % per_byte
    if pad:
        codes = np.concatenate([codes, np.zeros((*codes.shape[:-1], pad), codes.dtype)], axis=-1)
    grouped = codes.astype(np.uint8).reshape(*codes.shape[:-1], -1, per_byte)
    packed = np.zeros(grouped.shape[:-1], np.uint8)
    for j in range(per_byte):
        packed |= (grouped[..., j] << np.uint8(bits * j)).astype(np.uint8)
    return packed


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``count`` codes along the last axis."""
    per_byte = _check_bits(bits)
    packed = np.asarray(packed, np.uint8)
    mask = np.uint8((1 << bits) - 1)
    parts = [(packed >> np.uint8(bits * j)) & mask for j in range(per_byte)]
    codes = np.stack(parts, axis=-1).reshape(*packed.shape[:-1], -1)
    return codes[..., :count]


def pack_nibbles_high_first(codes: np.ndarray) -> np.ndarray:
    """Pack a flat array of 4-bit codes two per byte, first code in the high nibble (bitsandbytes)."""
    flat = np.asarray(codes).reshape(-1).astype(np.uint8)
    if flat.size and flat.max() > 15:
        raise ValueError("codes out of range for 4-bit packing")
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return ((flat[0::2] << np.uint8(4)) | flat[1::2]).astype(np.uint8)


def unpack_nibbles_high_first(packed: np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`pack_nibbles_high_first`."""
    flat = np.asarray(packed, np.uint8).reshape(-1)
    codes = np.stack([flat >> np.uint8(4), flat & np.uint8(15)], axis=-1).reshape(-1)
    return codes[:count]
