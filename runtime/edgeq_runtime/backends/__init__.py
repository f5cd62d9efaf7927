"""Execution backends, one file each, found by scanning this package.

Adding a backend is adding a module here with a ``@register`` class; nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Dict, List, Type, TypeVar

from edgeq_runtime.backends.base import Backend, BackendOptions, OpTime
from edgeq_runtime.errors import BundleError

__all__ = ["Backend", "BackendOptions", "OpTime", "backend_class", "backend_names", "register"]

_REGISTRY: Dict[str, Type[Backend]] = {}
_LOADED = False

B = TypeVar("B", bound=Type[Backend])


def register(cls: B) -> B:
    """Class decorator: make a backend selectable by its ``name``."""
    if not cls.name:
        raise TypeError(cls.__name__ + " has no backend name")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(__name__ + "." + module.name)
    _LOADED = True


def backend_names() -> List[str]:
    _load_all()
    return sorted(_REGISTRY)


def backend_class(name: str) -> Type[Backend]:
    _load_all()
    if name not in _REGISTRY:
        raise BundleError("unknown backend " + repr(name) + "; choose one of: auto, " + ", ".join(sorted(_REGISTRY)))
    return _REGISTRY[name]

