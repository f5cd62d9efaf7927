"""FP8 (E4M3FN) and FP4 (E2M1) as TensorRT and ONNX define them: the float64 reference codecs.

Both are OCP micro-scaling element types, symmetric and scaled by multiplication, exactly what
``QuantizeLinear``/``DequantizeLinear`` compute for FLOAT8E4M3FN (opset 19) and FLOAT4E2M1
(opset 23): ``q = saturate(round_to_nearest_even(x / scale))``, ``x ~ decode(q) * scale``.

- E4M3FN: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities, code 0x7F is NaN;
  largest 448. FP8 W8A8 uses ``scale = amax / 448`` (TensorRT's FP8 recipe, ModelOpt's too).
- E2M1: 1 sign, 2 exponent (bias 1), 1 mantissa bit: {0, 0.5, 1, 1.5, 2, 3, 4, 6}. NVFP4 (NVIDIA's
  Blackwell format) stores blocks of 16 such values with one E4M3 scale per block and one float32
  scale per tensor (``scale2 = amax / (6 * 448)``), so a block scale ``amax_b / 6`` divided by
  ``scale2`` fits E4M3's range. Not bitsandbytes' FP4 (``--weights fp4``), which has other levels.

Codes are the raw bit patterns (uint8), so they can be packed or handed to onnx as they are.
Rounding is ties-to-even on the code, which is the mantissa's last bit, as IEEE casts do.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

E4M3_MAX = 448.0
E2M1_MAX = 6.0
NVFP4_BLOCK = 16


@dataclass(frozen=True)
class MiniFloat:
    """A sign-magnitude float type with ``exponent`` and ``mantissa`` bits and no infinities."""

    name: str
    exponent: int
    mantissa: int
    bias: int
    nan_code: int | None  # the one magnitude code that is NaN (E4M3FN: 0x7F), None when none

    @property
    def bits(self) -> int:
        return 1 + self.exponent + self.mantissa

    @cached_property
    def magnitudes(self) -> np.ndarray:
        """float64 value of every non-negative code ``0 .. 2^(bits-1) - 1`` (NaN at ``nan_code``)."""
        codes = np.arange(1 << (self.bits - 1))
        exp, man = codes >> self.mantissa, codes & ((1 << self.mantissa) - 1)
        frac = man / float(1 << self.mantissa)
        values = np.where(exp == 0, frac * 2.0 ** (1 - self.bias), (1.0 + frac) * 2.0 ** (exp - self.bias))
        if self.nan_code is not None:
            values[self.nan_code] = np.nan
        return values

    @property
    def max(self) -> float:
        return float(np.nanmax(self.magnitudes))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """float64 values of ``codes`` (bit patterns, sign in the top bit)."""
        codes = np.asarray(codes).astype(np.int64)
        sign_bit = 1 << (self.bits - 1)
        magnitude = self.magnitudes[codes & (sign_bit - 1)]
        return np.where(codes & sign_bit, -magnitude, magnitude)

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Bit patterns of ``values`` rounded to nearest (ties to even), saturated at ``±max``; NaN stays NaN."""
        x = np.asarray(values, np.float64)
        finite = self.magnitudes[: self.nan_code] if self.nan_code is not None else self.magnitudes
        magnitude = np.minimum(np.abs(np.nan_to_num(x, nan=0.0)), finite[-1])
        upper = np.clip(np.searchsorted(finite, magnitude, side="left"), 0, len(finite) - 1)
        lower = np.maximum(upper - 1, 0)
        d_low, d_up = magnitude - finite[lower], finite[upper] - magnitude
        choose_up = (d_up < d_low) | ((d_up == d_low) & (upper % 2 == 0))
        code = np.where(choose_up, upper, lower).astype(np.int64)
        sign = np.signbit(x) & (code > 0)
        out = code | np.where(sign, 1 << (self.bits - 1), 0)
        if self.nan_code is not None:
            out = np.where(np.isnan(x), self.nan_code, out)
        return out.astype(np.uint8)


E4M3 = MiniFloat("float8e4m3fn", exponent=4, mantissa=3, bias=7, nan_code=0x7F)
E2M1 = MiniFloat("float4e2m1", exponent=2, mantissa=1, bias=1, nan_code=None)


def fp8_scale(amax: np.ndarray | float) -> np.ndarray:
    """``amax / 448`` as float32 (1 where amax is 0: a tensor of zeros quantizes to zeros either way)."""
    amax = np.asarray(amax, np.float64)
    return np.where(amax > 0, amax / E4M3_MAX, 1.0).astype(np.float32)


def fp8_quantize(x: np.ndarray, scale: np.ndarray, axis: int | None = None) -> np.ndarray:
    """E4M3 codes of ``x / scale`` (``scale`` per-tensor, or per slice along ``axis``)."""
    s = np.asarray(scale, np.float64)
    if axis is not None and s.ndim == 1:
        s = s.reshape([-1 if i == axis % x.ndim else 1 for i in range(x.ndim)])
    return E4M3.encode(np.asarray(x, np.float64) / s)


@dataclass
class NvFp4:
    """A ``[rows, cols]`` weight in NVFP4: E2M1 ``codes``, E4M3 ``block_scales`` ``[rows, cols/16]``, float32 ``scale2``."""

    codes: np.ndarray  # uint8 E2M1 bit patterns, [rows, cols]
    block_scales: np.ndarray  # uint8 E4M3 bit patterns, [rows, cols // 16]
    scale2: float

    def dequantize(self) -> np.ndarray:
        """float64 ``e2m1(codes) * e4m3(block_scales) * scale2``, the two-level DequantizeLinear."""
        block = E4M3.decode(self.block_scales) * np.float64(np.float32(self.scale2))
        return E2M1.decode(self.codes) * np.repeat(block, NVFP4_BLOCK, axis=1)


def nvfp4_quantize(w: np.ndarray) -> NvFp4:
    """NVFP4 of ``w`` ``[rows, cols]`` (cols a multiple of 16), blocks along cols.

    ``scale2 = amax / (6 * 448)`` (float32); each block's scale ``amax_b / 6 / scale2`` rounded to
    E4M3 (at least its smallest subnormal); values divided by the *rounded* block scale, so the
    codes fit what is stored.
    """
    w = np.asarray(w, np.float64)
    rows, cols = w.shape
    if cols % NVFP4_BLOCK:
        raise ValueError(f"NVFP4 blocks are {NVFP4_BLOCK} values: {cols} columns is not a multiple")
    amax = float(np.max(np.abs(w))) if w.size else 0.0
    scale2 = float(np.float32(amax / (E2M1_MAX * E4M3_MAX))) if amax > 0 else 1.0
    blocks = w.reshape(rows, cols // NVFP4_BLOCK, NVFP4_BLOCK)
    block_amax = np.max(np.abs(blocks), axis=2)
    # A block of zeros (or one too small for E4M3) gets the smallest positive scale, not 0:
    # DequantizeLinear consumers such as TensorRT require positive scales; its codes are 0 anyway.
    block_scales = np.maximum(E4M3.encode(block_amax / E2M1_MAX / scale2), 1).astype(np.uint8)
    stored = (E4M3.decode(block_scales) * scale2)[:, :, None]
    codes = E2M1.encode(blocks / stored)
    return NvFp4(codes.reshape(rows, cols), block_scales, scale2)
