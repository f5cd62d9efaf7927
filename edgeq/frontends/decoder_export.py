"""A causal LM with a KV cache exported to ONE ONNX graph that serves both prefill and decode.

The graph layout is the one onnxruntime-genai and optimum write, so their generation loops (and
users' own) can drive it unchanged:

* inputs ``input_ids`` [batch, sequence] int64, ``attention_mask`` [batch, past + sequence] int64,
  ``position_ids`` [batch, sequence] int64, ``past_key_values.N.key`` / ``.value``
  [batch, kv_heads, past, head_size] float32;
* outputs ``logits`` [batch, sequence, vocab] and ``present.N.key`` / ``.value``
  [batch, kv_heads, past + sequence, head_size].

Batch, sequence and past length are all dynamic: a prefill is a call with ``past = 0``, a decode
step one with ``sequence = 1`` and the previous call's presents as the past.

What a module must provide (the decoder protocol): a ``kv_cache_layout`` attribute
(``edgeq.frontends.llama.KVCacheLayout``: layers, KV heads, head size) and
``forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present)`` with past and
present flat as ``key0, value0, key1, value1, ...``. ``edgeq.frontends.llama`` (and so every
GGUF read by ``edgeq.frontends.gguf``) follows it. A module without ``kv_cache_layout`` is
refused in one line. A ``file.py:factory`` spec is exported through here when the file sets
``EDGEQ_EXPORT = {"decoder": True}``; its factory then returns the module alone.

The export is checked twice against the module, both runs in onnxruntime: once by ``to_onnx`` on
the trace inputs (a call with a past), then on a left-padded prefill with an empty past and on a
decode step fed the graph's own presents, whose shapes must be past + new.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeq.errors import ConfigError, UnsupportedError
from edgeq.frontends.llama import KVCacheLayout
from edgeq.frontends.torch_export import TorchExportResult, to_onnx
from edgeq.frontends.torch_support import import_torch

DECODER_INPUTS = ("input_ids", "attention_mask", "position_ids")
BATCH, SEQUENCE, PAST, TOTAL = "batch_size", "sequence_length", "past_sequence_length", "total_sequence_length"
#: Float32 tolerances for a decoder's logits. Deep stacks reassociate sums differently in torch and
#: onnxruntime: SmolLM2-135M's 30 layers differ by ~4e-4 on logits of magnitude ~20, which the
#: per-layer defaults of ``to_onnx`` (atol 1e-4) would call a failure.
DECODER_ATOL = 2e-3
DECODER_RTOL = 1e-3
# Trace shapes: every dynamic axis above 1 and all different, so the exporter specialises none.
_TRACE_BATCH, _TRACE_PAST, _TRACE_SEQUENCE = 2, 3, 4


def kv_cache_layout(module: Any) -> KVCacheLayout:
    """The module's declared cache layout; a module without one is refused in one line."""
    layout = getattr(module, "kv_cache_layout", None)
    if not isinstance(layout, KVCacheLayout):
        raise ConfigError(
            f"{type(module).__name__}: not a decoder with a KV cache (it has no kv_cache_layout); a decoder "
            "module sets kv_cache_layout = KVCacheLayout(...) and takes forward(input_ids, attention_mask, "
            "position_ids, *past), see edgeq.frontends.decoder_export"
        )
    return layout


def past_names(layout: KVCacheLayout) -> list[str]:
    return [f"past_key_values.{i}.{kind}" for i in range(layout.num_layers) for kind in ("key", "value")]


def present_names(layout: KVCacheLayout) -> list[str]:
    return [f"present.{i}.{kind}" for i in range(layout.num_layers) for kind in ("key", "value")]


