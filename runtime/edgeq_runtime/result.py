"""The benchmark record: ``BenchmarkResult`` and its ``EnergyResult``, as versioned JSON.

This is the contract between the board and the workstation: ``edgeq report`` and other tools
read the ``to_json`` text, so every field is a plain JSON value and ``from_dict`` refuses a
record of another schema or of a newer version than this runtime knows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from edgeq_runtime._fileio import atomic_write_text
from edgeq_runtime.errors import BundleError


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
    SCHEMA_VERSION = 2  # 2: the optional ``decoder`` block (``bench_decoder``); 1 is still read

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
    decoder: Optional[Dict[str, Any]] = None  # decoder bundles: prefill, tokens/s, memory, energy per token

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
            "decoder": dict(self.decoder) if self.decoder is not None else None,
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
        fields = [f for f in cls.__dataclass_fields__ if f not in ("energy", "decoder")]
        missing = [f for f in [*fields, "energy"] if f not in data]
        if missing:
            raise BundleError(source + ": " + cls.SCHEMA + " record lacks " + ", ".join(missing))
        values = {f: data[f] for f in fields}
        decoder = data.get("decoder")
        if decoder is not None and not isinstance(decoder, dict):
            raise BundleError(source + ": decoder must be an object or null")
        return cls(energy=EnergyResult.from_dict(data["energy"]), decoder=decoder, **values)

    @classmethod
    def from_json(cls, text: str, source: str = "benchmark result") -> BenchmarkResult:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BundleError(source + ": not valid JSON (" + str(exc) + ")") from None
        return cls.from_dict(data, source)
