"""Padding tokens: which input is the mask, and calibration batches with padding columns cut.

Tokenized calibration sets are padded to a fixed length; positions masked out for every sample
of a batch change no unmasked output of an attention model, so running them is waste.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx


def mask_input(model: onnx.ModelProto) -> str | None:
    """The ``[batch, seq]`` graph input named like a mask (``attention_mask``), if there is one."""
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim if value.type.HasField("tensor_type") else []
        if "mask" in value.name.lower() and len(dims) == 2:
            return value.name
    return None


def is_sequence_model(model: onnx.ModelProto) -> bool:
    """Every fed input is ``[batch, seq]`` with a dynamic ``seq``: padding columns can be cut."""
    initializers = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim if value.type.HasField("tensor_type") else []
        if len(dims) != 2 or dims[1].HasField("dim_value"):
            return False
    return True


def padding_ends(mask: np.ndarray) -> np.ndarray:
    """Per ``[batch, seq]`` mask row, one past its last real token (1 for a row of padding only)."""
    real = np.asarray(mask).astype(bool)
    return np.where(real.any(axis=1), real.shape[1] - np.argmax(real[:, ::-1], axis=1), 1)


def trimmed_batches(
    feeds: dict[str, np.ndarray], mask_name: str, size: int, order: np.ndarray | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """``feeds`` (all samples) regrouped ``size`` rows at a time, each batch cut after its last real token.

    Rows go in ``order``, by default by where their tokens end, so sentences of similar length
    share a batch and little padding is left in any of them.
    """
    ends = padding_ends(feeds[mask_name])
    if order is None:
        order = np.argsort(ends, kind="stable")
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        width = int(ends[rows].max())
        yield {name: np.ascontiguousarray(value[rows, :width]) for name, value in feeds.items()}


class TrimmedPadding:
    """The calibration source with each batch's all-padding tail columns cut off.

    Tokenized calibration sets are padded to a fixed length (MiniLM's: 81% padding); positions
    masked out for every sample of a batch change no unmasked output of an attention model, and
    the statistics ignore them anyway, so running them is pure waste. Applied only when every
    model input is ``[batch, seq]`` with a dynamic ``seq`` and one of them is the mask.
    """

    def __init__(self, data: Any, mask_name: str) -> None:
        self.data = data
        self.mask_name = mask_name
        self.num_samples = data.num_samples

    def batches(self, batch_size: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        # Token ids are small (MiniLM's 512 samples: 1.5 MB): hold them, and batch sentences of
        # similar length together so little padding is left in any batch.
        parts = list(self.data.batches(batch_size))
        if not parts:
            return
        size = len(next(iter(parts[0].values())))
        feeds = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        yield from trimmed_batches(feeds, self.mask_name, size)

    def batch_samples(self, feeds: dict[str, np.ndarray]) -> int:
        return int(self.data.batch_samples(feeds))
