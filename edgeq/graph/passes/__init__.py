"""Graph rewrites, one per module: each is a ``GraphPass`` (an onnx-ir ``InPlacePass``).

``pass_(ir_model)`` returns onnx-ir's ``PassResult``; ``pass_.apply(proto)`` rewrites a protobuf
model in place. Passes never do numeric work inline beyond moving arrays around: the math they
apply (folding, equalization scales, quantization) lives in ``edgeq.numerics`` with its own tests.
"""

from edgeq.graph.passes.base import GraphPass

__all__ = ["GraphPass"]
