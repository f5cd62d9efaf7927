"""TensorRT per-layer times (IProfiler) and build progress (IProgressMonitor).

Three kinds of test, said plainly:
- pure Python: the aggregation of layer times and the build-progress reporting;
- wiring, against the labelled stand-in module of ``test_runtime_tensorrt_flow`` extended with
  the two interfaces: proves which TensorRT calls edgeq makes, not that TensorRT answers them;
- the real ``tensorrt`` package on a GPU, skipped with the reason where it is absent (it is on
  the machines these tests run on).
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
from edgeq_runtime.bench import benchmark
from edgeq_runtime.session import Session
from edgeq_runtime.trt_hooks import LAYER_OP_TYPE, BuildProgress, aggregate_layer_times
from rt_helpers import make_bundle
from test_runtime_tensorrt_flow import FakeCuda, fake_tensorrt

LAYERS = (("conv1 + relu", 0.30), ("fc", 0.10))


def test_layer_times_sum_per_layer_skip_the_first_run_and_share_the_total():
    runs = [[("conv", 9.0), ("fc", 9.0)], [("conv", 0.3), ("fc", 0.1)], [("conv", 0.5), ("fc", 0.1)]]
    ops = aggregate_layer_times(runs)
    assert [(o.name, round(o.total_ms, 6), o.count) for o in ops] == [("conv", 0.8, 2), ("fc", 0.2, 2)]
    assert [round(o.share, 6) for o in ops] == [0.8, 0.2] and ops[0].op_type == LAYER_OP_TYPE
    assert [o.count for o in aggregate_layer_times(runs, skip_first=False)] == [3, 3]
    assert aggregate_layer_times([]) == []


def test_build_progress_reports_top_level_phases_only_and_never_cancels():
    lines: list[str] = []
    progress = BuildProgress(lines.append)
    progress.start("Building engine", None, 3)
    progress.start("Tactic selection", "Building engine", 100)
    assert all(progress.step("Tactic selection", i) for i in range(100))
    progress.finish("Tactic selection")
    assert progress.step("Building engine", 2)
    progress.finish("Building engine")
    assert lines == ["TensorRT build: Building engine (3 steps)", "TensorRT build: Building engine done (3/3 steps)"]


@pytest.fixture()
def hooked_trt(monkeypatch):
    """The stand-in TensorRT 10.3 with IProfiler and IProgressMonitor as the real API shapes them."""
    log: list[str] = []
    trt = fake_tensorrt(log)

    class IProfiler:
        def __init__(self) -> None:
            pass

    class IProgressMonitor:
        def __init__(self) -> None:
            pass

    trt.IProfiler, trt.IProgressMonitor = IProfiler, IProgressMonitor
    engine_class = type(trt.Runtime(None).deserialize_cuda_engine(b"FAKE-ENGINE:x"))
    context_class = type(engine_class().create_execution_context())
    original_execute = context_class.execute_async_v3

    def execute(self, stream):
        ok = original_execute(self, stream)
        profiler = getattr(self, "profiler", None)
        if profiler is not None:  # TensorRT reports every layer once per execution
            for name, ms in LAYERS:
                profiler.report_layer_time(name, ms)
        return ok

    context_class.execute_async_v3 = execute
    builder_build = trt.Builder.build_serialized_network

    def build(self, network, config):
        monitor = getattr(config, "progress_monitor", None)
        if monitor is not None:
            monitor.phase_start("Building engine", None, 2)
            monitor.step_complete("Building engine", 0)
            monitor.step_complete("Building engine", 1)
            monitor.phase_finish("Building engine")
        return builder_build(self, network, config)

    trt.Builder.build_serialized_network = build
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr("edgeq_runtime.backends._cuda.CudaRuntime", FakeCuda)
    return log


def test_stand_in_wiring_bench_reports_layers_and_build_reports_progress(tmp_path, hooked_trt, caplog):
    bundle = make_bundle(tmp_path / "bundle", target={"backend": "tensorrt", "fp16": True})
    with caplog.at_level("WARNING"), Session(bundle, cache_dir=tmp_path / "cache", shapes={"x": [1, 8]}) as session:
        result = benchmark(session, warmup=1, iterations=3, energy="none")
    assert any("set progress_monitor" in line for line in hooked_trt)
    assert "TensorRT build: Building engine done (2/2 steps)" in caplog.text
    assert [(op["name"], op["count"]) for op in result.ops] == [("conv1 + relu", 3), ("fc", 3)]
    assert result.ops[0]["share"] == pytest.approx(0.75)
    from edgeq_runtime.summary import format_result

    assert "host<->device copies excluded" in format_result(result)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None,
                    reason="the tensorrt package is not installed: no TensorRT or GPU on this machine, so the "
                           "IProfiler/IProgressMonitor path was not run against real TensorRT here")
def test_real_tensorrt_profiles_layers_of_a_built_engine(tmp_path):  # pragma: no cover - needs a GPU
    bundle = make_bundle(tmp_path / "bundle", target={"backend": "tensorrt", "fp16": False})
    with Session(bundle, backend="tensorrt", cache_dir=tmp_path / "cache", shapes={"x": [1, 8]}) as session:
        x = np.ones((1, 8), np.float32)
        assert np.all(np.isfinite(session.run({"x": x})["y"]))
        ops = session.backend.profile_ops({"x": x}, runs=5)
    assert ops and all(o.total_ms >= 0 and o.count == 5 for o in ops)
    assert sum(o.share for o in ops) == pytest.approx(1.0)
