"""What every observer is: a running statistic over the values of one tensor.

Observers see one batch at a time and must give the same answer however the data is split
into batches, and when two observers are merged (statistics gathered in two processes or two
passes), so a calibration run never has to hold more than one batch of activations.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Observer:
    """Base class: ``update`` with each batch of a tensor, ``merge`` another observer of the same kind."""

    def update(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def merge(self, other: Any) -> None:
        raise NotImplementedError

    def _check_same_kind(self, other: Any) -> None:
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")


def as_float(x: np.ndarray) -> np.ndarray:
    """Activations as float32 or float64 (float16/bfloat16 tensors are widened, never narrowed)."""
    x = np.asarray(x)
    if x.dtype == np.float32 or x.dtype == np.float64:
        return x
    return x.astype(np.float32)
