"""Jetson INA3221 rails through the hwmon driver (JetPack 5, 6, 7: Orin, Xavier NX on JP5, Thor module).

Layout: ``/sys/bus/i2c/drivers/ina3221/<bus>-<addr>/hwmon/hwmon<N>/`` with ``in<k>_label``,
``in<k>_input`` (bus mV) and ``curr<k>_input`` (mA) for channels 1..3. N changes between boots,
so it is globbed. Labels ``NC`` (not connected) and ``sum of shunt voltages`` are not rails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from edgeq_runtime.power import register
from edgeq_runtime.power.base import (
    PowerSource,
    SensorUnavailable,
    choose_total_rail,
    probe_readable,
    read_number,
    read_text,
    under_root,
    unique_dirs,
)

SKIPPED_LABELS = ("NC", "sum of shunt voltages")
DEFAULT_PERIOD_S = 0.02  # used when the driver has no update_interval file
_FIX = "the INA3221 files are root-only on some JetPack releases: run as root or make them readable"


def hwmon_dirs(root: Union[str, Path], driver: str) -> List[Path]:
    """hwmon folders of ``driver``: under the i2c driver, or any /sys/class/hwmon entry named so."""
    found = sorted(under_root(root, "/sys/bus/i2c/drivers/" + driver).glob("*/hwmon/hwmon*"))
    for candidate in sorted(under_root(root, "/sys/class/hwmon").glob("hwmon*")):
        try:
            if read_text(candidate / "name") == driver:
                found.append(candidate)
        except OSError:
            continue
    return unique_dirs(found)


def update_period_s(folder: Path) -> Optional[float]:
    try:
        milliseconds = read_number(folder / "update_interval")
    except OSError:
        return None
    return milliseconds / 1000.0 if milliseconds > 0 else None


@register
class Ina3221HwmonSource(PowerSource):
    """Rails of every INA3221 chip on the board; total = VDD_IN, else the sum of the connected rails."""

    name = "ina3221-hwmon"
    priority = 20

    def __init__(self, channels: List[Tuple[str, Path, Path]], period_s: float) -> None:
        self._channels = channels
        self.rails = [rail for rail, _, _ in channels]
        self.total_rail = choose_total_rail(self.rails)
        self.period_s = period_s

    @classmethod
    def discover(cls, root: Union[str, Path] = "/") -> Optional[PowerSource]:
        channels: List[Tuple[str, Path, Path]] = []
        periods: List[float] = []
        for folder in hwmon_dirs(root, "ina3221"):
            for label_file in sorted(folder.glob("in*_label")):
                index = label_file.name[len("in"):-len("_label")]
                try:
                    label = read_text(label_file)
                except PermissionError:
                    raise SensorUnavailable(
                        "INA3221 power rails found but " + str(label_file) + " is not readable: permission denied ("
                        + _FIX + ")"
                    ) from None
                voltage, current = folder / ("in" + index + "_input"), folder / ("curr" + index + "_input")
                if label in SKIPPED_LABELS or not current.exists():
                    continue  # not connected, the shunt-sum channel, or a shunt-voltage channel
                enable = folder / ("in" + index + "_enable")
                if enable.exists() and read_text(enable) == "0":
                    continue
                rail = label
                if rail in [c[0] for c in channels]:
                    rail = label + "@" + folder.parent.parent.name
                channels.append((rail, voltage, current))
            period = update_period_s(folder)
            if period is not None:
                periods.append(period)
        if not channels:
            return None
        probe_readable([p for _, v, c in channels for p in (v, c)], "INA3221 power rails", _FIX)
        return cls(channels, max(periods) if periods else DEFAULT_PERIOD_S)

    def read(self) -> Dict[str, float]:
        # mV × mA = µW
        return {rail: read_number(v) * read_number(c) / 1e6 for rail, v, c in self._channels}

    @property
    def description(self) -> str:
        if self.total_rail is not None:
            return self.name + ": " + self.total_rail
        return self.name + ": sum of connected rails " + ", ".join(self.rails) + " (this board has no VDD_IN rail)"
