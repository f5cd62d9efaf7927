"""A fixed-size histogram of |x| whose range only ever doubles.

The range is always a power of two, ``2**exponent``, and bin ``k`` holds |x| in
``[k, k+1) * 2**exponent / bins``. Scaling by a power of two is exact in floating point, so
a bin index is computed without rounding, and widening the range ``2**k``-fold merges
exactly ``2**k`` old bins into one new bin. The result: the histogram does not depend on how
the data was split into batches or in which order they came, and merging two histograms
gives exactly the histogram of the union. The price is that the data fills between half and
all of the bins.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from edgeq.calibrate import thresholds
from edgeq.calibrate.observers.base import Observer, as_float
from edgeq.errors import ConfigError

METHODS = ("minmax", "percentile", "entropy", "mse")
# Smallest range: an all-zero tensor still gets a histogram (everything in bin 0).
MIN_EXPONENT = -100
# Values binned per step: small enough for the scratch buffers to stay in cache and never be
# a second copy of a batch's activations, large enough that per-call overhead is negligible.
CHUNK = 1 << 18
_scratch = threading.local()


def _buffers(dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    key = f"buffers_{dtype.str}"
    buffers = getattr(_scratch, key, None)
    if buffers is None:
        buffers = (np.empty(CHUNK, dtype=dtype), np.empty(CHUNK, dtype=np.int32))
        setattr(_scratch, key, buffers)
    return buffers


def _exponent_for(amax: float) -> int:
    """Smallest e with amax < 2**e (strictly, so |x| = amax still falls inside the last bin)."""
    if amax <= 0:
        return MIN_EXPONENT
    return max(math.frexp(amax)[1], MIN_EXPONENT)


def _rebin(counts: np.ndarray, shift: int) -> np.ndarray:
    """Counts of a histogram with 2**shift times the range (same number of bins)."""
    bins = counts.size
    if shift <= 0:
        return counts.copy()
    out = np.zeros_like(counts)
    if (1 << min(shift, 62)) >= bins:
        out[0] = counts.sum()
        return out
    group = 1 << shift
    out[: bins // group] = counts.reshape(bins // group, group).sum(axis=1)
    return out


class HistogramObserver(Observer):
    """Histogram of |x| with ``bins`` bins (a power of two, at least 128), plus the exact min/max."""

    def __init__(self, bins: int = 2048) -> None:
        if bins < thresholds.ENTROPY_QUANTIZED_BINS or bins & (bins - 1):
            raise ConfigError(f"histogram bins: {bins} is not a power of two >= {thresholds.ENTROPY_QUANTIZED_BINS}")
        self.bins = bins
        self.counts = np.zeros(bins, dtype=np.int64)
        self.exponent: int | None = None
        self.min = math.inf
        self.max = -math.inf
        self.count = 0
        self.nonfinite = 0

    @property
    def range(self) -> float:
        return 0.0 if self.exponent is None else math.ldexp(1.0, self.exponent)

    @property
    def bin_width(self) -> float:
        return self.range / self.bins

    @property
    def amax(self) -> float:
        return max(abs(self.min), abs(self.max)) if self.count else 0.0

    def edges(self) -> np.ndarray:
        return np.arange(self.bins + 1, dtype=np.float64) * self.bin_width

    def _grow_to(self, exponent: int) -> None:
        if self.exponent is None:
            self.exponent = exponent
        elif exponent > self.exponent:
            self.counts = _rebin(self.counts, exponent - self.exponent)
            self.exponent = exponent

    def update(self, x: np.ndarray) -> None:
        x = as_float(x)
        if x.size == 0:
            return
        flat = x.reshape(-1)
        scaled_buffer, index_buffer = _buffers(x.dtype)
        # One pass over memory: each chunk's min/max is taken while it is in cache, and the
        # range grows (exactly, by merging bins) before the chunk that needs it is binned.
        for start in range(0, flat.size, CHUNK):
            part = flat[start : start + CHUNK]
            lo, hi = float(part.min()), float(part.max())
            if not (math.isfinite(lo) and math.isfinite(hi)):
                finite = part[np.isfinite(part)]
                self.nonfinite += int(part.size - finite.size)
                if finite.size == 0:
                    continue
                part, lo, hi = finite, float(finite.min()), float(finite.max())
            self.min, self.max = min(self.min, lo), max(self.max, hi)
            self.count += int(part.size)
            self._grow_to(_exponent_for(max(-lo, hi)))
            assert self.exponent is not None
            scale = x.dtype.type(math.ldexp(float(self.bins), -self.exponent))
            scaled, index = scaled_buffer[: part.size], index_buffer[: part.size]
            np.abs(part, out=scaled)
            np.multiply(scaled, scale, out=scaled)  # exact: scale is a power of two
            index[...] = scaled  # truncation is floor for |x| >= 0; int32 casts far faster than intp
            counts = np.bincount(index, minlength=self.bins)
            if counts.size > self.bins:  # unreachable while |x| < range; keep every value regardless
                counts[self.bins - 1] += counts[self.bins :].sum()
                counts = counts[: self.bins]
            self.counts += counts

    def merge(self, other: Any) -> None:
        self._check_same_kind(other)
        if other.bins != self.bins:
            raise ValueError(f"cannot merge a {other.bins}-bin histogram into a {self.bins}-bin one")
        if other.exponent is None:
            return
        self._grow_to(other.exponent)
        assert self.exponent is not None
        self.counts += _rebin(other.counts, self.exponent - other.exponent)
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)
        self.count += other.count
        self.nonfinite += other.nonfinite

    def threshold(self, method: str, percentile: float = 99.99) -> float:
        """amax under ``method``; never above the largest |x| actually seen."""
        if method not in METHODS:
            raise ConfigError(f"--method: unknown value {method!r}; expected one of {', '.join(METHODS)}")
        if self.count == 0:
            return 0.0
        if method == "minmax":
            return self.amax
        if method == "percentile":
            if not 0 < percentile <= 100:
                raise ConfigError(f"--percentile: {percentile} is not in (0, 100]")
            value = thresholds.percentile_threshold(self.counts, self.bin_width, percentile)
        elif method == "entropy":
            value = thresholds.entropy_threshold(self.counts, self.bin_width)
        else:
            value = thresholds.mse_threshold(self.counts, self.bin_width)
        return min(value, self.amax)

    def thresholds(self, percentile: float = 99.99) -> dict[str, float]:
        return {method: self.threshold(method, percentile) for method in METHODS}
