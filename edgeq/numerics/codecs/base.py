"""Block-wise quantization of a 2-D weight, the part every codec shares.

A weight is handled as ``[rows, cols]`` with blocks of ``block_size`` consecutive elements
along ``cols`` (the reduction axis K of a MatMul, the hidden axis of an embedding table), each
with its own scale and, for asymmetric integer codecs, an integer zero point. The last block
of a row may be partial: it is padded for the arithmetic and the padding never reaches a
statistic, a code or a packed blob.

Every codec is a codebook of levels (integers ``0..2^b-1`` or a 16-entry float table) times a
per-block scale, with the stored code being an index into the codebook::

    int:    w ~ (q - z) * s        (symmetric: z = 2^(b-1), implicit)
    table:  w ~ table[q] * s       (s = absmax of the block, bitsandbytes style)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


def num_blocks(cols: int, block_size: int) -> int:
    return -(-cols // block_size)


def to_blocks(w: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``[rows, cols]`` -> zero-padded ``[rows, n_blocks, block_size]`` and a validity mask.

    The mask (``[n_blocks, block_size]`` booleans) is None when no padding was needed.
    """
    rows, cols = w.shape
    nb = num_blocks(cols, block_size)
    pad = nb * block_size - cols
    if pad == 0:
        return w.reshape(rows, nb, block_size), None
    padded = np.zeros((rows, nb * block_size), dtype=w.dtype)
    padded[:, :cols] = w
    mask = np.zeros(nb * block_size, dtype=bool)
    mask[:cols] = True
    return padded.reshape(rows, nb, block_size), mask.reshape(nb, block_size)


def from_blocks(blocks: np.ndarray, cols: int) -> np.ndarray:
    rows = blocks.shape[0]
    return blocks.reshape(rows, -1)[:, :cols]


