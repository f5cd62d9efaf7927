"""edgeq_runtime: run an edgeq bundle on the board and measure it.

Needs numpy and onnxruntime or tensorrt; never imports edgeq or torch. Python 3.8+.
``import edgeq_runtime`` stays cheap: the public names below load their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "BenchmarkResult": "edgeq_runtime.result",
    "benchmark": "edgeq_runtime.bench",
    "BundleError": "edgeq_runtime.errors",
    "Manifest": "edgeq_runtime.manifest",
    "FileEntry": "edgeq_runtime.manifest",
    "TensorSpec": "edgeq_runtime.manifest",
    "verify_bundle": "edgeq_runtime.manifest",
    "Session": "edgeq_runtime.session",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError("module 'edgeq_runtime' has no attribute " + repr(name))
    return getattr(importlib.import_module(module), name)
