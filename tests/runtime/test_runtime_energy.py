"""Energy: the sampler's integral against analytic integrals, and the benchmark's energy block end to end.

Sensor files change during the run: a test clock rewrites them at every tick (the source still
reads the real files), so the power at every sample time is known exactly and the measured energy
can be compared with the closed-form integral.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import sysfs_boards as boards
from edgeq_runtime.bench import BenchmarkResult, benchmark, format_result, latency_stats
from edgeq_runtime.power.ina3221_hwmon import Ina3221HwmonSource
from edgeq_runtime.power.rapl import RaplSource
from edgeq_runtime.power.sampler import PowerSampler
from edgeq_runtime.session import Session
from rt_helpers import dense_model

STEP_S = 0.01


class TickingClock:
    """Each call advances time by STEP_S and lets ``on_tick(t)`` rewrite the sensor files for time t."""

    def __init__(self, on_tick: Callable[[float], object]) -> None:
        self.ticks = 0
        self._on_tick = on_tick
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.ticks += 1
            t = self.ticks * STEP_S
            self._on_tick(t)
            return t


def _record(sampler: PowerSampler, clock: TickingClock, samples: int) -> tuple[float, float]:
    """Start, let the thread take samples, mark a window, let it take more, stop."""
    sampler.start()
    deadline = time.monotonic() + 20
    while sampler.sample_count < samples // 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    t0 = sampler.mark()
    while sampler.sample_count < samples and time.monotonic() < deadline:
        time.sleep(0.001)
    t1 = sampler.mark()
    sampler.stop()
    assert sampler.error is None
    assert sampler.samples_between(t0, t1) >= samples // 2
    return t0 - STEP_S, t1 - STEP_S  # times are relative to the origin tick


def test_linear_power_ramp_integrates_exactly(tmp_path):
    folder = boards.orin_nano(tmp_path)

    def current_ma(t: float) -> int:  # P(t) = 5.024 V × (0.8 + 0.4 t) A, integer mA at every tick
        return 800 + 4 * round(t / STEP_S)

    clock = TickingClock(lambda t: boards.write(folder / "curr1_input", current_ma(t)))
    source = Ina3221HwmonSource.discover(tmp_path)
    assert source is not None
    sampler = PowerSampler(source, interval_s=0.001, clock=clock)
    t0, t1 = _record(sampler, clock, samples=90)
    # sampler times are (tick - origin tick) · STEP; the power at sampler time s is P(s + STEP)
    expected = 5.024 * (0.8 * (t1 - t0) + 0.2 * ((t1 + STEP_S) ** 2 - (t0 + STEP_S) ** 2))
    assert sampler.energy_between(t0, t1) == pytest.approx(expected, rel=1e-9)


def test_sinusoidal_power_matches_analytic_integral(tmp_path):
    folder = boards.orin_nano(tmp_path)
    # P(t) = 5 V × (1 + 0.5 sin(2π t)) A
    clock = TickingClock(lambda t: boards.write(folder / "curr1_input", round(1000 + 500 * math.sin(2 * math.pi * t))))
    boards.write(folder / "in1_input", 5000)
    source = Ina3221HwmonSource.discover(tmp_path)
    assert source is not None
    sampler = PowerSampler(source, interval_s=0.001, clock=clock)
    t0, t1 = _record(sampler, clock, samples=150)
    a, b = t0 + STEP_S, t1 + STEP_S

    def antiderivative(t: float) -> float:
        return 5.0 * (t - 0.5 * math.cos(2 * math.pi * t) / (2 * math.pi))

    expected = antiderivative(b) - antiderivative(a)
    # trapezoid error ≤ (b-a)·h²/12·max|P''| = (b-a)·1e-4/12·5·0.5·4π² ≈ 1e-3·(b-a); mA rounding ≤ 2.5 mW
    assert sampler.energy_between(t0, t1) == pytest.approx(expected, abs=3e-3 * (b - a))
    times, power = sampler.trace()
    assert len(times) == len(power) == sampler.sample_count
    assert max(power) <= 7.5 + 1e-9 and min(power) >= 2.5 - 1e-9


def test_rapl_counter_with_many_wraps_integrates_exactly(tmp_path):
    max_range = 1_000_000  # 1 J: the counter wraps every few ticks
    (pkg,) = boards.rapl(tmp_path, [(0, max_range)])

    def energy_j(t: float) -> float:  # P(t) = 30 + 10 t W
        return 30.0 * t + 5.0 * t * t

    clock = TickingClock(lambda t: boards.write(pkg / "energy_uj", round(energy_j(t) * 1e6) % max_range))
    source = RaplSource.discover(tmp_path)
    assert source is not None
    sampler = PowerSampler(source, interval_s=0.001, clock=clock)
    t0, t1 = _record(sampler, clock, samples=120)
    expected = energy_j(t1 + STEP_S) - energy_j(t0 + STEP_S)
    assert expected > 10 * max_range / 1e6  # the window spans at least ten wraps
    assert sampler.energy_between(t0, t1) == pytest.approx(expected, abs=2e-6)
    times, power = sampler.trace()  # interval means at midpoints: exactly P at the midpoint for a quadratic E
    for t, p in zip(times, power, strict=True):
        assert p == pytest.approx(30.0 + 10.0 * (t + STEP_S), abs=1e-3)


# ---- the benchmark's energy block --------------------------------------------------------------------
IDLE_W = 5.024 * 0.944
BUSY_MA = 1500
BUSY_W = 5.024 * 1.5


def _busy_when_running(session: Session, folder: Path) -> None:
    """The board draws more while the model runs: the first inference switches VDD_IN to BUSY_MA."""
    original = session.run_unchecked

    def run(feeds):  # type: ignore[no-untyped-def]
        if (folder / "curr1_input").read_text().strip() != str(BUSY_MA):
            boards.write(folder / "curr1_input", BUSY_MA)
        return original(feeds)

    session.run_unchecked = run  # type: ignore[method-assign]


def test_benchmark_energy_idle_and_busy_exactly(tmp_path):
    folder = boards.orin_nano(tmp_path / "board")
    with Session(dense_model(tmp_path / "dense.onnx")) as session:
        _busy_when_running(session, folder)
        result = benchmark(session, warmup=3, iterations=40, batch=2, idle_s=0.15, power_root=tmp_path / "board",
                           profile_ops=False)
    energy = result.energy
    assert energy.available and energy.reason is None
    assert energy.source == "ina3221-hwmon: VDD_IN"
    assert energy.rails == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    assert energy.idle_power_w == pytest.approx(IDLE_W, rel=1e-12)
    assert energy.average_power_w == pytest.approx(BUSY_W, rel=1e-12)
    window = energy.window_s
    assert window is not None and energy.measured_window_s is not None
    assert window == pytest.approx(energy.measured_window_s[1] - energy.measured_window_s[0])
    inferences = 40 * 2
    assert energy.energy_per_inference_mj == pytest.approx(BUSY_W * window * 1000 / inferences, rel=1e-9)
    assert energy.energy_above_idle_per_inference_mj == pytest.approx((BUSY_W - IDLE_W) * window * 1000 / inferences,
                                                                      rel=1e-9)
    assert energy.window_too_short is (window < 10 * 0.020)  # 40 tiny inferences: a few ms
    assert energy.window_too_short
    t_s, power = energy.trace["t_s"], energy.trace["power_w"]
    assert len(t_s) == len(power) >= 4 and set(np.round(power, 9)) == {round(IDLE_W, 9), round(BUSY_W, 9)}
    assert t_s[0] == 0.0 and t_s[-1] == pytest.approx(energy.measured_window_s[1])


def test_benchmark_duration_window_is_long_enough(tmp_path):
    boards.orin_nano(tmp_path / "board")
    with Session(dense_model(tmp_path / "dense.onnx")) as session:
        result = benchmark(session, warmup=1, duration=0.3, idle_s=0.05, power_root=tmp_path / "board", profile_ops=False)
    assert result.iterations > 1
    assert result.energy.window_s is not None and result.energy.window_s >= 0.3
    assert not result.energy.window_too_short
    assert result.energy.average_power_w == pytest.approx(IDLE_W)  # the files never changed
    assert result.energy.energy_above_idle_per_inference_mj == pytest.approx(0.0, abs=1e-9)


def test_agx_orin_energy_says_it_is_a_sum(tmp_path):
    boards.agx_orin(tmp_path / "board")
    with Session(dense_model(tmp_path / "dense.onnx")) as session:
        result = benchmark(session, warmup=0, iterations=5, idle_s=0.0, power_root=tmp_path / "board", profile_ops=False)
    assert result.energy.available and result.energy.idle_power_w is None
    assert result.energy.energy_above_idle_per_inference_mj is None
    assert result.energy.average_power_w == pytest.approx(9.0)
    assert "sum of connected rails" in str(result.energy.source)


def test_sensor_that_disappears_mid_run_gives_no_numbers(tmp_path):
    folder = boards.orin_nano(tmp_path / "board")
    with Session(dense_model(tmp_path / "dense.onnx")) as session:
        original = session.run_unchecked
        calls = {"n": 0}

        def run(feeds):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] == 5:
                (folder / "curr1_input").unlink()
            return original(feeds)

        session.run_unchecked = run  # type: ignore[method-assign]
        result = benchmark(session, warmup=2, iterations=20, idle_s=0.02, power_root=tmp_path / "board", profile_ops=False)
    energy = result.energy
    assert not energy.available
    assert energy.reason is not None and "stopped answering during the run" in energy.reason
    assert "curr1_input" in energy.reason
    assert energy.average_power_w is None and energy.energy_per_inference_mj is None and energy.trace["t_s"] == []


def test_no_sensor_and_disabled_energy(tmp_path):
    with Session(dense_model(tmp_path / "dense.onnx")) as session:
        missing = benchmark(session, warmup=0, iterations=3, power_root=tmp_path, profile_ops=False)
        disabled = benchmark(session, warmup=0, iterations=3, energy="none", profile_ops=False)
    for result, reason in ((missing, "no INA3221, INA238, tegrastats, NVML or RAPL sensor found under " + str(tmp_path)),
                           (disabled, "energy measurement disabled (--energy none)")):
        data = result.energy.to_dict()
        assert data["available"] is False and data["reason"] == reason
        assert all(data[k] is None for k in ("source", "sample_period_ms", "idle_power_w", "average_power_w",
                                             "energy_per_inference_mj", "energy_above_idle_per_inference_mj",
                                             "window_s", "measured_window_s"))
    assert "energy     not measured: " + "energy measurement disabled" in format_result(disabled)


def test_result_json_has_exactly_the_agreed_shape(tmp_path):
    boards.orin_nano(tmp_path / "board")
    with Session(dense_model(tmp_path / "dense.onnx")) as session:
        result = benchmark(session, warmup=2, iterations=7, idle_s=0.02, power_root=tmp_path / "board", top_ops=2)
    data = json.loads(result.to_json())
    assert list(data) == [
        "schema", "schema_version", "model", "backend", "providers", "device", "versions", "batch", "warmup",
        "iterations", "threads", "latency_ms", "throughput_per_s", "trace_ms", "warmup_iterations", "ops", "energy",
        "decoder",
    ]
    assert data["schema"] == "edgeq_runtime.BenchmarkResult" and data["schema_version"] == 2
    assert data["decoder"] is None  # only decoder bundles fill it
    assert data["backend"] == "ort" and data["batch"] == 1 and data["iterations"] == 7 and data["warmup"] == 2
    assert set(data["device"]) >= {"hostname", "machine", "cpu", "cpu_count", "python"}
    assert set(data["versions"]) >= {"edgeq_runtime", "onnxruntime", "numpy"}
    assert list(data["latency_ms"]) == ["min", "mean", "std", "p50", "p90", "p95", "p99", "max"]
    assert len(data["trace_ms"]) == 9 and data["warmup_iterations"] == 2
    assert data["latency_ms"]["max"] == pytest.approx(max(data["trace_ms"][2:]))
    assert 1 <= len(data["ops"]) <= 2 and set(data["ops"][0]) == {"name", "op_type", "total_ms", "count", "share"}
    assert list(data["energy"]) == [
        "available", "reason", "source", "rails", "sample_period_ms", "idle_power_w", "average_power_w",
        "energy_per_inference_mj", "energy_above_idle_per_inference_mj", "window_s", "window_too_short", "trace",
        "measured_window_s",
    ]
    assert set(data["energy"]["trace"]) == {"t_s", "power_w"}
    assert BenchmarkResult.from_json(result.to_json()).to_dict() == data
    old = {k: v for k, v in data.items() if k != "decoder"} | {"schema_version": 1}  # written before decoders
    assert BenchmarkResult.from_dict(old).to_dict() == data


def test_latency_statistics_by_hand():
    stats = latency_stats([5.0, 1.0, 4.0, 2.0, 3.0])
    assert stats == {"min": 1.0, "mean": 3.0, "std": pytest.approx(math.sqrt(2.0)), "p50": 3.0, "p90": pytest.approx(4.6),
                     "p95": pytest.approx(4.8), "p99": pytest.approx(4.96), "max": 5.0}
