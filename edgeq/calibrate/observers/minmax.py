"""Running minimum and maximum: the range that never clips a value seen in calibration."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgeq.calibrate.observers.base import Observer, as_float


class MinMaxObserver(Observer):
    """Exact min and max over every value seen (NaN ignored, counted in ``nonfinite``)."""

    def __init__(self) -> None:
        self.min = math.inf
        self.max = -math.inf
        self.count = 0
        self.nonfinite = 0

    def update(self, x: np.ndarray) -> None:
        x = as_float(x)
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            finite = x[np.isfinite(x)]
            self.nonfinite += int(x.size - finite.size)
            if finite.size == 0:
                return
            lo, hi, x = float(finite.min()), float(finite.max()), finite
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        self.count += int(x.size)

    def merge(self, other: Any) -> None:
        self._check_same_kind(other)
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.nonfinite += other.nonfinite

    @property
    def amax(self) -> float:
        """The symmetric range, max(|min|, |max|); 0 before any value is seen."""
        return max(abs(self.min), abs(self.max)) if self.count else 0.0
