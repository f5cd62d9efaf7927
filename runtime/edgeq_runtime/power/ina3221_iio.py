"""Jetson INA3221 rails through the older IIO driver (JetPack 4: Nano, TX2, Xavier).

Layout: ``/sys/bus/i2c/drivers/ina3221x/<bus>-<addr>/iio:device<N>/`` with ``rail_name_<i>`` and
``in_power<i>_input`` (mW) for i = 0..2.
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
)

# The IIO driver exposes no update interval; its default averaging gives new values about this often.
ASSUMED_PERIOD_S = 0.02
_FIX = "JetPack 4 makes these files root-only: run as root"


@register
class Ina3221IioSource(PowerSource):
    """Rails of the JetPack 4 INA3221 driver; total = VDD_IN / POM_5V_IN, else the sum of the rails."""

    name = "ina3221-iio"
    priority = 30

    def __init__(self, channels: List[Tuple[str, Path]]) -> None:
        self._channels = channels
        self.rails = [rail for rail, _ in channels]
        self.total_rail = choose_total_rail(self.rails)
        self.period_s = ASSUMED_PERIOD_S

    @classmethod
    def discover(cls, root: Union[str, Path] = "/") -> Optional[PowerSource]:
        channels: List[Tuple[str, Path]] = []
        for device in sorted(under_root(root, "/sys/bus/i2c/drivers/ina3221x").glob("*/iio:device*")):
            for name_file in sorted(device.glob("rail_name_*")):
                index = name_file.name[len("rail_name_"):]
                power = device / ("in_power" + index + "_input")
                try:
                    rail = read_text(name_file)
                except PermissionError:
                    raise SensorUnavailable(
                        "INA3221 (IIO) power rails found but " + str(name_file) + " is not readable: permission denied ("
                        + _FIX + ")"
                    ) from None
                if rail in ("NC", "") or not power.exists():
                    continue
                if rail in [c[0] for c in channels]:
                    rail = rail + "@" + device.parent.name
                channels.append((rail, power))
        if not channels:
            return None
        probe_readable([p for _, p in channels], "INA3221 (IIO) power rails", _FIX)
        return cls(channels)

    def read(self) -> Dict[str, float]:
        return {rail: read_number(path) / 1000.0 for rail, path in self._channels}  # mW → W
