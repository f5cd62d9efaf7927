"""Calibration statistics for the data-driven weight-only methods (GPTQ, AWQ).

One pass of the calibration data through the float model collects, per distinct activation
feeding a MatMul/Gemm, ``X^T X``, the mean ``x`` and the mean ``|x|`` per channel; padding tokens
(``attention_mask == 0``) are left out, since no output the user reads depends on them.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import onnx

from edgeq.calibrate.observers.base import Observer
from edgeq.graph.passes.weight_only import WeightTarget
from edgeq.numerics.hessian import GramAccumulator
from edgeq.numerics.weight_only import LayerStats
from edgeq.quantize.schemes.weight_only.padding import TrimmedPadding, is_sequence_model, mask_input


class _TokenMask(Observer):
    """The current batch's ``attention_mask`` (the collector feeds graph inputs to observers too).

    Registered first, so the statistics observers of the same batch read the mask it holds.
    """

    def __init__(self) -> None:
        self.rows: np.ndarray | None = None

    def update(self, x: np.ndarray) -> None:
        self.rows = np.asarray(x).reshape(-1) != 0

    def merge(self, other: Any) -> None:
        raise TypeError("a batch's token mask is not a statistic; there is nothing to merge")


class _LayerStatsObserver(Observer):
    """``X^T X``, mean ``x`` and mean ``|x|`` of one MatMul input over the tokens that are not padding."""

    def __init__(self, mask: _TokenMask | None) -> None:
        self.mask = mask
        self.gram = GramAccumulator()
        self.abs_sum: np.ndarray | None = None
        self.sum: np.ndarray | None = None
        self.rows = 0

    def update(self, x: np.ndarray) -> None:
        rows = np.asarray(x, np.float32).reshape(-1, np.shape(x)[-1])
        if self.mask is not None and self.mask.rows is not None and self.mask.rows.size == rows.shape[0]:
            rows = rows[self.mask.rows]
        # One batch's product in float32 (a few thousand rows), the running sum in float64.
        self.gram.add(rows)
        magnitude = np.abs(rows).sum(axis=0, dtype=np.float64)
        total = rows.sum(axis=0, dtype=np.float64)
        self.sum = total if self.sum is None else self.sum + total
        self.abs_sum = magnitude if self.abs_sum is None else self.abs_sum + magnitude
        self.rows += rows.shape[0]

    def merge(self, other: Any) -> None:
        self._check_same_kind(other)
        if other.gram.sum is None:
            return
        self.gram.merge(other.gram)
        if self.abs_sum is None or self.sum is None:
            self.abs_sum, self.sum = other.abs_sum.copy(), other.sum.copy()
        else:
            self.abs_sum += other.abs_sum
            self.sum += other.sum
        self.rows += other.rows

    def stats(self) -> LayerStats:
        if self.gram.sum is None or self.abs_sum is None or self.sum is None or self.rows == 0:
            return LayerStats()
        return LayerStats(hessian=self.gram.sum / self.rows, magnitudes=self.abs_sum / self.rows, mean=self.sum / self.rows)



def collect_layer_stats(
    model: onnx.ModelProto, targets: list[WeightTarget], data: Any, progress: bool
) -> dict[str, LayerStats]:
    """Per activation tensor: the Hessian and channel magnitudes, from one pass over ``data``."""
    from edgeq.calibrate.collector import collect

    activations = list(dict.fromkeys(t.activation for t in targets if not t.is_embedding))
    if not activations:
        return {}
    mask_name = mask_input(model)
    mask = _TokenMask() if mask_name is not None else None
    observers: dict[str, list[Observer]] = {}
    if mask_name is not None and mask is not None:
        observers[mask_name] = [mask]  # first: the other observers of a batch read it
    layer_observers = {name: _LayerStatsObserver(mask) for name in activations}
    for name, observer in layer_observers.items():
        observers.setdefault(name, []).append(observer)
    if mask_name is not None and is_sequence_model(model) and hasattr(data, "batches"):
        data = TrimmedPadding(data, mask_name)
    collect(model, data, observers, progress=progress, description="collecting X^T X")
    return {name: observer.stats() for name, observer in layer_observers.items()}


def timed_layer_stats(
    model: onnx.ModelProto, targets: list[WeightTarget], data: Any, progress: bool, notes: list[str],
    known: dict[str, LayerStats] | None = None,
) -> dict[str, LayerStats]:
    """:func:`collect_layer_stats`, with a summary note saying how long the pass took.

    ``known`` statistics (collected before on the same model and data) are used as they are; only
    the activations they lack are collected, and added to ``known``.
    """
    missing = [t for t in targets if t.is_embedding or known is None or t.activation not in known]
    if known is not None and not any(not t.is_embedding for t in missing):
        notes.append(f"calibration statistics: the {len(known)} given (collected earlier on this data)")
        return known
    started = time.perf_counter()
    stats = collect_layer_stats(model, missing, data, progress)
    notes.append(f"calibration statistics collected in {time.perf_counter() - started:.1f} s")
    if known is not None:
        known.update(stats)
        return known
    return stats
