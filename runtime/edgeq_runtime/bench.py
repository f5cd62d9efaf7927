"""Latency, throughput, per-op time and energy of a Session, as a versioned JSON record.

Method (what MLPerf, Zeus and trtexec users expect):

1. power sampling starts and an idle window (``idle_s``) is recorded, the baseline for "above idle";
2. ``warmup`` iterations run (their latencies are kept in ``trace_ms`` so warm-up is visible);
3. the measured window: ``iterations`` runs, or as many as fit in ``duration`` seconds;
4. a separate profiling session gives per-op times, so the profiler never slows the timed runs.

"Per inference" means per sample: energy is divided by ``iterations × batch``, matching
``throughput_per_s`` (samples per second). A window shorter than ten sensor periods is flagged
``window_too_short``; its numbers are still the measured ones, but few readings stand behind them.
Without a sensor the energy block says ``available: false`` and why, and holds no numbers.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from edgeq_runtime import __version__
from edgeq_runtime._fileio import atomic_write_text
from edgeq_runtime.device import device_info
from edgeq_runtime.errors import BundleError
from edgeq_runtime.inputs import resolve_shapes, synthesize_inputs, validate_feeds
from edgeq_runtime.power import PowerSource, discover
from edgeq_runtime.power.sampler import PowerSampler
from edgeq_runtime.session import Session

ENERGY_CHOICES = ("auto", "none")
MIN_SENSOR_PERIODS = 10
DEFAULT_PROFILE_RUNS = 10
LATENCY_KEYS = ("min", "mean", "std", "p50", "p90", "p95", "p99", "max")


@dataclass
class EnergyResult:
    """Energy of the measured window; every number comes from a sensor reading, or is null."""

    available: bool
    reason: Optional[str] = None
    source: Optional[str] = None
    rails: List[str] = field(default_factory=list)
    sample_period_ms: Optional[float] = None
    idle_power_w: Optional[float] = None
    average_power_w: Optional[float] = None
    energy_per_inference_mj: Optional[float] = None
    energy_above_idle_per_inference_mj: Optional[float] = None
    window_s: Optional[float] = None
    window_too_short: bool = False
    trace: Dict[str, List[float]] = field(default_factory=lambda: {"t_s": [], "power_w": []})
    measured_window_s: Optional[List[float]] = None

    @classmethod
    def unavailable(cls, reason: str) -> EnergyResult:
        return cls(available=False, reason=reason)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "available": self.available,
            "reason": self.reason,
            "source": self.source,
            "rails": list(self.rails),
            "sample_period_ms": self.sample_period_ms,
            "idle_power_w": self.idle_power_w,
            "average_power_w": self.average_power_w,
            "energy_per_inference_mj": self.energy_per_inference_mj,
            "energy_above_idle_per_inference_mj": self.energy_above_idle_per_inference_mj,
            "window_s": self.window_s,
            "window_too_short": self.window_too_short,
            "trace": {"t_s": list(self.trace.get("t_s", [])), "power_w": list(self.trace.get("power_w", []))},
            "measured_window_s": list(self.measured_window_s) if self.measured_window_s is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnergyResult:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class BenchmarkResult:
    """One benchmark run; ``to_json`` is the record the report and other tools read."""

    SCHEMA = "edgeq_runtime.BenchmarkResult"
    SCHEMA_VERSION = 1

    model: str
    backend: str
    providers: List[str]
    device: Dict[str, Any]
    versions: Dict[str, Optional[str]]
    batch: int
    warmup: int
    iterations: int
    threads: Optional[int]
    latency_ms: Dict[str, float]
    throughput_per_s: float
    trace_ms: List[float]
    warmup_iterations: int
    ops: List[Dict[str, Any]]
    energy: EnergyResult

    def to_dict(self) -> Dict[str, Any]:
        return {
            "schema": self.SCHEMA,
            "schema_version": self.SCHEMA_VERSION,
            "model": self.model,
            "backend": self.backend,
            "providers": list(self.providers),
            "device": dict(self.device),
            "versions": dict(self.versions),
            "batch": self.batch,
            "warmup": self.warmup,
            "iterations": self.iterations,
            "threads": self.threads,
            "latency_ms": dict(self.latency_ms),
            "throughput_per_s": self.throughput_per_s,
            "trace_ms": list(self.trace_ms),
            "warmup_iterations": self.warmup_iterations,
            "ops": [dict(op) for op in self.ops],
            "energy": self.energy.to_dict(),
        }

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent) + "\n"

    def save(self, path: Union[str, Path]) -> Path:
        return atomic_write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, data: Any, source: str = "benchmark result") -> BenchmarkResult:
        if not isinstance(data, dict) or data.get("schema") != cls.SCHEMA:
            raise BundleError(source + ": not an " + cls.SCHEMA + " record")
        version = data.get("schema_version")
        if not isinstance(version, int) or version > cls.SCHEMA_VERSION:
            raise BundleError(source + ": " + cls.SCHEMA + " schema_version " + repr(version) + " is newer than this "
                              "edgeq-runtime reads (" + str(cls.SCHEMA_VERSION) + ")")
        fields = [f for f in cls.__dataclass_fields__ if f != "energy"]
        missing = [f for f in cls.__dataclass_fields__ if f not in data]
        if missing:
            raise BundleError(source + ": " + cls.SCHEMA + " record lacks " + ", ".join(missing))
        values = {f: data[f] for f in fields}
        return cls(energy=EnergyResult.from_dict(data["energy"]), **values)

    @classmethod
    def from_json(cls, text: str, source: str = "benchmark result") -> BenchmarkResult:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BundleError(source + ": not valid JSON (" + str(exc) + ")") from None
        return cls.from_dict(data, source)


def latency_stats(latencies_ms: List[float]) -> Dict[str, float]:
    """min/mean/std/percentiles/max; percentiles by linear interpolation (numpy's default)."""
    values = np.asarray(latencies_ms, dtype=np.float64)
    p50, p90, p95, p99 = np.percentile(values, [50, 90, 95, 99])
    return {
        "min": float(values.min()),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "p50": float(p50),
        "p90": float(p90),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(values.max()),
    }


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
) -> BenchmarkResult:
    """Measure ``session``; ``duration`` (seconds) replaces ``iterations`` when given
    (``iterations=None`` without a duration means the default 200).

    ``power_source`` overrides discovery under ``power_root`` (the caller then owns and closes it);
    ``clock`` times the power trace (latencies always use ``time.perf_counter``).
    """
    if iterations is None:
        iterations = 200
    _check_options(warmup, iterations, duration, energy, idle_s)
    run_feeds, batch_size = _prepare_feeds(session, batch, feeds, shapes)
    run = session.run_unchecked

    source: Optional[PowerSource] = None
    reason: Optional[str] = None
    owns_source = False
    if energy == "none":
        reason = "energy measurement disabled (--energy none)"
    elif power_source is not None:
        source = power_source
    else:
        source, reason = discover(power_root)
        owns_source = source is not None
    sampler = PowerSampler(source, clock=clock) if source is not None else None

    trace_ms: List[float] = []
    idle_window: Optional[List[float]] = None
    run_window: Optional[List[float]] = None
    try:
        if sampler is not None:
            sampler.start()
            if idle_s > 0:
                start = sampler.mark()
                time.sleep(idle_s)
                idle_window = [start, sampler.mark()]
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
        energy_result = _energy(sampler, source, idle_window, run_window, len(measured) * batch_size)
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


