"""The input second moment X^T X per weight (the Hessian of GPTQ's layer-wise objective), as an observer.

The arithmetic is :class:`edgeq.numerics.hessian.GramAccumulator` (float64 running sum); this
class only adapts it to the collector: tensors in any layout, the channel axis chosen.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeq.calibrate.observers.base import Observer, as_float
from edgeq.calibrate.observers.channel import rows_by_channel
from edgeq.numerics.hessian import GramAccumulator


class HessianObserver(Observer):
    """Running sum of X^T X over rows (channel axis last, other axes flattened)."""

    def __init__(self, channel_axis: int = -1) -> None:
        self.channel_axis = channel_axis
        self.accumulator = GramAccumulator()

    @property
    def sum(self) -> np.ndarray | None:
        return self.accumulator.sum

    @property
    def rows(self) -> int:
        return self.accumulator.rows

    def update(self, x: np.ndarray) -> None:
        rows = rows_by_channel(as_float(x), self.channel_axis).astype(np.float64)
        if rows.shape[0] == 0:
            return
        self.accumulator.add(rows)

    def merge(self, other: Any) -> None:
        self._check_same_kind(other)
        self.accumulator.merge(other.accumulator)

    @property
    def hessian(self) -> np.ndarray:
        """X^T X / rows (the mean over rows), float64, K x K."""
        return self.accumulator.mean()
