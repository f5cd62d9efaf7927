"""What every power source implements.

A source either reads instantaneous power per rail (INA3221/INA238 rails, tegrastats) or a
cumulative energy counter (NVML, RAPL: ``cumulative = True``, which also gives ``energy_j``).
Every source takes the filesystem root it reads under, so tests rebuild a board's sysfs in a
temporary folder; nothing switches on a test mode. Sources never invent a value: a sensor that is
present but unreadable raises ``SensorUnavailable`` with the reason, and an absent one is ``None``.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import ClassVar, Dict, List, Optional, Sequence, Union

# Rails that measure the whole module input, best first (POM_5V_IN is the Jetson Nano's name).
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")


class SensorUnavailable(Exception):
    """A sensor exists but cannot be used here; the message says why and what would fix it."""

    def __init__(self, reason: str) -> None:
        super().__init__(" ".join(str(reason).split()))

    @property
    def reason(self) -> str:
        return str(self)


def under_root(root: Union[str, Path], absolute: str) -> Path:
    """``/sys/...`` inside ``root`` (``root`` = "/" is the real system)."""
    return Path(root) / absolute.lstrip("/")


def read_text(path: Path) -> str:
    with open(str(path), encoding="utf-8") as handle:
        return handle.read().strip()


def read_number(path: Path) -> float:
    text = read_text(path)
    try:
        return float(text)
    except ValueError:
        raise OSError("unexpected content " + repr(text[:40]) + " in " + str(path)) from None


def permission_reason(what: str, path: Union[str, Path], fix: str) -> str:
    return what + " found but " + str(path) + " is not readable: permission denied (" + fix + ")"


def probe_readable(paths: Sequence[Path], what: str, fix: str) -> None:
    """Read each file once so a permission problem surfaces at discovery, stated plainly."""
    for path in paths:
        try:
            read_text(path)
        except PermissionError:
            raise SensorUnavailable(permission_reason(what, path, fix)) from None
        except OSError as exc:
            raise SensorUnavailable(what + " found but " + str(path) + " cannot be read (" + str(exc) + ")") from None


def unique_dirs(paths: Sequence[Path]) -> List[Path]:
    """The same hwmon device appears under the driver and under /sys/class/hwmon: keep one of each."""
    seen = set()
    result = []
    for path in paths:
        key = os.path.realpath(str(path))
        if key not in seen:
            seen.add(key)
            result.append(path)
    return result


class PowerSource(abc.ABC):
    """One power sensor; ``read`` gives watts per rail, ``total`` the number the benchmark reports."""

    name: ClassVar[str] = ""
    priority: ClassVar[int] = 100  # lower is tried first: board input rails before component counters
    cumulative: ClassVar[bool] = False

    period_s: float = 0.02  # how often the sensor's value changes (the window must span >= 10 of them)
    rails: List[str]
    total_rail: Optional[str] = None  # the rail that is the module total; None = sum of ``rails``

    @classmethod
    @abc.abstractmethod
    def discover(cls, root: Union[str, Path] = "/") -> Optional[PowerSource]:
        """The source under ``root``, ``None`` if absent; ``SensorUnavailable`` if present but unusable."""

    @abc.abstractmethod
    def read(self) -> Dict[str, float]:
        """Power per rail in watts, now (cumulative sources: averaged since the previous read)."""

    def energy_j(self) -> float:
        """Cumulative energy in joules since the source was opened (cumulative sources only)."""
        raise NotImplementedError(self.name + " is not an energy counter")

    def total(self, reading: Dict[str, float]) -> float:
        if self.total_rail is not None:
            return reading[self.total_rail]
        return float(sum(reading.values()))

    @property
    def description(self) -> str:
        """Names the sensor and what the total is (one rail, or a sum: then it says so)."""
        if self.total_rail is not None:
            return self.name + ": " + self.total_rail
        return self.name + ": sum of " + ", ".join(self.rails)

    def close(self) -> None:
        """Release what the source holds (a subprocess, a library handle)."""
        return None


def choose_total_rail(rails: Sequence[str]) -> Optional[str]:
    for rail in TOTAL_RAILS:
        if rail in rails:
            return rail
    return None
