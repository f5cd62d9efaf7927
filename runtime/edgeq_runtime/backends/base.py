"""The abstract backend every execution engine implements.

A backend is one file under ``edgeq_runtime/backends/`` whose class is decorated with ``@register``.
Its module may import only the standard library, numpy and edgeq_runtime at import time: the engine
itself (onnxruntime, tensorrt) is imported inside the backend's methods, so a board that has only one
of them can import the whole runtime.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from edgeq_runtime.manifest import TensorSpec


@dataclass
class BackendOptions:
    """Everything a backend may need besides the model file; unknown settings stay in ``target``."""

    providers: Optional[List[str]] = None
    threads: Optional[int] = None
    target: Dict[str, Any] = field(default_factory=dict)  # the bundle manifest's target settings
    shapes: Dict[str, List[int]] = field(default_factory=dict)  # concrete shapes for dynamic inputs
    cache_dir: Optional[Path] = None
    model_sha256: Optional[str] = None
    # Implicit int8 (TensorRT 8, DLA): the bundle's calibration cache, whose scales the builder uses.
    calibration_cache: Optional[Path] = None


@dataclass
class OpTime:
    """Time spent in one graph node over a profiling pass."""

    name: str
    op_type: str
    total_ms: float
    count: int
    share: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "op_type": self.op_type, "total_ms": self.total_ms, "count": self.count,
                "share": self.share}


def rank_op_times(samples: Iterable[Tuple[str, str, float]]) -> List[OpTime]:
    """``(name, op type, ms)`` samples summed per name, largest first, each with its share of the total.

    The one ranking every backend's profiler output goes through (onnxruntime nodes, TensorRT layers).
    """
    totals: Dict[str, OpTime] = {}
    for name, op_type, ms in samples:
        entry = totals.get(name)
        if entry is None:
            entry = totals[name] = OpTime(name=name, op_type=op_type, total_ms=0.0, count=0)
        entry.total_ms += float(ms)
        entry.count += 1
    grand = sum(t.total_ms for t in totals.values())
    ordered = sorted(totals.values(), key=lambda t: (-t.total_ms, t.name))
    for entry in ordered:
        entry.share = entry.total_ms / grand if grand > 0 else 0.0
    return ordered


class Backend(abc.ABC):
    """One execution engine bound to one model."""

    name: ClassVar[str] = ""

    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    providers: List[str]

    @classmethod
    @abc.abstractmethod
    def unavailable_reason(cls) -> Optional[str]:
        """``None`` when this backend can run here, otherwise a one-line reason (what to install)."""

    @abc.abstractmethod
    def __init__(self, model_path: Optional[Path], engine_path: Optional[Path], options: BackendOptions) -> None:
        """Load (or build) the model; raise ``BundleError`` with a one-line message if it cannot."""

    @abc.abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run one inference on already validated feeds."""

    def profile_ops(self, feeds: Mapping[str, np.ndarray], runs: int) -> Optional[List[OpTime]]:
        """Per-node times over ``runs`` inferences, or ``None`` where the engine cannot report them."""
        return None

    def versions(self) -> Dict[str, str]:
        """Versions of the engine's packages, for the benchmark record."""
        return {}

    def close(self) -> None:
        """Release the engine's resources; the backend is unusable afterwards."""
        return None
