"""Latency statistics of a timed run: the summary numbers every benchmark reports."""

from __future__ import annotations

from typing import Dict, List

import numpy as np

LATENCY_KEYS = ("min", "mean", "std", "p50", "p90", "p95", "p99", "max")


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
