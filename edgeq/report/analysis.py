"""Numbers the report derives from results: Pareto fronts, headline metrics, latency drift.

They go into the JSON as well as the page, so a CI script reads the same verdict a person sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeq.report.inputs import finite_or_none

# Which metric stands for "accuracy" on the Pareto plots, per task; every one is higher-is-better
# and equals 1 for the reference compared with itself.
HEADLINE_METRIC = {
    "classification": "top1_agreement",
    "embedding": "embedding_cosine_mean",
    "generic": "cosine",
}

# The metrics the comparison table shows per task, in column order (names and notation:
# ``edgeq.metrics.METRICS``).
TASK_METRICS = {
    "classification": [
        "top1_agreement",
        "top5_overlap",
        "confident_top1_agreement",
        "kl_divergence",
        "cosine",
        "sqnr_db",
    ],
    "embedding": ["embedding_cosine_mean", "embedding_cosine_p5", "cosine", "sqnr_db"],
    "generic": ["cosine", "sqnr_db"],
}


def headline_metric(compare: dict[str, Any]) -> str:
    """The accuracy metric plotted against size and latency: the task's, if every variant has it."""
    preferred = HEADLINE_METRIC.get(compare["task"], "cosine")
    variants = compare["variants"]
    if variants and all(finite_or_none(v["metrics"].get(preferred)) is not None for v in variants):
        return preferred
    return "cosine"


def nondominated(costs: Sequence[Sequence[float]]) -> list[bool]:
    """Which cost vectors no other one beats: lower-or-equal on every axis, lower on one.

    Every axis is a cost (lower is better; negate an accuracy). Identical points do not dominate
    each other. Used for the report's 2-D fronts and the sweep's accuracy × size × latency × energy.
    """
    flags = []
    for i, ci in enumerate(costs):
        dominated = any(
            all(a <= b for a, b in zip(cj, ci, strict=True)) and any(a < b for a, b in zip(cj, ci, strict=True))
            for j, cj in enumerate(costs)
            if j != i
        )
        flags.append(not dominated)
    return flags


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which points no other point beats: lower-or-equal x and higher-or-equal y, one strictly.

    x is a cost (bytes, milliseconds), y an accuracy. Identical points do not dominate each other.
    """
    return nondominated([(x, -y) for x, y in points])


def compare_points(
    compare: dict[str, Any], metric: str, cost: str, reference_name: str = "reference"
) -> list[dict[str, Any]]:
    """Reference + variants as plot points for one cost axis (``"size"`` or ``"latency"``).

    A model without that cost (latency not measured) or without the metric is left out; the
    reference scores 1.0 on every headline metric by definition.
    """
    points: list[dict[str, Any]] = []
    ref_cost = (
        compare["reference_file_bytes"] or None
        if cost == "size"
        else (compare["reference_latency_ms"] or {}).get("p50")
    )
    if ref_cost:
        points.append({"name": reference_name, "x": float(ref_cost), "y": 1.0, "reference": True})
    for index, variant in enumerate(compare["variants"]):
        x = variant["file_bytes"] or None if cost == "size" else (variant["latency_ms"] or {}).get("p50")
        y = finite_or_none(variant["metrics"].get(metric))
        if x and y is not None:
            # index: the variant's place in the comparison, so it keeps one colour on every plot
            points.append({"name": variant["name"], "x": float(x), "y": y, "reference": False, "index": index})
    for point, on_front in zip(points, pareto_front([(p["x"], p["y"]) for p in points]), strict=True):
        point["pareto"] = on_front
    return points


def latency_drift_percent(trace_ms: Sequence[float], warmup_iterations: int) -> float | None:
    """Median of the last tenth of measured iterations against the first tenth, in percent.

    A clear positive drift over a run is the signature of thermal throttling (or a competing
    load); None when there are too few iterations to say.
    """
    measured = np.asarray(trace_ms[warmup_iterations:], dtype=np.float64)
    if measured.size < 20:
        return None
    tenth = max(measured.size // 10, 2)
    first = float(np.median(measured[:tenth]))
    last = float(np.median(measured[-tenth:]))
    if first <= 0:
        return None
    return 100.0 * (last - first) / first


def profile_summary(bench: dict[str, Any]) -> dict[str, Any]:
    """The handful of numbers a person (or a CI gate) looks at first."""
    energy = bench["energy"]
    trace = bench["trace_ms"]
    warm = bench["warmup_iterations"]
    return {
        "latency_p50_ms": bench["latency_ms"]["p50"],
        "latency_p99_ms": bench["latency_ms"]["p99"],
        "throughput_per_s": bench["throughput_per_s"],
        "first_iteration_ms": trace[0] if trace else None,
        "latency_drift_percent": latency_drift_percent(trace, warm),
        "energy_available": energy["available"],
        "energy_per_inference_mj": energy["energy_per_inference_mj"] if energy["available"] else None,
        "energy_above_idle_per_inference_mj": energy["energy_above_idle_per_inference_mj"]
        if energy["available"]
        else None,
        "average_power_w": energy["average_power_w"] if energy["available"] else None,
        "energy_reason": None if energy["available"] else energy["reason"],
    }


def compare_summary(compare: dict[str, Any], reference_name: str = "reference") -> dict[str, Any]:
    """Headline metric and Pareto membership per cost axis, for the JSON and the table."""
    metric = headline_metric(compare)
    fronts = {}
    for cost in ("size", "latency"):
        fronts[cost] = [p["name"] for p in compare_points(compare, metric, cost, reference_name) if p["pareto"]]
    return {"accuracy_metric": metric, "pareto_front": fronts}


def decoder_points(compare: dict[str, Any], reference_name: str = "reference") -> list[dict[str, Any]]:
    """Reference + variants as (file size, perplexity) points; lower is better on both axes."""
    points: list[dict[str, Any]] = []
    ref_ppl = finite_or_none(compare.get("reference_perplexity"))
    if compare["reference_file_bytes"] and ref_ppl is not None:
        points.append({"name": reference_name, "x": float(compare["reference_file_bytes"]), "y": ref_ppl, "reference": True})
    for index, variant in enumerate(compare["variants"]):
        y = finite_or_none(variant["metrics"].get("perplexity"))
        if variant["file_bytes"] and y is not None:
            points.append({"name": variant["name"], "x": float(variant["file_bytes"]), "y": y, "reference": False, "index": index})
    for point, on_front in zip(points, pareto_front([(p["x"], -p["y"]) for p in points]), strict=True):
        point["pareto"] = on_front
    return points


def decoder_summary(compare: dict[str, Any], reference_name: str = "reference") -> dict[str, Any]:
    """The perplexity-vs-size Pareto front, for the JSON and the table."""
    front = [p["name"] for p in decoder_points(compare, reference_name) if p["pareto"]]
    return {"accuracy_metric": "perplexity", "pareto_front": {"size": front}}
