"""A benchmark result as a few readable lines for the terminal (``edgeq_runtime bench``)."""

from __future__ import annotations

from typing import Optional

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
        if result.backend == "tensorrt":
            lines.append("           TensorRT IProfiler: GPU time per engine layer (fused layers, one name each); "
                         "host<->device copies excluded here, included in the latency above")
    return "\n".join(lines)


def _num(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return "{:.1f}".format(value)
    return "{:.3g}".format(value)
