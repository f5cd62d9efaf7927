"""The PyTorch frontend's public names in one place: ``from edgeq.frontends.torch import to_onnx``.

The work lives one concept per module: ``torch_export`` (module → checked ONNX),
``module_names`` (nodes named after the user's layers), ``checkpoint`` (tensors-only
``torch.load``), ``factory_cache`` (``file.py:factory`` specs exported once and cached). None
of them imports torch at import time, so neither does this module. (It is named ``torch.py``
inside a package; ``import torch`` elsewhere still finds the real torch because Python 3 imports
are absolute.)
"""

from __future__ import annotations

from edgeq.frontends.checkpoint import load_checkpoint
from edgeq.frontends.factory_cache import (
    CACHE_FORMAT,
    FactoryModel,
    default_cache_dir,
    export_factory,
    factory_cache_key,
    factory_model_path,
    load_factory_model,
)
from edgeq.frontends.torch_export import DEFAULT_ATOL, DEFAULT_OPSET, DEFAULT_RTOL, TorchExportResult, to_onnx

__all__ = [
    "CACHE_FORMAT",
    "DEFAULT_ATOL",
    "DEFAULT_OPSET",
    "DEFAULT_RTOL",
    "FactoryModel",
    "TorchExportResult",
    "default_cache_dir",
    "export_factory",
    "factory_cache_key",
    "factory_model_path",
    "load_checkpoint",
    "load_factory_model",
    "to_onnx",
]
