"""Ways into edgeq for models that are not ONNX files yet.

``edgeq.frontends.torch`` exports a PyTorch module (``to_onnx``) or a ``file.py:factory`` spec
(``export_factory``) and checks the graph against the module; ``edgeq.frontends.spec`` recognises
such specs. Importing this package loads neither torch nor the exporter: torch is imported inside
the functions that need it, so ``edgeq`` works without it.
"""

from __future__ import annotations

from edgeq.frontends.spec import FactorySpec, is_factory_spec, parse_factory_spec

__all__ = ["FactorySpec", "is_factory_spec", "parse_factory_spec"]
