"""The op lists every layer agrees on: what counts as a compute node, a pooling node, a shape op.

One definition, so calibration, quantization, the TensorRT lint, fp16 conversion and the
accuracy report never disagree about which node is "the conv" of a layer.
"""

from __future__ import annotations

# Nodes with a weight matrix or kernel: the layers int8, weight-only and fp16 act on.
COMPUTE_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# Nodes that reduce over a window or axis; TensorRT runs them in int8 between two int8 layers.
POOLING_OPS: tuple[str, ...] = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean")
# Ops that only move values around: a quantized tensor after them is "the same" tensor.
SHAPE_OPS: tuple[str, ...] = ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity")
# Nodes through which an int8 tensor stays int8 (same scale on input and output).
INT8_PASSTHROUGH_OPS: tuple[str, ...] = (*POOLING_OPS, "Concat", "Pad")
