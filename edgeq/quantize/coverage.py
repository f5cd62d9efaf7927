"""No node missing from a summary: every node of the graph and of its subgraphs is accounted for.

A scheme names the nodes it quantized or refused. This adds the rest: a node that holds a
weight (a Conv, MatMul, Gemm, LSTM, GRU or RNN, at the top level or in an ``If``/``Loop``/
``Scan`` body) and that no scheme row names gets a row with the reason it stayed float; the
nodes with no weight of their own are counted by op type in one note. A run that compressed
nothing says so as a warning, with the option that would compress something.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import onnx
import onnx_ir as ir

from edgeq.graph.passes.weight_dq import RECURRENT_OPS, WEIGHT_SLOTS, walk
from edgeq.quantize.summary import NodeDecision, QuantizationSummary


@dataclass(frozen=True)
class Site:
    name: str
    op_type: str
    subgraph: str
    domain: str


def census(model: onnx.ModelProto | ir.Model) -> list[Site]:
    """Every node of ``model`` and its subgraphs, named as the plans name them (name or ``<op>_<index>``)."""
    ir_model = ir.serde.deserialize_model(model) if isinstance(model, onnx.ModelProto) else model
    return [Site(s.name, s.node.op_type, s.subgraph, s.node.domain) for s in walk(ir_model.graph)]


def _int8_reason(site: Site) -> str:
    if site.subgraph:
        return f"inside {site.subgraph}: int8 Q/DQ placement covers the top-level graph only; weight-only --weights int8 reaches subgraphs"
    if site.op_type in RECURRENT_OPS:
        return f"int8 W8A8 has no {site.op_type} kernel with int8 activations; --weights int8 without --activations compresses its W and R"
    return f"int8 W8A8 does not cover {site.op_type} here"


def _weight_only_reason(site: Site) -> str:
    return f"no weight-only format for {site.op_type} here"


REASONS = {"int8": _int8_reason, "weight-only": _weight_only_reason}
HINTS = {
    "int8": "weight-only --weights int8 (no --activations) compresses convolution, LSTM/GRU and subgraph weights",
    "weight-only": "--weights int8 or int4 covers MatMul, Gemm, Gather tables, Conv, ConvTranspose, LSTM, GRU and RNN weights",
}


def complete(summary: QuantizationSummary, sites: list[Site], scheme: str) -> None:
    """Add to ``summary`` every weight-holding node it does not name, count the others, warn on nothing done."""
    named = {(d.name, d.subgraph) for d in summary.nodes}
    weightless: Counter[str] = Counter()
    for site in sites:
        if (site.name, site.subgraph) in named:
            continue
        if site.op_type in WEIGHT_SLOTS and site.domain in ("", "ai.onnx"):
            summary.add(NodeDecision(site.name, site.op_type, False, reason=REASONS[scheme](site), subgraph=site.subgraph))
        else:
            weightless[site.op_type if site.domain in ("", "ai.onnx") else f"{site.domain}.{site.op_type}"] += 1
    if weightless:
        counted = ", ".join(f"{count} {op}" for op, count in sorted(weightless.items(), key=lambda kv: (-kv[1], kv[0])))
        summary.notes.append(f"nodes with no weight to quantize (unchanged): {counted}")
    if not summary.quantized:
        summary.warnings.append(nothing_compressed(summary, scheme))


def nothing_compressed(summary: QuantizationSummary, scheme: str) -> str:
    """The warning for a run that wrote the model with no weight compressed: why, and what would."""
    left = summary.left_in_float
    if not left:
        return "nothing was compressed: the model has no Conv, ConvTranspose, MatMul, Gemm, Gather table, LSTM, GRU or RNN weight"
    reasons = Counter(node.reason for node in left)
    reason, count = reasons.most_common(1)[0]
    example = next(node for node in left if node.reason == reason)
    return (
        f"nothing was compressed: {len(left)} node(s) with weights left in float ({count} because: {reason}; "
        f"e.g. {example.name}); {HINTS[scheme]}"
    )
