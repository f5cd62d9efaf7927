"""``edgeq-run bench`` on a decoder bundle: what decoder users compare, measured the same way.

Method:

1. power sampling starts and an idle window (``idle_s``) gives the baseline for "above idle";
2. **prefill**: for each prompt length, one untimed run then ``prefill_runs`` timed ones, each on
   a fresh cache with seeded random ids inside the vocabulary (its window: energy per prompt token);
3. **decode**: one greedy generation from the shortest prompt, ``warmup_tokens`` + ``tokens``
   steps, never stopping at an end token; the warm-up steps are in ``trace_ms`` but not in the
   statistics; the measured steps' window gives energy per generated token. Resident memory is
   read at tokens 64, 128, 256, ... (``rss_bytes``: flat when nothing grows with the length).

The record is a ``BenchmarkResult`` (schema version 2) whose latency, throughput and trace are
per decode step (token) and whose ``decoder`` block holds the prefill times, tokens/s, memory,
KV bytes and energy per prompt and per generated token.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgeq_runtime.device import device_info
from edgeq_runtime.energy import open_sampler, start_with_idle, window_energy
from edgeq_runtime.errors import BundleError
from edgeq_runtime.generate import GenerationRequest
from edgeq_runtime.kv_runner import make_runner
from edgeq_runtime.power import PowerSource
from edgeq_runtime.result import BenchmarkResult, EnergyResult
from edgeq_runtime.stats import latency_stats

DEFAULT_PROMPT_LENGTHS = (16, 64, 128)
RSS_CHECKPOINTS = (64, 128, 256, 512, 1024, 2048, 4096)


def resident_bytes() -> Optional[int]:
    """This process's resident memory now (Linux ``/proc/self/statm``), or None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    import resource

    return pages * resource.getpagesize()


