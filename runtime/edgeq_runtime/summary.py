"""A benchmark result as a few readable lines for the terminal (``edgeq_runtime bench``)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from edgeq_runtime.energy import MIN_SENSOR_PERIODS
from edgeq_runtime.result import BenchmarkResult
from edgeq_runtime.stats import LATENCY_KEYS


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
    decoder = result.decoder
    if decoder is not None:
        lines += _decoder_lines(decoder)
    lines.append(("decode ms  " if decoder else "latency ms ") + "  ".join(k + " " + _num(lat[k]) for k in LATENCY_KEYS)
                 + (" per token" if decoder else ""))
    lines.append("throughput " + _num(result.throughput_per_s) + (" tokens/s" if decoder else " inferences/s"))
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
        if result.backend == "tensorrt":
            lines.append("           TensorRT IProfiler: GPU time per engine layer (fused layers, one name each); "
                         "host<->device copies excluded here, included in the latency above")
    return "\n".join(lines)


def _decoder_lines(decoder: Dict[str, Any]) -> List[str]:
    """Prefill per prompt length, memory and energy per token of a decoder benchmark."""
    prefill = decoder.get("prefill_ms") or {}
    lines = ["prefill ms " + "  ".join(n + " tokens " + _num(v.get("p50")) for n, v in prefill.items()) + " (p50)"]
    rss = decoder.get("rss_bytes") or {}
    mem = "peak RSS " + _mb(decoder.get("peak_rss_bytes")) + ", KV cache " + _mb(decoder.get("kv_bytes"))
    if rss:
        mem += "; RSS at token " + ", ".join(k + ": " + _mb(v) for k, v in rss.items())
    lines.append("memory     " + mem)
    if decoder.get("energy_per_generated_token_mj") is not None:
        lines.append("energy     " + _num(decoder["energy_per_generated_token_mj"]) + " mJ/generated token ("
                     + _num(decoder.get("energy_above_idle_per_generated_token_mj")) + " above idle), "
                     + _num(decoder.get("energy_per_prompt_token_mj")) + " mJ/prompt token ("
                     + _num(decoder.get("energy_above_idle_per_prompt_token_mj")) + " above idle)")
    return lines


def _mb(value: Any) -> str:
    return "n/a" if value is None else "{:.1f} MB".format(value / 1e6)


def _num(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return "{:.1f}".format(value)
    return "{:.3g}".format(value)
