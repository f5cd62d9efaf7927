"""Ways into edgeq for models that are not ONNX files yet.

``edgeq.frontends.resolve`` turns a model argument (an ONNX path or a ``file.py:factory`` spec)
into an ONNX path, for the entry points that accept one; ``edgeq.frontends.spec`` recognises such
specs; ``edgeq.frontends.torch`` exports a PyTorch module (``to_onnx``) or a spec
(``export_factory``) and checks the graph against the module. Importing this package loads
neither torch nor the exporter: torch is imported inside the functions that need it, so ``edgeq``
works without it.
"""

from __future__ import annotations

from edgeq.frontends.resolve import load_model_spec, resolve_model
from edgeq.frontends.spec import FactorySpec, is_factory_spec, parse_factory_spec

__all__ = ["FactorySpec", "is_factory_spec", "load_model_spec", "parse_factory_spec", "resolve_model"]