def peak_resident_bytes() -> Optional[int]:
    """The process's peak resident memory (``getrusage``: KiB on Linux, bytes on macOS)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak if sys.platform == "darwin" else peak * 1024


def _check(session: Any, lengths: Optional[Sequence[int]], warmup: int, tokens: int,
           prefill_runs: int) -> Tuple[Any, List[int]]:
    """(the decoder spec, the prompt lengths): the defaults that fit the context, or the given ones checked."""
    spec = session.manifest.decoder if session.manifest is not None else None
    if spec is None:
        raise BundleError(session.source + ": not a decoder bundle (no decoder block in its manifest)")
    prompt_lengths = list(lengths) if lengths is not None else (
        [n for n in DEFAULT_PROMPT_LENGTHS if n < spec.context_length] or [max(1, spec.context_length // 2)])
    if not prompt_lengths or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in prompt_lengths):
        raise BundleError("--prompt-lengths must be positive token counts, got " + repr(list(prompt_lengths)))
    if warmup < 0 or tokens < 1 or prefill_runs < 1:
        raise BundleError("--warmup must be >= 0, --iterations (tokens) and --prefill-runs >= 1; got "
                          + str(warmup) + ", " + str(tokens) + ", " + str(prefill_runs))
    longest = max(prompt_lengths)
    if longest >= spec.context_length:
        raise BundleError("--prompt-lengths: " + str(longest) + " tokens do not fit the context of "
                          + str(spec.context_length) + " with a token to generate")
    need = min(prompt_lengths) + warmup + tokens
    if need > spec.context_length:
        raise BundleError("decode needs " + str(min(prompt_lengths)) + " prompt + " + str(warmup) + " warm-up + "
                          + str(tokens) + " measured tokens = " + str(need) + ", more than the context of "
                          + str(spec.context_length) + "; lower --iterations")
    return spec, sorted(set(int(n) for n in prompt_lengths))


def benchmark_decoder(
    session: Any,
    prompt_lengths: Optional[Sequence[int]] = None,
    warmup: int = 20,
    tokens: int = 200,
    prefill_runs: int = 3,
    energy: str = "auto",
    idle_s: float = 5.0,
    power_root: Union[str, Path] = "/",
    power_source: Optional[PowerSource] = None,
    seed: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> BenchmarkResult:
    """Measure a decoder bundle's ``session`` (see the module docstring for the method).

    ``prompt_lengths`` default to those of 16, 64, 128 that fit the context.
    """
    from edgeq_runtime.bench import _versions

    spec, lengths = _check(session, prompt_lengths, warmup, tokens, prefill_runs)
    rng = np.random.default_rng(seed)
    source, sampler, reason, owns_source = open_sampler(energy, power_source, power_root, clock)
    prefill: Dict[str, Dict[str, float]] = {}
    steps: List[float] = []
    rss: Dict[str, Optional[int]] = {}
    windows: Dict[str, List[float]] = {}
    idle_window: Optional[List[float]] = None
    cache_bytes = 0
    try:
        idle_window = start_with_idle(sampler, idle_s)
        prefill_start = sampler.mark() if sampler is not None else 0.0
        for length in lengths:
            times = []
            for run in range(prefill_runs + 1):  # run 0: untimed warm-up at this shape
                runner = make_runner(session.backend, spec, length + 1, session.source)
                if runner is None:
                    raise BundleError(session.source + ": decoder benchmarks need the ort backend (--backend ort)")
                ids = rng.integers(0, spec.vocab_size, size=length)
                t0 = time.perf_counter()
                runner.step(ids)
                if run:
                    times.append((time.perf_counter() - t0) * 1000.0)
            prefill[str(length)] = latency_stats(times)
        if sampler is not None:
            windows["prefill"] = [prefill_start, sampler.mark()]
        prompt = [int(i) for i in rng.integers(0, spec.vocab_size, size=lengths[0])]
        request = GenerationRequest(ids=prompt, max_new_tokens=warmup + tokens + 1, stop_ids=[])
        decode_start = 0.0
        for index, token in enumerate(session.generator().stream(request, on_done=None)):
            if index:  # token 0 comes from the prefill
                steps.append(token.ms)
            if index == warmup and sampler is not None:
                decode_start = sampler.mark()  # the measured steps start after this token
            if index in RSS_CHECKPOINTS:
                rss[str(index)] = resident_bytes()
        if sampler is not None:
            windows["decode"] = [decode_start, sampler.mark()]
        cache_bytes = spec.kv.bytes_per_token * (lengths[0] + warmup + tokens)
    finally:
        if sampler is not None:
            sampler.stop()
        if owns_source and source is not None:
            source.close()

    measured = steps[warmup:]
    prompt_tokens = sum(lengths) * prefill_runs + sum(lengths)
    if sampler is not None and source is not None and windows:
        decode_energy = window_energy(sampler, source, idle_window, windows["decode"], len(measured))
        prefill_energy = window_energy(sampler, source, idle_window, windows["prefill"], prompt_tokens)
    else:
        decode_energy = prefill_energy = EnergyResult.unavailable(reason or "no power sensor")
    wall_s = sum(measured) / 1000.0
    decoder = {
        "prompt_lengths": lengths, "prefill_runs": prefill_runs, "prefill_ms": prefill,
        "ttft_ms": {k: v["p50"] for k, v in prefill.items()},
        "decode_prompt_tokens": lengths[0], "warmup_tokens": warmup, "tokens": len(measured),
        "tokens_per_s": len(measured) / wall_s if wall_s > 0 else None,
        "peak_rss_bytes": peak_resident_bytes(), "rss_bytes": rss,
        "kv_bytes_per_token": spec.kv.bytes_per_token, "kv_bytes": cache_bytes,
        "kv_shared_buffer": spec.kv.shared_buffer,
        "energy_per_generated_token_mj": decode_energy.energy_per_inference_mj,
        "energy_above_idle_per_generated_token_mj": decode_energy.energy_above_idle_per_inference_mj,
        "energy_per_prompt_token_mj": prefill_energy.energy_per_inference_mj,
        "energy_above_idle_per_prompt_token_mj": prefill_energy.energy_above_idle_per_inference_mj,
    }
    return BenchmarkResult(
        model=session.model_name, backend=session.backend_name, providers=list(session.providers),
        device=device_info(), versions=_versions(session), batch=1, warmup=warmup, iterations=len(measured),
        threads=session.threads, latency_ms=latency_stats(measured),
        throughput_per_s=decoder["tokens_per_s"] or float("nan"), trace_ms=steps, warmup_iterations=warmup,
        ops=[], energy=decode_energy, decoder=decoder,
    )
