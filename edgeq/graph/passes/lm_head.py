"""The weight-only plan for language models: the LM head, a table tied to it, and every other node.

On top of :func:`~edgeq.graph.passes.weight_only.plan_targets` this says three things a decoder
needs: which target is the LM head (the MatMul/Gemm producing ``logits``), which MatMul reads an
initializer through a ``Transpose`` (a tied head: ``MatMul(hidden, Transpose(table))``, the weight
is then the table itself, ``[vocab, hidden]`` = ``[N, K]``), and which Gather shares its table
with such a head (``Gemm(transB=1)`` on the table is the other spelling of the tie). Every
MatMul/Gemm/Gather the plan does not cover is listed with a reason, so a summary names them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.graph.decoder import lm_head_node
from edgeq.graph.passes.base import to_ir
from edgeq.graph.passes.weight_only import FLOAT_TYPES, LeftInFloat, WeightTarget, plan_targets

LISTED_OPS = ("MatMul", "Gemm", "Gather")


@dataclass
class Tie:
    """An LM head (or any MatMul/Gemm) reading a Gather's table as ``[N, K]`` = ``[vocab, hidden]``."""

    head: WeightTarget
    table: str
    gather: WeightTarget | None  # None when the Gather stays float (--no-embeddings, --exclude)
    gather_name: str


@dataclass
class DecoderPlan:
    targets: list[WeightTarget]
    left: list[LeftInFloat]
    ties: list[Tie]

    def tie_of(self, target: WeightTarget) -> Tie | None:
        """The tie ``target`` is the head or the Gather of, if any."""
        for tie in self.ties:
            if tie.head is target or tie.gather is target:
                return tie
        return None


def _name(node: ir.Node, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def _transposed_initializer(node: ir.Node) -> ir.Value | None:
    """The 2-D float initializer a MatMul's B reads through a plain ``Transpose``, if that is what B is."""
    b = node.inputs[1] if len(node.inputs) > 1 else None
    producer = b.producer() if b is not None else None
    if producer is None or producer.op_type != "Transpose" or producer.inputs[0] is None:
        return None
    source = producer.inputs[0]
    perm = producer.attributes.get_ints("perm", None)
    if source.const_value is None or len(source.const_value.shape) != 2 or (perm is not None and list(perm) != [1, 0]):
        return None
    return source if int(source.const_value.dtype) in FLOAT_TYPES else None


def plan_decoder(
    model: onnx.ModelProto, include_embeddings: bool, exclude: str | None = None
) -> DecoderPlan:
    """:func:`plan_targets` plus transposed-table heads, the LM head flag, ties, and every other node."""
    targets, left = plan_targets(model, include_embeddings, exclude)
    graph = to_ir(model).graph
    nodes = list(graph)
    pattern = re.compile(exclude) if exclude else None
    by_name = {t.name: t for t in targets}
    for index, node in enumerate(nodes):
        if node.op_type != "MatMul":
            continue
        source = _transposed_initializer(node)
        name = _name(node, index)
        if source is None or name in by_name:
            continue
        left = [s for s in left if s.name != name]
        if pattern is not None and pattern.search(name):
            left.append(LeftInFloat(name, "MatMul", f"excluded by --exclude {exclude!r}", source.name or ""))
            continue
        assert source.const_value is not None
        rows, cols = source.const_value.shape.numpy()
        dtype = np.dtype(FLOAT_TYPES[int(source.const_value.dtype)])
        target = WeightTarget(name, "MatMul", index, source.name or "", node.inputs[0].name or "",  # type: ignore[union-attr]
                              node.outputs[0].name or "", rows, cols, dtype, transpose=False)
        targets.append(target)
        by_name[name] = target
    targets.sort(key=lambda t: t.node_index)
    head = lm_head_node(graph)
    if head is not None and head in nodes:
        for target in targets:
            target.lm_head = target.node_index == nodes.index(head)
    return DecoderPlan(targets, _list_the_rest(nodes, targets, left), _ties(targets, left))


def _ties(targets: list[WeightTarget], left: list[LeftInFloat]) -> list[Tie]:
    gathers = {t.weight: t for t in targets if t.is_embedding}
    float_gathers = {s.weight: s.name for s in left if s.op_type == "Gather" and s.weight}
    ties = []
    for target in targets:
        if target.is_embedding or target.transpose:
            continue  # a [K, N] weight applied as stored is not the table's orientation
        gather = gathers.get(target.weight)
        if gather is not None and (gather.rows, gather.cols) == (target.rows, target.cols):
            ties.append(Tie(target, target.weight, gather, gather.name))
        elif target.weight in float_gathers:
            ties.append(Tie(target, target.weight, None, float_gathers[target.weight]))
    return ties


def _list_the_rest(nodes: list[ir.Node], targets: list[WeightTarget], left: list[LeftInFloat]) -> list[LeftInFloat]:
    """``left`` plus every MatMul/Gemm/Gather neither list names, each with why it has no weight."""
    named = {t.name for t in targets} | {s.name for s in left}
    rest = list(left)
    for index, node in enumerate(nodes):
        name = _name(node, index)
        if node.op_type not in LISTED_OPS or node.domain not in ("", "ai.onnx") or name in named:
            continue
        data = node.inputs[0] if node.inputs else None
        if node.op_type == "Gather" and data is not None and data.const_value is not None:
            reason = f"gathers from a {data.const_value.dtype.name.lower()} constant, not a float table"
        elif node.op_type == "Gather":
            reason = "gathers from a computed tensor (a shape or an activation), not a weight table"
        else:
            reason = "no constant weight input"
        rest.append(LeftInFloat(name, node.op_type, reason))
    return rest
