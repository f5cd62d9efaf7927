"""ONNX encodings of block-quantized weights, one module per format.

Each module turns a :class:`~edgeq.numerics.codecs.BlockQuantized` weight into nodes and
initializers (an :class:`Emitted`) and never does quantization math itself. What onnxruntime
1.32 can execute was measured, not assumed; combinations it cannot run (or runs wrongly) are
refused here with the alternative named.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx


@dataclass
class Emitted:
    """Nodes and initializers that replace one float node, and opsets they need."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    opsets: dict[str, int] = field(default_factory=dict)  # domain -> minimum version

    def extend(self, other: Emitted) -> None:
        self.nodes.extend(other.nodes)
        self.initializers.extend(other.initializers)
        for domain, version in other.opsets.items():
            self.opsets[domain] = max(self.opsets.get(domain, 0), version)

    def nbytes(self) -> int:
        return sum(_tensor_nbytes(t) for t in self.initializers)


def _tensor_nbytes(tensor: onnx.TensorProto) -> int:
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    from onnx import numpy_helper

    return int(numpy_helper.to_array(tensor).nbytes)


MS_DOMAIN = "com.microsoft"
