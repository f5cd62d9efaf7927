"""Background power sampling and the energy integral over marked windows.

A thread reads the source every ``interval_s`` while the benchmark runs; ``mark()`` takes a sample
at once and returns its time, so window edges coincide with real readings. Instantaneous sources
are integrated with the trapezoid rule; counter sources (RAPL, NVML) record cumulative energy and a
window's energy is the counter difference, which is exact up to the counter's own resolution.
The clock is a parameter so tests can drive time deterministically and compare with an analytic
integral; the source still reads its real files.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, List, Optional, Tuple

import numpy as np

from edgeq_runtime.power.base import PowerSource

MIN_INTERVAL_S = 0.01  # reading sysfs faster than this costs CPU the model under test would notice


class PowerSampler:
    """Records (time, total power) or (time, cumulative energy) from one source on a thread."""

    def __init__(
        self,
        source: PowerSource,
        interval_s: Optional[float] = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.source = source
        self.interval_s = float(interval_s) if interval_s is not None else max(source.period_s, MIN_INTERVAL_S)
        self._clock = clock
        self._origin: Optional[float] = None
        self._times: List[float] = []
        self._values: List[float] = []  # watts, or joules for cumulative sources
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.error: Optional[str] = None

    # ---- recording -------------------------------------------------------------------------------
    def start(self) -> None:
        self._origin = None
        self.sample()  # the first sample defines time zero
        self._thread = threading.Thread(target=self._loop, name="edgeq-power-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()
            if self.error is not None:
                return

    def sample(self) -> float:
        """Read the source now; returns the sample's time (seconds since ``start``).

        A read that fails (a sensor file vanished or became unreadable mid-run) is recorded in
        ``error`` and ends the recording: no value is made up for it.
        """
        with self._lock:
            now = self._clock()
            if self._origin is None:
                self._origin = now
            t = now - self._origin
            if self._times and t <= self._times[-1]:
                t = self._times[-1] + 1e-9  # keep times strictly increasing for interpolation
            if self.error is not None:
                return t
            try:
                if self.source.cumulative:
                    value = self.source.energy_j()
                else:
                    value = self.source.total(self.source.read())
            except (OSError, KeyError) as exc:  # KeyError: the total rail vanished from tegrastats output
                self.error = (type(exc).__name__ + ": " + str(exc)) if isinstance(exc, KeyError) else str(exc)
                return t
            self._times.append(t)
            self._values.append(float(value))
            return t

    def mark(self) -> float:
        """A window edge: sample now and return the time."""
        return self.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> PowerSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- results ----------------------------------------------------------------------------------
    @property
    def sample_count(self) -> int:
        return len(self._times)

    def energy_between(self, t0: float, t1: float) -> float:
        """Joules between two times (normally two marks)."""
        with self._lock:
            times = np.asarray(self._times, dtype=np.float64)
            values = np.asarray(self._values, dtype=np.float64)
        if t1 <= t0:
            return 0.0
        if self.source.cumulative:
            start, end = np.interp([t0, t1], times, values)
            return float(end - start)
        inside = (times > t0) & (times < t1)
        xs = np.concatenate([[t0], times[inside], [t1]])
        ys = np.interp(xs, times, values)
        return float(np.sum((ys[1:] + ys[:-1]) * 0.5 * np.diff(xs)))

    def samples_between(self, t0: float, t1: float) -> int:
        with self._lock:
            return sum(1 for t in self._times if t0 <= t <= t1)

    def trace(self) -> Tuple[List[float], List[float]]:
        """(time s, power W); counter sources give the mean power of each interval at its midpoint."""
        with self._lock:
            times = np.asarray(self._times, dtype=np.float64)
            values = np.asarray(self._values, dtype=np.float64)
        if not self.source.cumulative:
            return times.tolist(), values.tolist()
        if times.size < 2:
            return [], []
        power = np.diff(values) / np.diff(times)
        return ((times[1:] + times[:-1]) * 0.5).tolist(), power.tolist()
