"""Weight-only codes for the weights MatMulNBits cannot hold: convolutions, LSTM/GRU/RNN, subgraphs.

Conv and ConvTranspose kernels get one scale per output channel; the ``W`` and ``R`` of a
recurrent layer blocks along the input dimension (int8: one block per row, so the scales cost
nothing; int4: ``--block-size``), one row per direction and gate unit; a MatMul/Gemm inside an
``If``/``Loop``/``Scan`` body blocks along K as ``--format qdq`` does at the top level. All of
them through a standard ``DequantizeLinear`` the consumer reads in place of the float tensor
(``edgeq.graph.passes.weight_dq``), which onnxruntime and TensorRT both run.

GPTQ and AWQ weigh a weight by its layer's input statistics, which are collected for top-level
MatMul/Gemm inputs only: these weights use HQQ (the best data-free fit) instead, and say so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.graph.formats import qdq
from edgeq.graph.names import FreshNames
from edgeq.graph.opset import raise_opset
from edgeq.graph.passes.base import serialize_into
from edgeq.graph.passes.weight_dq import (
    RECURRENT_OPS,
    DqPlan,
    DqSource,
    non_weight_readers,
    plan_dq_weights,
    rewrite_source,
    source_array,
    walk,
    weight_bytes_all,
)
from edgeq.numerics import weight_only as algorithms
from edgeq.numerics.codecs import get_codec
from edgeq.numerics.weight_only.common import DATA_DRIVEN, weight_sqnr_db
from edgeq.quantize.api import QuantizeResult
from edgeq.quantize.config import WeightFormat, WeightOnlyConfig
from edgeq.quantize.coverage import Site, complete
from edgeq.quantize.summary import NodeDecision, QuantizationSummary

# Top-level op types whose weights go through DequantizeLinear here (MatMul/Gemm have their own formats).
TOP_LEVEL_OPS = ("Conv", "ConvTranspose", *RECURRENT_OPS)


@dataclass
class DqOutcome:
    decisions: list[NodeDecision] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bytes_before: int = 0  # the float sources rewritten
    bytes_after: int = 0  # their codes, scales and zero points


def refusal(config: WeightOnlyConfig) -> str | None:
    """Why ``config``'s codes cannot be written as DequantizeLinear on these weights, or None."""
    if config.weights in (WeightFormat.NF4, WeightFormat.FP4):
        return f"{config.weights.value} has no DequantizeLinear form; convolution and recurrent weights take --weights int8 or int4"
    if config.weights is WeightFormat.INT2:
        return "int2 DequantizeLinear needs opset 25 and onnxruntime runs it only before MatMul; use --weights int4 or int8 for these weights"
    return None


def plan(
    model: onnx.ModelProto | ir.Model, config: WeightOnlyConfig, top_level_ops: tuple[str, ...] = TOP_LEVEL_OPS
) -> tuple[ir.Model, DqPlan]:
    ir_model = ir.serde.deserialize_model(model) if isinstance(model, onnx.ModelProto) else model
    return ir_model, plan_dq_weights(ir_model, top_level_ops, config.exclude)


def _block(source: DqSource, config: WeightOnlyConfig) -> int:
    if source.per_channel or (config.weights is WeightFormat.INT8 and source.op_type in RECURRENT_OPS):
        return source.cols
    return min(config.block_size, source.cols)


def required_opset(model: onnx.ModelProto, config: WeightOnlyConfig, top_level_ops: tuple[str, ...] = TOP_LEVEL_OPS) -> int:
    """The default-domain opset these DequantizeLinear nodes need (0 when there are none)."""
    if refusal(config) is not None:
        return 0
    _, found = plan(model, config, top_level_ops)
    sources = found.sources
    if not sources:
        return 0
    if config.weights is WeightFormat.INT8 and all(s.per_channel for s in sources):
        return 13
    return 21


def raise_for(model: onnx.ModelProto, config: WeightOnlyConfig) -> onnx.ModelProto:
    """``model`` at the opset its convolution / recurrent / subgraph DequantizeLinear nodes need."""
    version = required_opset(model, config)
    if not version:
        return model
    return raise_opset(model, version, "DequantizeLinear on convolution and recurrent weights",
                       "export the model at that opset, or pass --exclude for those nodes")


