"""``--kv-cache int8``: calibrate one scale per KV head, then store the cache as int8.

The step runs after the weight scheme, on the quantized model, so the scales fit the keys and
values that model actually writes. A scale is each head's absolute maximum of its ``present``
keys (or values) over the calibration prompts, over 127 (symmetric, zero point 0): the same
max calibration as an activation's, observed per head with the streaming collector. Calibration
data is the ``--data`` of the quantize command: for a decoder an ``.npz`` with ``input_ids``,
``attention_mask`` (``position_ids``) and empty pasts (``[N, kv_heads, 0, head_size]``), so every
prompt position's keys and values appear in ``present``. A value beyond its head's calibrated
maximum at generation time saturates at +-127 steps.

A graph without a KV cache is refused (:func:`require_kv_cache`) before anything runs or is
written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import onnx

from edgeq.errors import ConfigError
from edgeq.graph.decoder import DecoderInfo, describe_decoder
from edgeq.graph.passes.base import to_ir
from edgeq.graph.passes.kv_cache_int8 import KV_AXIS, KVCacheInt8, cache_inputs, present_name

NEEDS_DATA = ("--kv-cache int8 needs --data (prompts: input_ids, attention_mask and empty past_key_values) "
              "to calibrate one scale per KV head")

if TYPE_CHECKING:
    from edgeq.data import DataSource


@dataclass(frozen=True)
class KVCacheResult:
    """KV bytes per token before and after, and how the scales were found."""

    bytes_before: int | None
    bytes_after: int | None
    dtype_before: str
    samples: int

    def note(self) -> str:
        before = "?" if self.bytes_before is None else f"{self.bytes_before:,}"
        after = "?" if self.bytes_after is None else f"{self.bytes_after:,}"
        return (f"KV cache int8 (was {self.dtype_before}): {before} -> {after} bytes/token, one scale per KV head "
                f"(max |present| over {self.samples} calibration samples / 127)")


def require_kv_cache(model: onnx.ModelProto, option: str = "--kv-cache int8") -> DecoderInfo:
    """The decoder facts of ``model``; a one-line ``ConfigError`` when it has no KV cache."""
    info = describe_decoder(to_ir(model))
    if info is None:
        raise ConfigError(f"{option}: the model has no KV cache (no past_key_values.N.key/value inputs "
                          f"with present.N.key/value outputs)")
    if info.kv_dtype == "int8":
        raise ConfigError(f"{option}: the model's KV cache is int8 already")
    return info


def kv_cache_int8(model: onnx.ModelProto, data: DataSource | None, progress: bool = False) -> KVCacheResult:
    """Rewrite ``model`` (in place) to an int8 KV cache with scales calibrated on ``data``."""
    from edgeq.calibrate.collector import collect
    from edgeq.calibrate.observers import ChannelMagnitudeObserver
    from edgeq.numerics.int8.weights import WEIGHT_QMAX, scale_from_amax

    before = require_kv_cache(model)
    if data is None:
        raise ConfigError(NEEDS_DATA)
    pasts = cache_inputs(to_ir(model))
    observers = {present_name(p): ChannelMagnitudeObserver(KV_AXIS) for p in pasts}
    samples = collect(model, data, {k: [v] for k, v in observers.items()}, progress=progress,
                      description="calibrating the KV cache")
    scales = {}
    for past in pasts:
        amax = observers[present_name(past)].absmax
        if amax.size == 0:
            raise ConfigError(f"{present_name(past)}: empty on every calibration sample; give prompts of at least one token")
        scales[past] = scale_from_amax(amax, WEIGHT_QMAX)
    KVCacheInt8(scales).apply(model)
    after = describe_decoder(to_ir(model))
    return KVCacheResult(before.kv_bytes_per_token, after.kv_bytes_per_token if after else None, before.kv_dtype, samples)
