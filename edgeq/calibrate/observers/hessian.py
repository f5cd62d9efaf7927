"""The input second moment X^T X per weight: the Hessian of GPTQ's layer-wise objective.

For a linear layer y = x W, the squared output error of a weight perturbation is
``dW^T (X^T X) dW``, so GPTQ needs only this K x K matrix, never the activations themselves;
it is accumulated batch by batch in float64 (float32 sums over millions of rows lose the
small eigenvalues GPTQ's Cholesky step depends on).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeq.calibrate.observers.base import Observer, as_float
from edgeq.calibrate.observers.channel import rows_by_channel


class HessianObserver(Observer):
    """Running sum of X^T X over rows (channel axis last, other axes flattened)."""

    def __init__(self, channel_axis: int = -1) -> None:
        self.channel_axis = channel_axis
        self.sum: np.ndarray | None = None
        self.rows = 0

    def update(self, x: np.ndarray) -> None:
        rows = rows_by_channel(as_float(x), self.channel_axis).astype(np.float64)
        if rows.shape[0] == 0:
            return
        gram = rows.T @ rows
        if self.sum is None:
            self.sum = gram
        else:
            if gram.shape != self.sum.shape:
                raise ValueError(f"channel count changed from {self.sum.shape[0]} to {gram.shape[0]} between batches")
            self.sum += gram
        self.rows += rows.shape[0]

    def merge(self, other: Any) -> None:
        self._check_same_kind(other)
        if other.sum is None:
            return
        self.sum = other.sum.copy() if self.sum is None else self.sum + other.sum
        self.rows += other.rows

    @property
    def hessian(self) -> np.ndarray:
        """X^T X / rows (the mean over rows), float64, K x K."""
        if self.sum is None:
            return np.zeros((0, 0))
        return self.sum / max(self.rows, 1)