def _energy(
    sampler: PowerSampler,
    source: PowerSource,
    idle_window: Optional[List[float]],
    run_window: List[float],
    inferences: int,
) -> EnergyResult:
    if sampler.error is not None:
        return EnergyResult.unavailable("the power sensor stopped answering during the run (" + sampler.error + ")")
    t0, t1 = run_window
    window = t1 - t0
    joules = sampler.energy_between(t0, t1)
    average = joules / window if window > 0 else None
    idle_power = None
    if idle_window is not None and idle_window[1] > idle_window[0]:
        idle_power = sampler.energy_between(idle_window[0], idle_window[1]) / (idle_window[1] - idle_window[0])
    per_inference = joules * 1000.0 / inferences if inferences else None
    above_idle = None
    if idle_power is not None and inferences:
        above_idle = (joules - idle_power * window) * 1000.0 / inferences
    times, power = sampler.trace()
    return EnergyResult(
        available=True,
        reason=None,
        source=source.description,
        rails=list(source.rails),
        sample_period_ms=sampler.interval_s * 1000.0,
        idle_power_w=idle_power,
        average_power_w=average,
        energy_per_inference_mj=per_inference,
        energy_above_idle_per_inference_mj=above_idle,
        window_s=window,
        window_too_short=window < MIN_SENSOR_PERIODS * source.period_s,
        trace={"t_s": times, "power_w": power},
        measured_window_s=[t0, t1],
    )


def format_result(result: BenchmarkResult) -> str:
    """A readable summary for the terminal."""
    lines = []
    lines.append("model      " + result.model + "  [" + result.backend + ": " + ", ".join(result.providers) + "]")
    device = result.device
    where = str(device.get("jetson_model") or device.get("cpu", "")) + ", " + str(device.get("cpu_count")) + " CPUs"
    if device.get("power_mode"):
        where += ", power mode " + str(device["power_mode"])
    lines.append("device     " + str(device.get("hostname")) + " (" + where + ")")
    lines.append("runs       batch " + str(result.batch) + ", " + str(result.warmup) + " warm-up + "
                 + str(result.iterations) + " measured" + (", " + str(result.threads) + " threads" if result.threads else ""))
    lat = result.latency_ms
    lines.append("latency ms " + "  ".join(k + " " + _num(lat[k]) for k in LATENCY_KEYS))
    lines.append("throughput " + _num(result.throughput_per_s) + " inferences/s")
    energy = result.energy
    if not energy.available:
        lines.append("energy     not measured: " + str(energy.reason))
    else:
        lines.append("energy     " + str(energy.source))
        lines.append("           average " + _num(energy.average_power_w) + " W, idle " + _num(energy.idle_power_w)
                     + " W over a " + _num(energy.window_s) + " s window")
        lines.append("           " + _num(energy.energy_per_inference_mj) + " mJ/inference, "
                     + _num(energy.energy_above_idle_per_inference_mj) + " mJ/inference above idle")
        if energy.window_too_short:
            lines.append("           warning: window shorter than " + str(MIN_SENSOR_PERIODS)
                         + " sensor periods; use --duration for a trustworthy energy figure")
    if result.ops:
        lines.append("top ops    " + "name".ljust(40) + "type".ljust(20) + "total ms".rjust(10) + "count".rjust(7)
                     + "share".rjust(8))
        for op in result.ops:
            lines.append("           " + str(op["name"])[:39].ljust(40) + str(op["op_type"])[:19].ljust(20)
                         + _num(op["total_ms"]).rjust(10) + str(op["count"]).rjust(7)
                         + ("{:.1%}".format(op["share"])).rjust(8))
    return "\n".join(lines)


def _num(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return "{:.1f}".format(value)
    return "{:.3g}".format(value)
