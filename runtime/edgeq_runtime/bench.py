"""The timing loop: latency, throughput, per-op time and energy of a Session, as one record.

Method (what MLPerf, Zeus and trtexec users expect):

1. power sampling starts and an idle window (``idle_s``) is recorded, the baseline for "above idle";
2. ``warmup`` iterations run (their latencies are kept in ``trace_ms`` so warm-up is visible);
3. the measured window: ``iterations`` runs, or as many as fit in ``duration`` seconds;
4. a separate profiling session gives per-op times, so the profiler never slows the timed runs.

"Per inference" means per sample: energy is divided by ``iterations × batch``, matching
``throughput_per_s`` (samples per second). A window shorter than ten sensor periods is flagged
``window_too_short``; its numbers are still the measured ones, but few readings stand behind them.
Without a sensor the energy block says ``available: false`` and why, and holds no numbers.

The record types live in ``result``, the statistics in ``stats``, the energy integration in
``energy`` and the terminal text in ``summary``; their public names are re-exported here, so
``from edgeq_runtime.bench import BenchmarkResult, benchmark, format_result`` keeps working.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from edgeq_runtime import __version__
from edgeq_runtime.device import device_info
from edgeq_runtime.energy import MIN_SENSOR_PERIODS, open_sampler, start_with_idle, window_energy
from edgeq_runtime.errors import BundleError
from edgeq_runtime.inputs import resolve_shapes, synthesize_inputs, validate_feeds
from edgeq_runtime.power import PowerSource
from edgeq_runtime.result import BenchmarkResult, EnergyResult
from edgeq_runtime.session import Session
from edgeq_runtime.stats import LATENCY_KEYS, latency_stats
from edgeq_runtime.summary import format_result

__all__ = [
    "DEFAULT_PROFILE_RUNS",
    "ENERGY_CHOICES",
    "LATENCY_KEYS",
    "MIN_SENSOR_PERIODS",
    "BenchmarkResult",
    "EnergyResult",
    "benchmark",
    "format_result",
    "latency_stats",
]

ENERGY_CHOICES = ("auto", "none")
DEFAULT_PROFILE_RUNS = 10


def _package_version(name: str) -> Optional[str]:
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8 is not supported anyway
        return None
    for dist in (name, name + "-gpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _versions(session: Session) -> Dict[str, Optional[str]]:
    versions: Dict[str, Optional[str]] = {
        "edgeq_runtime": __version__,
        "onnxruntime": _package_version("onnxruntime"),
        "numpy": np.__version__,
    }
    versions.update(session.backend.versions())
    if "tensorrt" in sys.modules and "tensorrt" not in versions:
        versions["tensorrt"] = str(getattr(sys.modules["tensorrt"], "__version__", "")) or None
    return versions


def _prepare_feeds(
    session: Session,
    batch: Optional[int],
    feeds: Optional[Mapping[str, np.ndarray]],
    shapes: Optional[Mapping[str, List[int]]],
) -> Tuple[Dict[str, np.ndarray], int]:
    if feeds is not None:
        checked = validate_feeds(feeds, session.inputs, session.source)
        first = checked[session.inputs[0].name]
        feeds_batch = int(first.shape[0]) if first.ndim else 1
        if batch is not None and batch != feeds_batch:
            raise BundleError("--batch " + str(batch) + " differs from the feeds' batch " + str(feeds_batch))
        return checked, feeds_batch
    resolved = resolve_shapes(session.inputs, batch=batch, overrides=shapes)
    synthetic = validate_feeds(synthesize_inputs(session.inputs, resolved), session.inputs, session.source)
    first_shape = resolved[session.inputs[0].name]
    return synthetic, (batch if batch is not None else (int(first_shape[0]) if first_shape else 1))


def _check_options(warmup: int, iterations: int, duration: Optional[float], energy: str, idle_s: float) -> None:
    if warmup < 0:
        raise BundleError("--warmup must be 0 or more, got " + str(warmup))
    if duration is None and iterations < 1:
        raise BundleError("--iterations must be at least 1, got " + str(iterations))
    if duration is not None and not duration > 0:
        raise BundleError("--duration must be a positive number of seconds, got " + str(duration))
    if energy not in ENERGY_CHOICES:
        raise BundleError("--energy must be one of " + ", ".join(ENERGY_CHOICES) + ", got " + repr(energy))
    if not idle_s >= 0:
        raise BundleError("--idle must be 0 or more seconds, got " + str(idle_s))


def benchmark(
    session: Session,
    warmup: int = 20,
    iterations: Optional[int] = 200,
    duration: Optional[float] = None,
    batch: Optional[int] = None,
    energy: str = "auto",
    idle_s: float = 5.0,
    profile_ops: bool = True,
    top_ops: int = 10,
    feeds: Optional[Mapping[str, np.ndarray]] = None,
    shapes: Optional[Mapping[str, List[int]]] = None,
    power_root: Union[str, Path] = "/",
    power_source: Optional[PowerSource] = None,
    clock: Callable[[], float] = time.perf_counter,
    decoder_options: Optional[Mapping[str, Any]] = None,
) -> BenchmarkResult:
    """Measure ``session``; ``duration`` (seconds) replaces ``iterations`` when given
    (``iterations=None`` without a duration means the default 200).

    ``power_source`` overrides discovery under ``power_root`` (the caller then owns and closes it);
    ``clock`` times the power trace (latencies always use ``time.perf_counter``).
    A decoder bundle is measured per token instead (``bench_decoder``): ``warmup`` and
    ``iterations`` count decode steps, ``decoder_options`` holds its other settings
    (``prompt_lengths``, ``prefill_runs``).
    """
    if iterations is None:
        iterations = 200
    _check_options(warmup, iterations, duration, energy, idle_s)
    if session.manifest is not None and session.manifest.decoder is not None:
        return _benchmark_decoder(session, warmup, iterations, duration, batch, feeds, energy, idle_s, power_root,
                                  power_source, clock, decoder_options)
    run_feeds, batch_size = _prepare_feeds(session, batch, feeds, shapes)
    run = session.run_unchecked

    source, sampler, reason, owns_source = open_sampler(energy, power_source, power_root, clock)

    trace_ms: List[float] = []
    idle_window: Optional[List[float]] = None
    run_window: Optional[List[float]] = None
    try:
        idle_window = start_with_idle(sampler, idle_s)
        for _ in range(warmup):
            t0 = time.perf_counter()
            run(run_feeds)
            trace_ms.append((time.perf_counter() - t0) * 1000.0)
        measured: List[float] = []
        window_start = sampler.mark() if sampler is not None else 0.0
        wall_start = time.perf_counter()
        deadline = wall_start + duration if duration is not None else None
        while (len(measured) < iterations) if deadline is None else (not measured or time.perf_counter() < deadline):
            t0 = time.perf_counter()
            run(run_feeds)
            measured.append((time.perf_counter() - t0) * 1000.0)
        wall_s = time.perf_counter() - wall_start
        if sampler is not None:
            run_window = [window_start, sampler.mark()]
    finally:
        if sampler is not None:
            sampler.stop()
        if owns_source and source is not None:
            source.close()
    trace_ms.extend(measured)

    if sampler is not None and source is not None and run_window is not None:
        energy_result = window_energy(sampler, source, idle_window, run_window, len(measured) * batch_size)
    else:
        energy_result = EnergyResult.unavailable(reason or "no power sensor")

    ops: List[Dict[str, Any]] = []
    if profile_ops and top_ops > 0:
        timings = session.backend.profile_ops(run_feeds, runs=min(DEFAULT_PROFILE_RUNS, max(1, len(measured))))
        ops = [op.to_dict() for op in (timings or [])[:top_ops]]

    return BenchmarkResult(
        model=session.model_name,
        backend=session.backend_name,
        providers=list(session.providers),
        device=device_info(),
        versions=_versions(session),
        batch=batch_size,
        warmup=warmup,
        iterations=len(measured),
        threads=session.threads,
        latency_ms=latency_stats(measured),
        throughput_per_s=len(measured) * batch_size / wall_s if wall_s > 0 else float("nan"),
        trace_ms=trace_ms,
        warmup_iterations=warmup,
        ops=ops,
        energy=energy_result,
    )


def _benchmark_decoder(
    session: Session, warmup: int, iterations: int, duration: Optional[float], batch: Optional[int],
    feeds: Optional[Mapping[str, np.ndarray]], energy: str, idle_s: float, power_root: Union[str, Path],
    power_source: Optional[PowerSource], clock: Callable[[], float], options: Optional[Mapping[str, Any]],
) -> BenchmarkResult:
    """The per-token benchmark of a decoder bundle; options that mean nothing there are refused."""
    from edgeq_runtime.bench_decoder import benchmark_decoder

    for given, name in ((duration, "--duration"), (batch, "--batch"), (feeds, "--feeds")):
        if given is not None:
            raise BundleError(name + " does not apply to a decoder bundle (measured per token: --warmup and "
                              "--iterations count tokens, --prompt-lengths sets the prefills)")
    return benchmark_decoder(session, warmup=warmup, tokens=iterations, energy=energy, idle_s=idle_s,
                             power_root=power_root, power_source=power_source, clock=clock, **dict(options or {}))
