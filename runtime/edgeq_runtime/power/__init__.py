"""Power sources, one file each, found by scanning this package; ``discover`` picks the best one here.

Order (``priority``): board input rails first (INA238 VIN on Thor, INA3221 hwmon, INA3221 IIO,
tegrastats), then component counters (NVML GPU energy, RAPL CPU energy).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Type, TypeVar, Union

from edgeq_runtime.power.base import PowerSource, SensorUnavailable

__all__ = ["PowerSource", "SensorUnavailable", "discover", "register", "source_classes"]

_REGISTRY: Dict[str, Type[PowerSource]] = {}
_LOADED = False

S = TypeVar("S", bound=Type[PowerSource])


def register(cls: S) -> S:
    if not cls.name:
        raise TypeError(cls.__name__ + " has no source name")
    _REGISTRY[cls.name] = cls
    return cls


def source_classes() -> List[Type[PowerSource]]:
    global _LOADED
    if not _LOADED:
        for module in pkgutil.iter_modules(__path__):
            if module.name not in ("base", "sampler") and not module.name.startswith("_"):
                importlib.import_module(__name__ + "." + module.name)
        _LOADED = True
    return sorted(_REGISTRY.values(), key=lambda cls: (cls.priority, cls.name))


def discover(root: Union[str, Path] = "/") -> Tuple[Optional[PowerSource], Optional[str]]:
    """The best readable source under ``root``, or ``(None, reason)``.

    A sensor that exists but is unreadable (RAPL is root-only) makes the reason say so plainly,
    rather than the generic "nothing found".
    """
    problems: List[str] = []
    for cls in source_classes():
        try:
            source = cls.discover(root)
        except SensorUnavailable as exc:
            problems.append(exc.reason)
            continue
        if source is not None:
            return source, None
    if problems:
        return None, "; ".join(problems)
    return None, "no INA3221, INA238, tegrastats, NVML or RAPL sensor found under " + str(root)