def _fresh_names(model: ir.Model) -> FreshNames:
    taken: set[str] = set(model.graph.initializers)
    taken |= {v.name for v in (*model.graph.inputs, *model.graph.outputs) if v.name}
    for site in walk(model.graph):
        taken.add(site.node.name or "")
        taken.update(v.name for v in (*site.node.inputs, *site.node.outputs) if v is not None and v.name)
    return FreshNames(taken)


def quantize_dq_weights(model: onnx.ModelProto, config: WeightOnlyConfig, top_level_ops: tuple[str, ...] = TOP_LEVEL_OPS) -> DqOutcome:
    """Quantize every planned weight of ``model`` in place; the summary rows and notes for them.

    ``top_level_ops``: the op types handled at the top level (inside subgraphs: all of them).
    """
    outcome = DqOutcome()
    ir_model, found = plan(model, config, top_level_ops)
    why_not = refusal(config)
    for left in found.left:
        outcome.decisions.append(NodeDecision(left.name, left.op_type, False, reason=left.reason, weight=left.weight, subgraph=left.subgraph))
    if not found.nodes:
        return outcome
    if why_not is not None:
        for node in found.nodes:
            outcome.decisions.append(NodeDecision(node.name, node.op_type, False, reason=why_not,
                                                  weight=", ".join(s.name for s in node.sources), subgraph=node.subgraph))
        return outcome
    shared = {id(s): readers for s in found.sources if (readers := non_weight_readers(s))}
    codec = get_codec(config.weights.value, config.symmetric, positive_scales=True)
    method = config.method.value if config.method.value not in DATA_DRIVEN else "hqq"
    if method != config.method.value:
        outcome.notes.append(
            f"--method {config.method.value} weighs MatMul/Gemm inputs only; convolution, recurrent and subgraph weights use hqq"
        )
    names = _fresh_names(ir_model)
    written: dict[int, tuple[str, float]] = {}  # source -> (scheme text, weight SQNR)
    for source in found.sources:
        if id(source) in shared:
            continue
        w = source_array(source)
        dtype = np.dtype(np.float16 if w.dtype == np.float16 else np.float32)
        matrix = qdq.matrix_view(w.astype(np.float32), source.axis, source.per_channel)
        block = _block(source, config)
        result = algorithms.run(method, codec, matrix, block)
        prefix = names(_safe(source.name))
        emitted, _ = qdq.dequantize_weight(result.quantized, source.shape, source.axis, source.per_channel, prefix, dtype)
        rewrite_source(ir_model, source, emitted, names(f"{prefix}_dq"))
        outcome.bytes_before += int(w.nbytes)
        outcome.bytes_after += emitted.nbytes()
        kind = "asym" if result.quantized.zero_points is not None else "sym"
        layout = f"per-channel (axis {source.axis})" if source.per_channel else f"block{block} along axis {source.axis}"
        written[id(source)] = (f"{codec.name} {layout} {kind} {method}, DequantizeLinear", weight_sqnr_db(matrix, result))
    for node in found.nodes:
        weights = ", ".join(s.name for s in node.sources)
        blocked = [s for s in node.sources if id(s) in shared]
        if blocked:
            also = ", ".join(shared[id(blocked[0])][:3])
            outcome.decisions.append(NodeDecision(node.name, node.op_type, False, weight=weights, subgraph=node.subgraph,
                                                  reason=f"weight {blocked[0].name} is also read as data by {also}"))
            continue
        texts = sorted({written[id(s)][0] for s in node.sources})
        scheme = "; ".join(texts)
        if node.through:
            scheme += f" (the float source, read through {', '.join(node.through)})"
        outcome.decisions.append(NodeDecision(
            node.name, node.op_type, True, scheme=scheme, weight=weights, bits=float(codec.bits),
            block_size=None, method=method, subgraph=node.subgraph,
            error={"weight_sqnr_db": round(min(written[id(s)][1] for s in node.sources), 3)},
        ))
    serialize_into(model, ir_model, {info.name for info in model.graph.value_info})
    return outcome


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", name).strip("_") or "weight"


def finish(model: onnx.ModelProto, summary: QuantizationSummary, config: WeightOnlyConfig, sites: list[Site]) -> QuantizeResult:
    """After the MatMul/Gemm/Gather rewrite: these weights, then every node accounted for in ``summary``."""
    outcome = quantize_dq_weights(model, config)
    for decision in outcome.decisions:
        summary.add(decision)
    summary.notes.extend(outcome.notes)
    complete(summary, sites, "weight-only")
    summary.weight_bytes_after = weight_bytes_all(model)
    return QuantizeResult(model, summary)
