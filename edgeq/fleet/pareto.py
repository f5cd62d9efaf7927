"""The sweep's choice, pure: the accuracy × size × latency × energy front per board, and a pick.

A point is one quantized model measured on one board. Accuracy is higher-is-better (the headline
metric of ``edgeq compare``); size, latency and energy are costs. Energy counts only on a board
where every point has it (a board without a sensor is compared on the other three). The pick
under constraints is the most accurate point that meets every given limit; ties go to the
smaller, then the faster, then the more frugal one. A point that lacks a constrained number
cannot be shown to meet it and is not picked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgeq.report.analysis import nondominated

AXES = ("accuracy", "file_bytes", "latency_ms", "energy_mj")


@dataclass(frozen=True)
class Constraints:
    """``--max-latency`` (ms), ``--max-size`` (bytes), ``--max-energy`` (mJ per inference); None = no limit."""

    max_latency_ms: float | None = None
    max_size_bytes: float | None = None
    max_energy_mj: float | None = None

    def limits(self) -> dict[str, float]:
        pairs = (("latency_ms", self.max_latency_ms), ("file_bytes", self.max_size_bytes), ("energy_mj", self.max_energy_mj))
        return {axis: float(limit) for axis, limit in pairs if limit is not None}

    def describe(self) -> str:
        parts = []
        if self.max_latency_ms is not None:
            parts.append(f"latency ≤ {self.max_latency_ms:g} ms")
        if self.max_size_bytes is not None:
            parts.append(f"size ≤ {self.max_size_bytes / 1e6:g} MB")
        if self.max_energy_mj is not None:
            parts.append(f"energy ≤ {self.max_energy_mj:g} mJ")
        return ", ".join(parts) or "no constraint"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def axes_for(points: Sequence[dict[str, Any]]) -> list[str]:
    """The axes every point has a number on (accuracy, size, latency always needed; energy if all)."""
    return [axis for axis in AXES if points and all(_number(p.get(axis)) is not None for p in points)]


def front(points: Sequence[dict[str, Any]]) -> list[bool]:
    """Pareto membership of each point over the axes they all share (accuracy maximised)."""
    axes = axes_for(points)
    costs = [[-float(p[a]) if a == "accuracy" else float(p[a]) for a in axes] for p in points]
    return nondominated(costs) if axes else [False] * len(points)


def feasible(point: dict[str, Any], constraints: Constraints) -> bool:
    for axis, limit in constraints.limits().items():
        value = _number(point.get(axis))
        if value is None or value > limit:
            return False
    return _number(point.get("accuracy")) is not None


def pick(points: Sequence[dict[str, Any]], constraints: Constraints) -> int | None:
    """Index of the recommended point, or None when nothing meets the constraints."""
    candidates = [i for i, p in enumerate(points) if feasible(p, constraints)]
    if not candidates:
        return None

    def rank(i: int) -> tuple[float, ...]:
        p = points[i]
        rest = [_number(p.get(a)) for a in AXES[1:]]
        return (-float(p["accuracy"]), *[v if v is not None else math.inf for v in rest])

    return min(candidates, key=rank)


def annotate(rows: list[dict[str, Any]], constraints: Constraints) -> dict[str | None, int | None]:
    """Mark each row ``pareto`` / ``pick`` within its board; returns board → index of its pick in ``rows``."""
    boards: dict[str | None, list[int]] = {}
    for i, row in enumerate(rows):
        row["pareto"], row["pick"] = False, False
        measured = "error" not in row and _number(row.get("accuracy")) is not None
        if measured and (row.get("board") is None or _number(row.get("latency_ms")) is not None):
            boards.setdefault(row.get("board"), []).append(i)
    picks: dict[str | None, int | None] = {}
    for board, indices in boards.items():
        points = [rows[i] for i in indices]
        for i, on in zip(indices, front(points), strict=True):
            rows[i]["pareto"] = on
        chosen = pick(points, constraints)
        picks[board] = None if chosen is None else indices[chosen]
        if chosen is not None:
            rows[indices[chosen]]["pick"] = True
    return picks
