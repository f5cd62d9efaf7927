"""Token text as the feeds of a KV-cache decoder's prefill, for calibration.

A decoder sees text through one graph for prefill and decode: ``input_ids``, usually
``attention_mask`` and ``position_ids``, and one ``past`` input per layer and key/value. The
prefill of a whole sequence with an empty cache is the pass that shows every MatMul the
activations it meets in use (each token's hidden state goes through every layer once), so
GPTQ, AWQ and the KV-cache scales calibrate on it: the ids are the text's windows, the mask is
all ones, the positions count from 0, and each past is an empty ``[batch, heads, 0, head_size]``
tensor of the input's own dtype (int8 too, for a graph whose cache is already int8).

This reads only the input list (names, dtypes, shapes), not the graph: it sits below the graph
layer, and a decoder's inputs say all it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edgeq.data.arrays import MappedRows, MemoryArray, RowArray
from edgeq.data.source import InputSpec
from edgeq.errors import DataError

IDS, MASK, POSITIONS = "input_ids", "attention_mask", "position_ids"
TOKEN_INPUTS = (IDS, MASK, POSITIONS)


def cache_inputs(specs: Sequence[InputSpec]) -> list[InputSpec]:
    """The past-cache inputs: every input besides ids, mask and positions, when the model has ids."""
    names = {s.name for s in specs}
    if IDS not in names:
        return []
    return [s for s in specs if s.name not in TOKEN_INPUTS and not s.optional]


def is_decoder_inputs(specs: Sequence[InputSpec]) -> bool:
    """``input_ids`` plus at least one input of a ``[batch, heads, past, head_size]`` cache."""
    caches = cache_inputs(specs)
    return bool(caches) and all(_cache_dims(s) is not None for s in caches)


def _cache_dims(spec: InputSpec) -> tuple[int, int] | None:
    """(heads, head_size) of a cache input laid out [batch, heads, past, head_size], else None."""
    if len(spec.shape) != 4:
        return None
    _, heads, past, head_size = spec.shape
    if not isinstance(heads, int) or not isinstance(head_size, int) or isinstance(past, int):
        return None
    return heads, head_size


def prefill_arrays(sequences: np.ndarray, specs: Sequence[InputSpec], origin: str) -> dict[str, RowArray]:
    """Feeds for prefilling each row of ``sequences`` [N, T] from an empty cache."""
    by_name = {s.name: s for s in specs}
    if not is_decoder_inputs(specs):
        expected = ", ".join(f"'{s.name}' {s.describe()}" for s in specs)
        raise DataError(
            f"{origin}: token data feeds a KV-cache decoder (input_ids, attention_mask, position_ids, "
            f"past [batch, heads, past, head_size] inputs); this model's inputs are {expected}"
        )
    count, length = sequences.shape
    ids = sequences.astype(by_name[IDS].dtype, copy=False)
    arrays: dict[str, RowArray] = {IDS: MemoryArray(ids, f"{origin}:{IDS}")}
    for name, row in ((MASK, np.ones(length)), (POSITIONS, np.arange(length))):
        if name in by_name:
            spec = by_name[name]
            arrays[name] = MappedRows(count, row.shape, spec.dtype, _same_row(row.astype(spec.dtype)), f"{origin}:{name}")
    for spec in cache_inputs(specs):
        dims = _cache_dims(spec)
        assert dims is not None  # checked by is_decoder_inputs
        empty = np.zeros((dims[0], 0, dims[1]), spec.dtype)
        arrays[spec.name] = MappedRows(count, empty.shape, spec.dtype, _same_row(empty), f"{origin}:{spec.name}")
    return arrays


def _same_row(row: np.ndarray) -> Callable[[int], np.ndarray]:
    """A row maker returning ``row`` for every index (masks, positions, empty caches)."""
    return lambda _index: row
