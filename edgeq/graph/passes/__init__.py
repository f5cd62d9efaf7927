"""Graph rewrites, one per module: each is a ``Pass`` whose ``call(model)`` returns a ``PassResult``.

Passes never do numeric work inline beyond moving arrays around: the math they apply
(folding, equalization scales, quantization) lives in pure-numpy modules with their own tests.
"""

from edgeq.graph.passes.base import Pass, PassManager, PassResult

__all__ = ["Pass", "PassManager", "PassResult"]
