"""Turn benchmark and comparison results into plain, validated dicts.

Results arrive as objects (``BenchmarkResult`` from the runtime, ``CompareResult`` from
``edgeq.evaluate``), as their ``to_dict()`` forms, or as JSON loaded back from disk. The report
renders all of them the same way, so everything is normalised here once, and a malformed input
fails with one line naming the missing field instead of a ``KeyError`` deep in the template.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from edgeq.errors import ConfigError

BENCHMARK_SCHEMA = "edgeq_runtime.BenchmarkResult"
BENCHMARK_VERSION = 2  # 2: the optional decoder block (per-token benchmarks of decoder bundles)
COMPARE_TYPE = "edgeq.CompareResult"
COMPARE_VERSION = 1
DECODER_COMPARE_TYPE = "edgeq.DecoderCompareResult"
DECODER_COMPARE_VERSION = 1
DECODER_INT_KEYS = ("sequences", "scored_tokens", "chunk", "prompts", "prompt_tokens", "new_tokens")

LATENCY_KEYS = ("min", "mean", "std", "p50", "p90", "p95", "p99", "max")


def as_plain(obj: Any) -> Any:
    """The dict form of a result object (anything with ``to_dict``), or the object itself."""
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict) and not isinstance(obj, dict):
        return to_dict()
    return obj


def finite_or_none(value: Any) -> float | None:
    """A float for a real number, ``None`` for missing, NaN or infinite values."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def sanitize_json(value: Any) -> Any:
    """Replace NaN/inf by ``None`` so the JSON is standard (strict parsers reject ``Infinity``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): sanitize_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize_json(v) for v in value]
    if hasattr(value, "item") and hasattr(value, "dtype"):  # numpy scalar
        return sanitize_json(value.item())
    if hasattr(value, "tolist"):
        return sanitize_json(value.tolist())
    return value


def _require(mapping: dict[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise ConfigError(f"{where}: missing field {key!r}")
    return mapping[key]


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{where}: expected a number, found {type(value).__name__}")
    return float(value)


def _numbers(values: Any, where: str) -> list[float]:
    if hasattr(values, "tolist") and not isinstance(values, (list, tuple)):  # numpy array
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise ConfigError(f"{where}: expected a list of numbers, found {type(values).__name__}")
    return [_number(v, where) for v in values]


def _unwrap(obj: dict[str, Any], expected_type: str, version: int, where: str) -> dict[str, Any]:
    """Strip a ``{_type, _version, _data}`` envelope, refusing other types and newer versions."""
    if "_type" not in obj:
        return obj
    if obj["_type"] != expected_type:
        raise ConfigError(f"{where}: expected a {expected_type} document, found {obj['_type']!r}")
    found = obj.get("_version", 0)
    if not isinstance(found, int) or found > version:
        raise ConfigError(
            f"{where}: {expected_type} schema version {found} is newer than this edgeq understands "
            f"({version}); upgrade edgeq"
        )
    data = obj.get("_data")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {expected_type} document has no _data object")
    return data


def _unavailable_energy(reason: str) -> dict[str, Any]:
    return {
        "available": False,
        "reason": reason,
        "source": None,
        "rails": [],
        "sample_period_ms": None,
        "idle_power_w": None,
        "average_power_w": None,
        "energy_per_inference_mj": None,
        "energy_above_idle_per_inference_mj": None,
        "window_s": None,
        "window_too_short": False,
        "trace": {"t_s": [], "power_w": []},
        "measured_window_s": None,
    }


def normalize_benchmark(result: Any, where: str = "benchmark result") -> dict[str, Any]:
    """A runtime ``BenchmarkResult`` (object or dict) as a validated dict with every field present."""
    raw = as_plain(result)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a BenchmarkResult or its dict, found {type(raw).__name__}")
    raw = _unwrap(raw, BENCHMARK_SCHEMA, BENCHMARK_VERSION, where)
    schema = raw.get("schema", BENCHMARK_SCHEMA)
    if schema != BENCHMARK_SCHEMA:
        raise ConfigError(f"{where}: expected schema {BENCHMARK_SCHEMA!r}, found {schema!r}")
    version = raw.get("schema_version", BENCHMARK_VERSION)
    if not isinstance(version, int) or version > BENCHMARK_VERSION:
        raise ConfigError(
            f"{where}: {BENCHMARK_SCHEMA} schema version {version} is newer than this edgeq "
            f"understands ({BENCHMARK_VERSION}); upgrade edgeq"
        )
    out = dict(raw)
    out["schema"] = BENCHMARK_SCHEMA
    out["schema_version"] = version
    out["model"] = str(_require(raw, "model", where))
    latency = _require(raw, "latency_ms", where)
    if not isinstance(latency, dict):
        raise ConfigError(f"{where}: latency_ms must be an object with {', '.join(LATENCY_KEYS)}")
    for key in ("p50", "mean"):
        _require(latency, key, f"{where}: latency_ms")
    out["latency_ms"] = {k: finite_or_none(latency.get(k)) for k in LATENCY_KEYS}
    out["trace_ms"] = _numbers(raw.get("trace_ms", []), f"{where}: trace_ms")
    warmup_iterations = raw.get("warmup_iterations", 0)
    if isinstance(warmup_iterations, bool) or not isinstance(warmup_iterations, int) or warmup_iterations < 0:
        raise ConfigError(f"{where}: warmup_iterations must be a non-negative integer")
    out["warmup_iterations"] = min(warmup_iterations, len(out["trace_ms"]))
    for key in ("batch", "warmup", "iterations"):
        value = raw.get(key)
        out[key] = int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    out["threads"] = raw.get("threads")
    out["backend"] = str(raw.get("backend") or "unknown")
    out["providers"] = [str(p) for p in raw.get("providers") or []]
    device = raw.get("device") or {}
    versions = raw.get("versions") or {}
    if not isinstance(device, dict) or not isinstance(versions, dict):
        raise ConfigError(f"{where}: device and versions must be objects")
    out["device"] = device
    out["versions"] = versions
    out["throughput_per_s"] = finite_or_none(raw.get("throughput_per_s"))

    ops = raw.get("ops") or []
    if not isinstance(ops, list):
        raise ConfigError(f"{where}: ops must be a list")
    clean_ops = []
    for i, op in enumerate(ops):
        if not isinstance(op, dict):
            raise ConfigError(f"{where}: ops[{i}] must be an object")
        total = _number(_require(op, "total_ms", f"{where}: ops[{i}]"), f"{where}: ops[{i}].total_ms")
        clean_ops.append(
            {
                "name": str(op.get("name", "")),
                "op_type": str(op.get("op_type", "")),
                "total_ms": total,
                "count": int(op.get("count") or 0),
                "share": finite_or_none(op.get("share")),
            }
        )
    out["ops"] = sorted(clean_ops, key=lambda op: -op["total_ms"])

    decoder = raw.get("decoder")
    if decoder is not None and not (isinstance(decoder, dict) and isinstance(decoder.get("prefill_ms", {}), dict)):
        raise ConfigError(f"{where}: decoder must be an object with prefill_ms per prompt length")
    out["decoder"] = decoder
    energy = raw.get("energy")
    if energy is None:
        out["energy"] = _unavailable_energy("not measured: the benchmark result has no energy section")
    elif not isinstance(energy, dict):
        raise ConfigError(f"{where}: energy must be an object")
    else:
        out["energy"] = _normalize_energy(energy, where)
    return out


def _normalize_energy(energy: dict[str, Any], where: str) -> dict[str, Any]:
    clean = _unavailable_energy(str(energy.get("reason") or "not measured (no reason given)"))
    clean.update({k: v for k, v in energy.items() if k not in clean or v is not None})
    clean["available"] = bool(energy.get("available"))
    clean["window_too_short"] = bool(energy.get("window_too_short"))
    for key in (
        "sample_period_ms",
        "idle_power_w",
        "average_power_w",
        "energy_per_inference_mj",
        "energy_above_idle_per_inference_mj",
        "window_s",
    ):
        clean[key] = finite_or_none(energy.get(key))
    trace = energy.get("trace") or {}
    if not isinstance(trace, dict):
        raise ConfigError(f"{where}: energy.trace must be an object with t_s and power_w")
    t_s = _numbers(trace.get("t_s", []), f"{where}: energy.trace.t_s")
    power_w = _numbers(trace.get("power_w", []), f"{where}: energy.trace.power_w")
    if len(t_s) != len(power_w):
        raise ConfigError(
            f"{where}: energy.trace has {len(t_s)} times but {len(power_w)} power readings"
        )
    clean["trace"] = {"t_s": t_s, "power_w": power_w}
    window = energy.get("measured_window_s")
    if window is not None:
        window = _numbers(window, f"{where}: energy.measured_window_s")
        if len(window) != 2:
            raise ConfigError(f"{where}: energy.measured_window_s must be [start, end]")
    clean["measured_window_s"] = window
    clean["rails"] = [str(r) for r in energy.get("rails") or []]
    if clean["available"]:
        clean["reason"] = energy.get("reason")
    elif not clean["reason"]:
        clean["reason"] = "not measured (no reason given)"
    return clean


VARIANT_LATENCY_KEYS = ("p50", "mean", "p90", "p99")


def _normalize_latency(value: Any, where: str) -> dict[str, float | None] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: latency must be an object with p50/mean/p90/p99 or null")
    clean = {k: finite_or_none(value.get(k)) for k in VARIANT_LATENCY_KEYS}
    return clean if any(v is not None for v in clean.values()) else None


def normalize_compare(result: Any, where: str = "compare result") -> dict[str, Any]:
    """A ``CompareResult`` (object, envelope or bare data dict) as a validated data dict."""
    raw = as_plain(result)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a CompareResult or its dict, found {type(raw).__name__}")
    data = _unwrap(raw, COMPARE_TYPE, COMPARE_VERSION, where)
    out = dict(data)
    out["reference"] = str(_require(data, "reference", where))
    out["data"] = str(data.get("data") or "")
    out["samples"] = int(data.get("samples") or 0)
    task = str(data.get("task") or "generic")
    out["task"] = task if task in ("classification", "embedding", "generic") else "generic"
    out["reference_latency_ms"] = _normalize_latency(data.get("reference_latency_ms"), f"{where}: reference_latency_ms")
    out["reference_file_bytes"] = int(data.get("reference_file_bytes") or 0)
    for key in ("reference_energy_mj",):
        if key in data:
            out[key] = finite_or_none(data.get(key))
    variants = _require(data, "variants", where)
    if not isinstance(variants, list):
        raise ConfigError(f"{where}: variants must be a list")
    clean_variants = []
    for i, variant in enumerate(variants):
        vwhere = f"{where}: variants[{i}]"
        if not isinstance(variant, dict):
            variant = as_plain(variant)
            variant = variant.get("_data", variant) if isinstance(variant, dict) else variant
        if not isinstance(variant, dict):
            raise ConfigError(f"{vwhere} must be an object")
        name = str(_require(variant, "name", vwhere))
        metrics = _require(variant, "metrics", f"{where}: variant {name!r}")
        if not isinstance(metrics, dict):
            raise ConfigError(f"{where}: variant {name!r}: metrics must be an object")
        layers = variant.get("layers") or []
        if not isinstance(layers, list):
            raise ConfigError(f"{where}: variant {name!r}: layers must be a list")
        clean_layers = [
            {
                "tensor": str(layer.get("tensor", "")),
                "sqnr_db": finite_or_none(layer.get("sqnr_db")),
                "op_type": str(layer.get("op_type") or ""),
            }
            for layer in layers
            if isinstance(layer, dict)
        ]
        energy = finite_or_none(variant.get("energy_mj"))
        reason = variant.get("energy_reason")
        clean_variants.append(
            {
                **variant,
                "name": name,
                "path": str(variant.get("path") or ""),
                "file_bytes": int(variant.get("file_bytes") or 0),
                "size_ratio": finite_or_none(variant.get("size_ratio")),
                "metrics": {str(k): v for k, v in metrics.items()},
                "latency_ms": _normalize_latency(variant.get("latency_ms"), f"{where}: variant {name!r} latency_ms"),
                "energy_mj": energy,
                "energy_reason": (str(reason) if reason else None)
                if energy is not None
                else str(reason or "not measured (no reason given)"),
                "layers": clean_layers,
            }
        )
    out["variants"] = clean_variants
    return out


def normalize_decoder_compare(result: Any, where: str = "decoder compare result") -> dict[str, Any]:
    """A ``DecoderCompareResult`` (object, envelope or bare data dict) as a validated data dict.

    Its variants have the same shape as a ``CompareResult``'s and are checked the same way.
    """
    raw = as_plain(result)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a DecoderCompareResult or its dict, found {type(raw).__name__}")
    data = _unwrap(raw, DECODER_COMPARE_TYPE, DECODER_COMPARE_VERSION, where)
    out = normalize_compare(data, where)
    out["task"] = "decoder"
    out["reference_perplexity"] = finite_or_none(data.get("reference_perplexity"))
    for key in DECODER_INT_KEYS:
        out[key] = int(data.get(key) or 0)
    return out


def section_kind(obj: Any) -> str:
    """``"profile"``, ``"compare"`` or ``"decoder"``: which kind of result an input is, by its shape."""
    raw = as_plain(obj)
    if isinstance(raw, dict):
        tag = raw.get("_type") or raw.get("schema")
        inner = raw.get("_data")
        data: dict[str, Any] = inner if isinstance(inner, dict) else raw
        if tag == DECODER_COMPARE_TYPE or (tag is None and "reference_perplexity" in data):
            return "decoder"
        if tag == COMPARE_TYPE or "variants" in data:
            return "compare"
        if tag == BENCHMARK_SCHEMA or "latency_ms" in data:
            return "profile"
        found = f"a dict with keys {', '.join(sorted(map(str, raw))[:6])}"
    else:
        found = type(obj).__name__
    raise ConfigError(f"expected a BenchmarkResult or CompareResult (or a DecoderCompareResult, or their dicts), found {found}")
