"""NVFP4 weight-only: MatMul weights as E2M1 blocks of 16 with E4M3 block scales (TensorRT on Thor).

The codec (``edgeq.numerics.codecs.minifloat``) decides the numbers, the format
(``edgeq.graph.formats.nvfp4``) writes ModelOpt's two-level DequantizeLinear. Round to nearest
only: NVFP4's block is fixed at 16 and its scale is itself rounded to E4M3, so the summary says
which MatMuls stayed float and why (K not a multiple of 16, a weight that is not 2-D).
"""

from __future__ import annotations

import re

import numpy as np
import onnx

from edgeq.graph.formats.nvfp4 import OPSET, WriteNvFp4
from edgeq.graph.opset import raise_opset
from edgeq.graph.passes.base import NameNodes
from edgeq.graph.quantizable import find_quantizable, weight_array
from edgeq.numerics.codecs.minifloat import NVFP4_BLOCK, NvFp4, nvfp4_quantize
from edgeq.quantize.api import QuantizeInputs, QuantizeResult, register
from edgeq.quantize.config import NvFp4Config
from edgeq.quantize.summary import NodeDecision, QuantizationSummary

SCHEME = "nvfp4 weight-only: E2M1, blocks of 16 along K, E4M3 block scales, float32 tensor scale (round to nearest)"


@register(NvFp4Config)
def quantize_nvfp4(model: onnx.ModelProto, config: NvFp4Config, inputs: QuantizeInputs) -> QuantizeResult:
    summary = QuantizationSummary(model=inputs.model_path, config=config.to_dict()["_data"])
    model = raise_opset(model, OPSET, "NVFP4 (FLOAT4E2M1 DequantizeLinear)", f"export the model with opset >= {OPSET}")
    NameNodes().apply(model)
    found, skipped = find_quantizable(model, op_types=("MatMul",))
    pattern = re.compile(config.exclude) if config.exclude else None
    weights: dict[str, NvFp4] = {}
    for node in found:
        k = node.weight_shape[0]
        if pattern is not None and pattern.search(node.name):
            summary.add(NodeDecision(node.name, node.op_type, False, reason=f"excluded by --exclude {config.exclude!r}", weight=node.weight))
        elif k % NVFP4_BLOCK:
            summary.add(NodeDecision(node.name, node.op_type, False, weight=node.weight,
                                     reason=f"K={k} is not a multiple of the NVFP4 block ({NVFP4_BLOCK})"))
        else:
            weights[node.name] = nvfp4_quantize(weight_array(model, node.weight).astype(np.float64).T)
            summary.add(NodeDecision(node.name, node.op_type, True, scheme=SCHEME, weight=node.weight, bits=4, method="rtn"))
    for skip in skipped:
        summary.add(NodeDecision(skip.name, skip.op_type, False, reason=skip.reason))
    before = sum(int(q.codes.size) * 4 for q in weights.values())
    WriteNvFp4(weights).apply(model)
    summary.weight_bytes_before = before
    # Half a byte per value, one E4M3 byte per 16 values, 4 bytes per tensor.
    summary.weight_bytes_after = sum(q.codes.size // 2 + q.block_scales.size + 4 for q in weights.values())
    summary.notes.append("TensorRT runs NVFP4 from 10.8 on Blackwell (Thor); onnxruntime 1.32 has no FLOAT4E2M1 kernel")
    return QuantizeResult(model, summary)
