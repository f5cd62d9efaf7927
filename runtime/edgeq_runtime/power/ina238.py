"""Jetson Thor's carrier-board input (VIN) through an INA238 on the hwmon driver.

``power1_input`` is in **microwatts** (unlike the INA3221's mV and mA). Thor's module rails are on an
INA3221 too; VIN is preferred because it also covers the carrier board, closer to wall power.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from edgeq_runtime.power import register
from edgeq_runtime.power.base import PowerSource, probe_readable, read_number, read_text
from edgeq_runtime.power.ina3221_hwmon import DEFAULT_PERIOD_S, hwmon_dirs, update_period_s

_FIX = "run as root or make the hwmon files readable"


@register
class Ina238Source(PowerSource):
    """INA238 power monitors; one unlabeled monitor is the carrier-board input and is called VIN."""

    name = "ina238"
    priority = 10

    def __init__(self, channels: List[Tuple[str, Path]], period_s: float) -> None:
        self._channels = channels
        self.rails = [rail for rail, _ in channels]
        self.total_rail = "VIN" if "VIN" in self.rails else None
        self.period_s = period_s

    @classmethod
    def discover(cls, root: Union[str, Path] = "/") -> Optional[PowerSource]:
        folders = [f for f in hwmon_dirs(root, "ina238") if (f / "power1_input").exists()]
        channels: List[Tuple[str, Path]] = []
        periods: List[float] = []
        for folder in folders:
            label = None
            for label_file in (folder / "power1_label", folder / "in1_label"):
                if label_file.exists():
                    label = read_text(label_file)
                    break
            if label is None:
                label = "VIN" if len(folders) == 1 else "ina238@" + folder.parent.parent.name
            channels.append((label, folder / "power1_input"))
            period = update_period_s(folder)
            if period is not None:
                periods.append(period)
        if not channels:
            return None
        probe_readable([p for _, p in channels], "INA238 power monitor", _FIX)
        return cls(channels, max(periods) if periods else DEFAULT_PERIOD_S)

    def read(self) -> Dict[str, float]:
        return {rail: read_number(path) / 1e6 for rail, path in self._channels}  # µW → W

    @property
    def description(self) -> str:
        if self.total_rail == "VIN":
            return self.name + ": VIN (carrier-board input, power1_input)"
        return super().description
