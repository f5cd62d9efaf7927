"""TensorRT callbacks: per-layer times (``IProfiler``) and engine-build progress (``IProgressMonitor``).

TensorRT calls back into Python through subclasses of its interface classes, so the classes are
made here from the ``tensorrt`` module the caller imported (this module never imports it; the
runtime must import without TensorRT). What the callbacks collect is plain data, and the
aggregation is pure Python, tested without TensorRT.

- ``IProfiler.report_layer_time(layer_name, ms)`` is called once per engine layer per execution,
  after the stream is synchronised: GPU time of each layer as the engine runs it (fused layers
  carry one name), host <-> device copies excluded, since they are not layers.
- ``IProgressMonitor`` (TensorRT 10.0+; absent before) gets ``phase_start``/``step_complete``/
  ``phase_finish`` during ``build_serialized_network``; returning False from ``step_complete``
  would cancel the build, which this monitor never does.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

from edgeq_runtime.backends.base import OpTime, rank_op_times

log = logging.getLogger(__name__)

LAYER_OP_TYPE = "TensorRT layer"  # engine layers are fused; their ONNX op types are not kept


def aggregate_layer_times(runs: List[List[Tuple[str, float]]], skip_first: bool = True) -> List[OpTime]:
    """Per-layer totals over profiled executions, largest first, each with its share of the total.

    ``runs`` holds one list of ``(layer name, ms)`` per execution. ``skip_first`` drops the first
    execution, which pays one-time costs (lazy allocations, the first kernel launch).
    """
    used = runs[1:] if skip_first and len(runs) > 1 else runs
    return rank_op_times((name, LAYER_OP_TYPE, ms) for records in used for name, ms in records)


def make_profiler(trt: Any) -> Any:
    """An ``IProfiler`` that records each execution's layer times; call ``next_run()`` before each one."""

    class LayerProfiler(trt.IProfiler):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.runs: List[List[Tuple[str, float]]] = []

        def next_run(self) -> None:
            self.runs.append([])

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            if not self.runs:
                self.runs.append([])
            self.runs[-1].append((str(layer_name), float(ms)))

    return LayerProfiler()


class BuildProgress:
    """What a build monitor saw: phases with their steps, reported through ``report``.

    Pure Python (the TensorRT subclass in :func:`make_progress_monitor` forwards to it), so the
    reporting can be tested without TensorRT.
    """

    def __init__(self, report: Optional[Callable[[str], None]] = None) -> None:
        self.report = report or (lambda text: log.warning("%s", text))
        self.phases: Dict[str, Tuple[int, int]] = {}  # name -> (steps done, steps)
        self.parents: Dict[str, Optional[str]] = {}
        self.finished: List[str] = []

    def start(self, name: str, parent: Optional[str], steps: int) -> None:
        self.phases[name] = (0, int(steps))
        self.parents[name] = parent
        if parent is None:  # top-level phases only: nested ones come by the hundred
            self.report("TensorRT build: " + name + " (" + str(steps) + " steps)")

    def step(self, name: str, step: int) -> bool:
        _, steps = self.phases.get(name, (0, 0))
        self.phases[name] = (int(step) + 1, steps)
        return True  # never cancel

    def finish(self, name: str) -> None:
        self.finished.append(name)
        done, steps = self.phases.get(name, (0, 0))
        if self.parents.get(name) is None:
            self.report("TensorRT build: " + name + " done (" + str(done) + "/" + str(steps) + " steps)")


def make_progress_monitor(trt: Any, progress: BuildProgress) -> Optional[Any]:
    """An ``IProgressMonitor`` forwarding to ``progress``, or None on TensorRT without one (< 10.0)."""
    base: Any = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
            progress.start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return progress.step(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            progress.finish(phase_name)

    return Monitor()
