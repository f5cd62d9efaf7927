"""Per-channel activation magnitude: what AWQ and SmoothQuant scale weights by."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeq.calibrate.observers.base import Observer, as_float


def rows_by_channel(x: np.ndarray, channel_axis: int) -> np.ndarray:
    """``x`` as (rows, channels): the channel axis moved last, every other axis flattened."""
    x = np.asarray(x)
    axis = channel_axis if channel_axis >= 0 else x.ndim + channel_axis
    if not 0 <= axis < x.ndim:
        raise ValueError(f"channel axis {channel_axis} is out of range for a tensor of rank {x.ndim}")
    return np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])


class ChannelMagnitudeObserver(Observer):
    """max |x| and mean |x| per channel, accumulated in float64."""

    def __init__(self, channel_axis: int) -> None:
        self.channel_axis = channel_axis
        self.abs_max: np.ndarray | None = None
        self.abs_sum: np.ndarray | None = None
        self.rows = 0

    def update(self, x: np.ndarray) -> None:
        rows = rows_by_channel(as_float(x), self.channel_axis)
        if rows.shape[0] == 0:
            return
        magnitude = np.abs(rows)
        batch_max = magnitude.max(axis=0).astype(np.float64)
        batch_sum = magnitude.sum(axis=0, dtype=np.float64)
        if self.abs_max is None or self.abs_sum is None:
            self.abs_max, self.abs_sum = batch_max, batch_sum
        else:
            if batch_max.shape != self.abs_max.shape:
                raise ValueError(f"channel count changed from {self.abs_max.size} to {batch_max.size} between batches")
            np.maximum(self.abs_max, batch_max, out=self.abs_max)
            self.abs_sum += batch_sum
        self.rows += rows.shape[0]

    def merge(self, other: Any) -> None:
        self._check_same_kind(other)
        if other.abs_max is None:
            return
        if self.abs_max is None or self.abs_sum is None:
            self.abs_max, self.abs_sum = other.abs_max.copy(), other.abs_sum.copy()
        else:
            np.maximum(self.abs_max, other.abs_max, out=self.abs_max)
            self.abs_sum += other.abs_sum
        self.rows += other.rows

    @property
    def absmax(self) -> np.ndarray:
        return np.zeros(0) if self.abs_max is None else self.abs_max

    @property
    def absmean(self) -> np.ndarray:
        return np.zeros(0) if self.abs_sum is None else self.abs_sum / max(self.rows, 1)
