"""NVIDIA GPU energy through NVML's total-energy counter (desktop and datacenter GPUs, Volta+).

``nvmlDeviceGetTotalEnergyConsumption`` counts mJ since the driver loaded and updates every
20-100 ms, so a window shorter than that reads zero: the benchmark flags windows under ten periods.
Needs ``nvidia-ml-py`` (module ``pynvml``), imported only here. Jetson boards answer NotSupported;
their rails are read by the INA3221 sources instead. NVML reads the live driver, not files, so it is
only consulted for the real system root "/".
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from edgeq_runtime.power import register
from edgeq_runtime.power.base import PowerSource, SensorUnavailable


def _import_pynvml() -> Optional[Any]:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


@register
class NvmlSource(PowerSource):
    """Sum of every GPU's energy counter."""

    name = "nvml"
    priority = 50
    cumulative = True

    def __init__(self, nvml: Any, handles: List[Tuple[str, Any]]) -> None:
        self._nvml = nvml
        self._handles = handles
        self.rails = [rail for rail, _ in handles]
        self.total_rail = None
        self.period_s = 0.1  # the counter updates every 20-100 ms: take the slow end
        self._lock = threading.Lock()
        self._start_mj = [float(nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for _, h in handles]
        self._previous: Tuple[float, List[float]] = (time.perf_counter(), [0.0 for _ in handles])

    @classmethod
    def discover(cls, root: Union[str, Path] = "/") -> Optional[PowerSource]:
        if str(Path(root).resolve()) != "/":
            return None
        nvml = _import_pynvml()
        if nvml is None:
            return None
        try:
            nvml.nvmlInit()
        except nvml.NVMLError:  # LibraryNotFound / DriverNotLoaded: no NVIDIA driver here
            return None
        handles: List[Tuple[str, Any]] = []
        unsupported: List[str] = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            label = "GPU" + str(index) + " " + (name.decode() if isinstance(name, bytes) else str(name))
            try:
                nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            except nvml.NVMLError as exc:
                unsupported.append(label + " (" + str(exc) + ")")
                continue
            handles.append((label, handle))
        if handles:
            return cls(nvml, handles)
        nvml.nvmlShutdown()
        if unsupported:
            raise SensorUnavailable(
                "NVML found " + ", ".join(unsupported) + " but no total-energy counter (needs a Volta or newer GPU)"
            )
        return None

    def _energy_mj(self) -> List[float]:
        with self._lock:
            return [float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h)) - start
                    for (_, h), start in zip(self._handles, self._start_mj)]

    def energy_j(self) -> float:
        return sum(self._energy_mj()) / 1000.0

    def read(self) -> Dict[str, float]:
        """Average power per GPU since the previous ``read`` (or since the source was opened)."""
        totals = self._energy_mj()
        now = time.perf_counter()
        previous, self._previous = self._previous, (now, totals)
        dt = max(now - previous[0], 1e-6)
        return {rail: (totals[i] - previous[1][i]) / 1000.0 / dt for i, rail in enumerate(self.rails)}

    @property
    def description(self) -> str:
        return self.name + ": total-energy counter of " + ", ".join(self.rails) + " (GPU only, not the host)"

    def close(self) -> None:
        if self._handles:
            self._handles = []
            with contextlib.suppress(self._nvml.NVMLError):  # the driver went away: nothing to release
                self._nvml.nvmlShutdown()
