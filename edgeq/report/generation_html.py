"""The decoder part of a profile section: prefill by prompt length, tokens/s, memory, energy per token.

A decoder bundle's benchmark (``edgeq_runtime.bench_decoder``) is per token: the profile's latency
block already shows every decode step in order (the per-token latency trace) and the power trace
of the decode window; this block adds what only a decoder has.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeq.report import plots
from edgeq.report.formatting import fmt_ms, fmt_number
from edgeq.report.markup import definition_list, esc, figure, tile


def _mb(value: Any) -> str:
    return fmt_number(value / 1e6, 1, "MB") if isinstance(value, (int, float)) else "not measured"


def token_times(bench: dict[str, Any]) -> list[float] | None:
    """When each measured token ended, on the power sensor's clock: the decode window's start plus
    the running sum of the measured steps (a decoder benchmark's window opens as they begin)."""
    window = bench["energy"].get("measured_window_s")
    if not bench.get("decoder") or not window:
        return None
    steps = np.asarray(bench["trace_ms"][bench["warmup_iterations"]:], dtype=np.float64)
    return [float(window[0] + t) for t in np.cumsum(steps) / 1000.0]


def decoder_tiles(decoder: dict[str, Any]) -> str:
    """Headline numbers: time to first token, tokens/s, KV bytes, energy per generated token."""
    ttft = decoder.get("ttft_ms") or {}
    shortest = min(ttft, key=int) if ttft else None
    tiles = [
        tile(f"time to first token, {shortest} tokens" if shortest else "time to first token",
             fmt_ms(ttft.get(shortest)) if shortest else "n/a", "ms"),
        tile("decode", fmt_number(decoder.get("tokens_per_s"), 1), "tokens/s"),
        tile("KV cache", _mb(decoder.get("kv_bytes"))),
    ]
    energy = decoder.get("energy_per_generated_token_mj")
    if energy is not None:
        tiles.append(tile("energy per generated token", fmt_number(energy, 2), "mJ"))
    return f'<div class="tiles">{"".join(tiles)}</div>'


def decoder_block(decoder: dict[str, Any], pid: str) -> str:
    """Prefill against prompt length (plot), memory over the generation and energy per token."""
    prefill = decoder.get("prefill_ms") or {}
    rss = decoder.get("rss_bytes") or {}
    rows = [
        ("decode", esc(f"{decoder.get('tokens')} measured tokens after {decoder.get('warmup_tokens')} warm-up, "
                       f"from a {decoder.get('decode_prompt_tokens')}-token prompt")),
        ("KV cache", esc(f"{_mb(decoder.get('kv_bytes'))} at the end ({decoder.get('kv_bytes_per_token'):,} B/token"
                         + (", one preallocated buffer" if decoder.get("kv_shared_buffer") else "") + ")")),
        ("peak resident memory", esc(_mb(decoder.get("peak_rss_bytes")))),
        ("resident memory by token", esc(", ".join(f"{k}: {_mb(v)}" for k, v in rss.items()) or "not measured")),
    ]
    for key, label in (("energy_per_generated_token_mj", "energy per generated token"),
                       ("energy_above_idle_per_generated_token_mj", "  above idle"),
                       ("energy_per_prompt_token_mj", "energy per prompt token"),
                       ("energy_above_idle_per_prompt_token_mj", "  above idle ")):
        if decoder.get(key) is not None:
            rows.append((label.strip(), esc(fmt_number(decoder[key], 3, "mJ"))))
    fig = ""
    if prefill:
        fig = figure(plots.prefill_by_length(f"{pid}-prefill", prefill), f"{pid}-prefill",
                     f"<strong>Prefill against prompt length</strong>: p50 of {decoder.get('prefill_runs')} runs "
                     "per length on a fresh cache (whiskers: min–max), and the time per prompt token.")
    return f'<h3>Generation</h3><div class="plots">{fig}<div>{definition_list(rows)}</div></div>'