@dataclass(frozen=True)
class Codec:
    """One number format: its codebook and how a block's scale (and zero) are derived."""

    name: str
    bits: int
    symmetric: bool
    table: np.ndarray | None = field(default=None, compare=False)  # None for integer codecs
    # Standard DequantizeLinear consumers (TensorRT) require scale > 0; MatMulNBits takes any sign.
    positive_scales: bool = False

    @property
    def is_integer(self) -> bool:
        return self.table is None

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1

    @property
    def has_zero_point(self) -> bool:
        """Asymmetric integer codecs store a zero point per block; the others do not."""
        return self.is_integer and not self.symmetric

    @property
    def implicit_zero(self) -> int:
        """The zero point a symmetric integer code means (MatMulNBits' default, 2^(b-1))."""
        return 1 << (self.bits - 1)

    # -- parameters ---------------------------------------------------------------------
    def block_range(self, blocks: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Largest and smallest valid value of each block (``[..., block_size]`` -> ``[...]``)."""
        x = np.asarray(blocks)
        if mask is not None:
            return np.max(np.where(mask, x, -np.inf), axis=-1), np.min(np.where(mask, x, np.inf), axis=-1)
        return np.max(x, axis=-1), np.min(x, axis=-1)

    def params_from_range(
        self, hi: np.ndarray, lo: np.ndarray, ratio: float | np.ndarray = 1.0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Scale (and zero) covering ``[lo, hi]`` shrunk by ``ratio`` (clipping)."""
        hi = np.asarray(hi, np.float64)
        lo = np.asarray(lo, np.float64)
        if not self.is_integer:
            return np.maximum(np.abs(hi), np.abs(lo)) * ratio, None
        if self.symmetric and self.positive_scales:
            # Positive scales only: the negative side still gets 2^(b-1) levels, the positive
            # side 2^(b-1)-1; whichever side needs the larger step sets the scale.
            z = float(self.implicit_zero)
            scale = np.maximum(np.maximum(hi, 0.0) / (z - 1.0), np.maximum(-lo, 0.0) / z) * ratio
            return np.where(scale > 0, scale, 1.0), None
        if self.symmetric:
            # Map the largest-magnitude value onto the most negative level, -2^(b-1): the full
            # signed range is used on that side, one more level than absmax/(2^(b-1)-1) gives.
            extreme = np.where(np.abs(hi) >= np.abs(lo), hi, lo) * ratio
            return extreme / -float(self.implicit_zero), None
        hi = np.maximum(hi, 0.0) * ratio
        lo = np.minimum(lo, 0.0) * ratio
        scale = (hi - lo) / self.qmax
        safe = np.where(scale == 0, 1.0, scale)
        zero = np.clip(np.rint(-lo / safe), 0, self.qmax)
        return scale, zero

    def minmax_params(
        self, blocks: np.ndarray, mask: np.ndarray | None, ratio: float | np.ndarray = 1.0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Scale (and zero) covering each block's range shrunk by ``ratio``; the block axis is dropped."""
        hi, lo = self.block_range(blocks, mask)
        return self.params_from_range(hi, lo, ratio)

    def fake_quantize_fast(self, x: np.ndarray, scale: np.ndarray, zero: np.ndarray | None) -> np.ndarray:
        """:meth:`fake_quantize` in ``x``'s precision (float32 for searches over many candidates)."""
        if not self.is_integer:
            return self.fake_quantize(x, scale, zero).astype(x.dtype)
        stored = np.asarray(scale, np.float32).astype(x.dtype)
        inverse = np.divide(1.0, stored, out=np.zeros_like(stored), where=stored != 0)
        z = np.asarray(self.zero_or_implicit(zero), x.dtype)
        q = np.rint(x * inverse + z)
        np.clip(q, 0, self.qmax, out=q)
        q -= z
        q *= stored
        return q

    # -- codes ----------------------------------------------------------------------------
    def zero_or_implicit(self, zero: np.ndarray | float | None) -> np.ndarray | float:
        if not self.is_integer:
            return 0.0
        if zero is None:
            return float(self.implicit_zero)
        return zero

    def encode(self, x: np.ndarray, scale: np.ndarray, zero: np.ndarray | float | None) -> np.ndarray:
        """Nearest code of each element; ``scale``/``zero`` broadcast against ``x``."""
        x = np.asarray(x, np.float64)
        scale = np.asarray(scale, np.float64)
        safe = np.where(scale == 0, 1.0, scale)
        if self.is_integer:
            z = self.zero_or_implicit(zero)
            q = np.rint(x / safe + z)
            q = np.where(scale == 0, z, q)
            return np.clip(q, 0, self.qmax).astype(np.uint8)
        mids, codes_sorted = self._table_search
        u = np.where(scale == 0, 0.0, x / safe)
        return codes_sorted[np.searchsorted(mids, u)]

    @cached_property
    def _table_search(self) -> tuple[np.ndarray, np.ndarray]:
        """Decision boundaries between sorted table levels and the code of each level."""
        assert self.table is not None
        table = self.table.astype(np.float64)
        order = np.argsort(table, kind="stable")
        # Drop duplicate levels (fp4 has +0 and -0): the first code of a level wins.
        sorted_values, first = np.unique(table[order], return_index=True)
        return (sorted_values[1:] + sorted_values[:-1]) / 2, order[first].astype(np.uint8)

    def decode(self, codes: np.ndarray, scale: np.ndarray, zero: np.ndarray | float | None) -> np.ndarray:
        """Float64 values of ``codes``; ``scale``/``zero`` broadcast against ``codes``."""
        if self.is_integer:
            z = self.zero_or_implicit(zero)
            return (codes.astype(np.float64) - z) * np.asarray(scale, np.float64)
        assert self.table is not None
        return self.table.astype(np.float64)[codes] * np.asarray(scale, np.float64)

    def fake_quantize(self, x: np.ndarray, scale: np.ndarray, zero: np.ndarray | float | None) -> np.ndarray:
        return self.decode(self.encode(x, scale, zero), scale, zero)


@dataclass
class BlockQuantized:
    """A quantized ``[rows, cols]`` weight: codes, per-block scales and zero points.

    ``codes`` are unsigned (``0..2^b-1``, an index into the codec's codebook); ``zero_points``
    is None for symmetric integer codecs (zero is 2^(b-1)) and for table codecs.
    """

    codec: Codec
    block_size: int
    codes: np.ndarray  # uint8 [rows, cols]
    scales: np.ndarray  # float32 [rows, n_blocks]
    zero_points: np.ndarray | None = None  # uint8 [rows, n_blocks]

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.codes.shape
        return int(rows), int(cols)

    @property
    def n_blocks(self) -> int:
        return num_blocks(self.shape[1], self.block_size)

    def expanded(self, values: np.ndarray) -> np.ndarray:
        """Per-block ``[rows, n_blocks]`` values repeated to ``[rows, cols]``."""
        return np.repeat(values, self.block_size, axis=1)[:, : self.shape[1]]

    def dequantize(self, rows: slice | None = None) -> np.ndarray:
        """The float32 weight the formats compute with (the numpy reference for ORT).

        ``rows`` selects a slice of rows, so a large table can be checked chunk by chunk.
        """
        pick = slice(None) if rows is None else rows
        scale = self.expanded(self.scales[pick].astype(np.float32)).astype(np.float64)
        zero = None if self.zero_points is None else self.expanded(self.zero_points[pick])
        # Round the product to float32 like the kernels; the scale is stored as float32.
        return self.codec.decode(self.codes[pick], scale, zero).astype(np.float32)

    def nbytes(self) -> int:
        """Storage of codes, scales and zero points as the formats pack them."""
        rows = self.shape[0]
        total = rows * self.n_blocks * 4  # float32 scales
        total += rows * -(-(self.n_blocks * self.block_size * self.codec.bits) // 8)
        if self.zero_points is not None:
            total += rows * -(-(self.n_blocks * self.codec.bits) // 8)
        return total


def quantize_with_params(
    codec: Codec, w: np.ndarray, block_size: int, scales: np.ndarray, zeros: np.ndarray | None
) -> BlockQuantized:
    """Round ``w`` to the nearest codes under given per-block ``scales``/``zeros``."""
    blocks, _ = to_blocks(np.asarray(w, np.float64), block_size)
    scales32 = np.asarray(scales, np.float32)
    zp = None if zeros is None else np.asarray(zeros).astype(np.uint8)
    codes = codec.encode(blocks, scales32[..., None].astype(np.float64), None if zp is None else zp[..., None])
    return BlockQuantized(codec, block_size, from_blocks(codes, w.shape[1]), scales32, zp)
