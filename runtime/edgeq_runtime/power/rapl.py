"""x86 CPU package energy through the powercap RAPL interface.

``/sys/class/powercap/intel-rapl:<n>/{name,energy_uj,max_energy_range_uj}``. The counter wraps at
``max_energy_range_uj``: when a reading goes down the range is added back. Sub-domains
``intel-rapl:<n>:<m>`` (core, uncore, dram) nest inside their package and are not added again; a
``psys`` domain covers the whole platform including the packages, so when present it is used alone.
Root-only since 2020 (CVE-2020-8694).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from edgeq_runtime.power import register
from edgeq_runtime.power.base import (
    PowerSource,
    SensorUnavailable,
    permission_reason,
    read_number,
    read_text,
    under_root,
)

_TOP_LEVEL = re.compile(r"^intel-rapl:\d+$")
_FIX = ("energy_uj is root-only since Linux 5.10 for CVE-2020-8694: run as root, or "
        "sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj")


@register
class RaplSource(PowerSource):
    """Package (or platform) energy counters with wraparound handled."""

    name = "rapl"
    priority = 60
    cumulative = True

    def __init__(self, domains: List[Tuple[str, Path, float]]) -> None:
        self._domains = domains
        self.rails = [name for name, _, _ in domains]
        self.total_rail = None
        self.period_s = 0.05  # RAPL should not be read faster than about every 50 ms
        self._lock = threading.Lock()
        self._last_raw = [read_number(path) for _, path, _ in domains]
        self._accumulated_uj = [0.0 for _ in domains]
        self._previous: Tuple[float, List[float]] = (time.perf_counter(), list(self._accumulated_uj))

    @classmethod
    def discover(cls, root: Union[str, Path] = "/") -> Optional[PowerSource]:
        folders = [f for f in sorted(under_root(root, "/sys/class/powercap").glob("intel-rapl:*")) if _TOP_LEVEL.match(f.name)]
        domains: List[Tuple[str, Path, float]] = []
        for folder in folders:
            energy = folder / "energy_uj"
            if not energy.exists():
                continue
            try:
                name = read_text(folder / "name") if (folder / "name").exists() else folder.name
                read_text(energy)
                max_range = read_number(folder / "max_energy_range_uj")
            except PermissionError as exc:
                raise SensorUnavailable(permission_reason("RAPL energy counters", exc.filename or energy, _FIX)) from None
            except OSError as exc:
                raise SensorUnavailable("RAPL energy counters found but " + str(folder) + " cannot be read (" + str(exc)
                                        + ")") from None
            domains.append((name + "@" + folder.name if name in [d[0] for d in domains] else name, energy, max_range))
        if not domains:
            return None
        platform = [d for d in domains if d[0].startswith("psys")]
        return cls(platform if platform else domains)

    @property
    def description(self) -> str:
        if len(self.rails) == 1 and self.rails[0].startswith("psys"):
            return self.name + ": psys (whole platform)"
        return self.name + ": sum of " + ", ".join(self.rails) + " (CPU packages only; not the rest of the machine)"

    def _accumulate(self) -> List[float]:
        with self._lock:
            for i, (_, path, max_range) in enumerate(self._domains):
                raw = read_number(path)
                delta = raw - self._last_raw[i]
                if delta < 0:  # the counter wrapped around
                    delta += max_range
                self._accumulated_uj[i] += delta
                self._last_raw[i] = raw
            return list(self._accumulated_uj)

    def energy_j(self) -> float:
        return sum(self._accumulate()) / 1e6

    def read(self) -> Dict[str, float]:
        """Average power per domain since the previous ``read`` (or since the source was opened)."""
        totals = self._accumulate()
        now = time.perf_counter()
        previous, self._previous = self._previous, (now, totals)
        dt = max(now - previous[0], 1e-6)
        return {rail: (totals[i] - previous[1][i]) / 1e6 / dt for i, rail in enumerate(self.rails)}
