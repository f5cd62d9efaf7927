"""Numbers as the report page shows them: milliseconds, bytes, metric values, "—" for missing.

A value that is absent, NaN or not a number at all shows as a dash, never as "nan" or "None",
so a partial result still renders as a readable page.
"""

from __future__ import annotations

import math
from typing import Any

from edgeq.metrics import PERCENT_METRICS

DASH = "—"


def is_number(value: Any) -> bool:
    """A real int or float (JSON booleans are ints to Python, but not numbers to show)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fmt_ms(value: Any) -> str:
    """Milliseconds with about three significant digits."""
    if not is_number(value) or not math.isfinite(value):
        return DASH
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_bytes(value: Any) -> str:
    """A file size in decimal units (kB, MB, GB), as file managers show it."""
    if not is_number(value) or value <= 0:
        return DASH
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            number = value / scale
            return f"{number:.2f} {unit}" if number < 10 else f"{number:.1f} {unit}"
    return f"{value:.0f} B"


def fmt_number(value: Any, digits: int = 2, unit: str = "") -> str:
    """A number with thousands separators, ``digits`` decimals and an optional unit."""
    if not is_number(value) or not math.isfinite(value):
        return DASH
    text = f"{value:,.{digits}f}"
    if text.startswith("-") and float(text.replace(",", "")) == 0:
        text = text[1:]  # noise around zero (energy above idle) is not "minus zero"
    return f"{text}{(' ' + unit) if unit else ''}"


def fmt_metric(name: str, value: Any) -> str:
    """An accuracy metric in its own notation: shares in %, SQNR in dB, an infinite SQNR as ∞."""
    if not is_number(value):
        return DASH
    if math.isnan(value):
        return DASH
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if name in PERCENT_METRICS:
        return f"{value * 100:.1f}%"
    if name == "sqnr_db":
        return f"{value:.1f} dB"
    if name == "kl_divergence":
        return f"{value:.2e}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"
    if name == "perplexity":
        return f"{value:.3f}"
    if name == "perplexity_ratio":
        return f"{value:.4f}×"
    if name == "greedy_first_divergence":
        return f"{value:.1f}"
    if name == "confident_samples":
        return f"{int(value):,}"
    return f"{value:.5f}"