def decoder_feeds(
    layout: KVCacheLayout, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
    past: list[np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The graph's feeds for one call: positions count the kept tokens (left padding gets 0)."""
    input_ids = np.asarray(input_ids, dtype=np.int64)
    batch, sequence = input_ids.shape
    if past is None:
        past = [np.zeros((batch, layout.num_kv_heads, 0, layout.head_size), np.float32)] * (2 * layout.num_layers)
    past_len = past[0].shape[2]
    if attention_mask is None:
        attention_mask = np.ones((batch, past_len + sequence), np.int64)
    attention_mask = np.asarray(attention_mask, dtype=np.int64)
    positions = np.maximum(np.cumsum(attention_mask, axis=1) - 1, 0)[:, past_len:]
    feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": positions}
    feeds.update(zip(past_names(layout), past, strict=True))
    return feeds


def trace_inputs(layout: KVCacheLayout, vocab_size: int, seed: int = 0) -> tuple[Any, ...]:
    """Example inputs for the trace: a call with a past, so every cache path is in the graph."""
    torch = import_torch()
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size, (_TRACE_BATCH, _TRACE_SEQUENCE))
    past = [rng.standard_normal((_TRACE_BATCH, layout.num_kv_heads, _TRACE_PAST, layout.head_size))
            .astype(np.float32) for _ in range(2 * layout.num_layers)]
    feeds = decoder_feeds(layout, ids, past=past)
    return tuple(torch.from_numpy(value) for value in feeds.values())


def _dynamic_shapes(layout: KVCacheLayout) -> tuple[Any, ...]:
    """Per ``forward`` argument; ``*past`` is one argument to torch.export, hence the nested tuple."""
    cache_axes = tuple({0: BATCH, 2: PAST} for _ in range(2 * layout.num_layers))
    return ({0: BATCH, 1: SEQUENCE}, {0: BATCH, 1: TOTAL}, {0: BATCH, 1: SEQUENCE}, cache_axes)


def vocab_size_of(module: Any) -> int:
    """``config.vocab_size`` or the input embedding's row count: the range trace token ids are drawn from."""
    config = getattr(module, "config", None)
    size = getattr(config, "vocab_size", None)
    if size is None:
        embeddings = module.get_input_embeddings() if hasattr(module, "get_input_embeddings") else None
        size = getattr(embeddings, "num_embeddings", None)
    if size is None:
        raise ConfigError(f"{type(module).__name__}: no config.vocab_size to draw trace token ids from")
    return int(size)


def _torch_run(module: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    torch = import_torch()
    with torch.no_grad():
        out = module(*(torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()))
    return [t.detach().float().numpy() for t in out]


def check_prefill_and_decode(
    model_path: str | Path | Any, module: Any, atol: float = DECODER_ATOL, rtol: float = DECODER_RTOL,
    prompt_length: int = 6,
) -> dict[str, float]:
    """Max |onnxruntime - torch| of the logits of a left-padded prefill and of a decode step after it.

    The decode step is fed the graph's own presents, and every present must be past + new long.
    Raises ``UnsupportedError`` on a disagreement beyond the tolerance.
    """
    from edgeq.graph.session import cpu_session

    layout = kv_cache_layout(module)
    session = cpu_session(model_path, purpose="the exported decoder", error=UnsupportedError)
    rng = np.random.default_rng(1)
    vocab = vocab_size_of(module)
    ids = rng.integers(0, vocab, (2, prompt_length))
    mask = np.ones_like(ids)
    mask[1, :2] = 0  # the second row is left-padded
    diffs: dict[str, float] = {}
    past: list[np.ndarray] | None = None
    for step, (step_ids, step_mask) in enumerate([(ids, mask), (rng.integers(0, vocab, (2, 1)), None)]):
        if step_mask is None:
            step_mask = np.concatenate([mask, np.ones((2, 1), np.int64)], axis=1)
        feeds = decoder_feeds(layout, step_ids, step_mask, past)
        got = session.run(None, feeds)
        expected = _torch_run(module, feeds)
        name = "prefill" if step == 0 else "decode"
        past_len = 0 if past is None else past[0].shape[2]
        for present in got[1:]:
            if present.shape[2] != past_len + step_ids.shape[1]:
                raise UnsupportedError(
                    f"{name}: a present is {present.shape[2]} long, expected past {past_len} + {step_ids.shape[1]}"
                )
        diffs[f"{name}.logits"] = float(np.max(np.abs(got[0].astype(np.float64) - expected[0])))
        diffs[f"{name}.present"] = max(float(np.max(np.abs(g - e))) for g, e in zip(got[1:], expected[1:], strict=True))
        if not np.allclose(got[0], expected[0], atol=atol, rtol=rtol):
            raise UnsupportedError(
                f"the exported decoder's {name} logits differ from the module's by {diffs[f'{name}.logits']:.3g} "
                f"(tolerance atol={atol:g}, rtol={rtol:g})"
            )
        past = list(got[1:])
    return diffs


def decoder_to_onnx(
    module: Any,
    output_path: str | Path | None = None,
    opset: int | None = None,
    atol: float = DECODER_ATOL,
    rtol: float = DECODER_RTOL,
) -> TorchExportResult:
    """Export a decoder (see the module docstring) to the KV-cache layout and check it.

    ``output_max_abs_diff`` holds the trace check per output plus ``prefill.logits``,
    ``decode.logits`` (and their presents) from ``check_prefill_and_decode``.
    """
    torch = import_torch()
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    layout = kv_cache_layout(module)
    inputs = trace_inputs(layout, vocab_size_of(module))
    result = to_onnx(
        module, inputs, output_path=output_path,
        input_names=[*DECODER_INPUTS, *past_names(layout)],
        output_names=["logits", *present_names(layout)],
        dynamic_shapes=_dynamic_shapes(layout), opset=opset, atol=atol, rtol=rtol,
    )
    target = result.path if result.path is not None else result.model
    diffs = check_prefill_and_decode(target, module, atol=atol, rtol=rtol)
    result.output_max_abs_diff.update(diffs)
    result.max_abs_diff = max(result.output_max_abs_diff.values())
    return result
