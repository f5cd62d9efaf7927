"""Lower a graph's default-domain opset, node by node against the ONNX schemas, or say which node stops it.

An older TensorRT parser reads only up to some opset (TensorRT 8.2: 13), while exporters and
quantizers write newer ones. ONNX's version converter has no down-adapters for most ops (it
refuses BatchNormalization 15 -> 14), so the rule here is the schemas themselves: a node is
written at an older opset when its op's definition is the same there, or differs only in ways
this node does not use (a new attribute it does not set, an input it leaves out, a type it does
not have). One shape change is converted: the Reduce* ops' ``axes`` input (opset 18) back into
the attribute, when the axes are a constant. A node whose meaning changed with the same
signature (Softmax at 13, GridSample at 20) is never relabelled across the change.

The pass lowers the whole graph to the lowest opset every node allows (never below ``floor``)
and reports the nodes that kept it higher; what to do about them (refuse, or accept because the
consumer parses that op anyway) is the caller's decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import onnx
import onnx_ir as ir
from onnx import defs

from edgeq.graph.passes.base import GraphPass, constant, input_value, tidy

DEFAULT_DOMAINS = ("", "ai.onnx")
REDUCE_AXES_OPS = (
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceSumSquare",
)  # fmt: skip
REDUCE_AXES_INPUT = 18  # ReduceSum moved earlier, at 13, and is not lowered past it
# Same inputs and attributes, different meaning: never relabel across these opsets.
SEMANTIC_CHANGES: dict[str, tuple[int, ...]] = {
    "Softmax": (13,), "LogSoftmax": (13,), "Hardmax": (13,), "GridSample": (20,), "Resize": (11, 13),
}  # fmt: skip


@dataclass
class OpsetBlocker:
    """A node that cannot be written below ``needs``, and why."""

    node: str
    op_type: str
    needs: int
    reason: str


@dataclass
class OpsetLowering:
    """Where the graph's opset went (``before`` -> ``after``) and the nodes that held it up."""

    before: int
    after: int
    blockers: list[OpsetBlocker] = field(default_factory=list)


def _type_string(value: ir.Value | None) -> str | None:
    """``"tensor(float)"`` for a value whose element type is known, else None."""
    if value is None or value.type is None or value.dtype is None:
        return None
    return f"tensor({onnx.TensorProto.DataType.Name(int(value.dtype)).lower()})"


def _formal_types(schema: defs.OpSchema, formals: list[defs.OpSchema.FormalParameter], index: int) -> set[str] | None:
    """Types the ``index``-th actual input/output may have under ``schema`` (None: not limited here)."""
    if not formals:
        return None
    formal = formals[min(index, len(formals) - 1)]
    for constraint in schema.type_constraints:
        if constraint.type_param_str == formal.type_str:
            return set(constraint.allowed_type_strs)
    return {formal.type_str}


def _count(values: Sequence[ir.Value | None]) -> int:
    """Number of inputs up to the last one given (empty optional inputs at the end do not count)."""
    present = [i for i, v in enumerate(values) if v is not None]
    return present[-1] + 1 if present else 0


def _at_default(node: ir.Node, schema: defs.OpSchema, name: str) -> bool:
    """True when ``node`` sets attribute ``name`` to the value ``schema`` gives it when absent."""
    default = schema.attributes[name].default_value if name in schema.attributes else None
    if default is None or not default.name:
        return False
    return ir.serde.serialize_attribute(node.attributes[name]).SerializeToString() == default.SerializeToString()


def _drop_new_defaults(node: ir.Node, old: defs.OpSchema, new: defs.OpSchema) -> None:
    """Remove attributes the old schema lacks that ``node`` sets to their default (``allowzero=0``)."""
    for name in [a for a in node.attributes if a not in old.attributes and _at_default(node, new, a)]:
        node.attributes.pop(name)


def _reduce_adaptable(node: ir.Node) -> str | None:
    """Why a Reduce* node with an ``axes`` input cannot go back to the attribute form, or None."""
    noop = node.attributes.get("noop_with_empty_axes")
    if noop is not None and noop.as_int():
        return "noop_with_empty_axes=1 has no form before opset 18"
    axes = input_value(node, 1)
    if axes is not None and constant(axes) is None:
        return "its axes are computed, not a constant"
    return None


def blocker_at(node: ir.Node, version: int, current: int) -> str | None:
    """Why ``node`` (in a graph at opset ``current``) cannot be written at opset ``version``, or None."""
    op = node.op_type
    try:
        now = defs.get_schema(op, current, "")
    except defs.SchemaError:
        return f"{op} is not an op of opset {current}"
    try:
        then = defs.get_schema(op, version, "")
    except defs.SchemaError:
        return f"{op} first exists in opset {now.since_version}"
    if then.since_version == now.since_version:
        return None
    for change in SEMANTIC_CHANGES.get(op, ()):
        if then.since_version < change <= now.since_version:
            return f"{op} changed meaning in opset {change}"
    if op in REDUCE_AXES_OPS and then.since_version < REDUCE_AXES_INPUT <= now.since_version:
        reason = _reduce_adaptable(node)
        if reason:
            return reason
        extra = sorted(set(node.attributes) - set(then.attributes) - {"noop_with_empty_axes"})
        return f"attribute {extra[0]} is new in opset {now.since_version}" if extra else None
    extra = [a for a in sorted(set(node.attributes) - set(then.attributes)) if not _at_default(node, now, a)]
    if extra:
        return f"attribute {extra[0]} is new in opset {now.since_version}"
    if _count(node.inputs) > then.max_input:
        return f"input {then.max_input + 1} is new in opset {now.since_version}"
    if len(node.outputs) > then.max_output:
        return f"output {then.max_output + 1} is new in opset {now.since_version}"
    for values, formals in ((node.inputs, list(then.inputs)), (node.outputs, list(then.outputs))):
        for index, value in enumerate(values):
            actual = _type_string(value)
            allowed = _formal_types(then, formals, index)
            if actual is not None and allowed is not None and actual not in allowed:
                return f"{actual[7:-1]} {'inputs' if values is node.inputs else 'outputs'} need opset {now.since_version}"
    return None


def lowest_opset(node: ir.Node, floor: int, current: int) -> tuple[int, str | None]:
    """The lowest opset in ``[floor, current]`` ``node`` can be written at, and why not at ``floor``."""
    first = blocker_at(node, floor, current)
    if first is None:
        return floor, None
    for version in range(floor + 1, current):
        if blocker_at(node, version, current) is None:
            return version, first
    return current, first


def _reduce_to_attribute(node: ir.Node) -> None:
    """``ReduceX(data, axes)`` (opset 18) -> ``ReduceX(data)`` with ``axes`` as an attribute."""
    axes = constant(input_value(node, 1))
    node.attributes.pop("noop_with_empty_axes", None)
    if axes is not None:
        node.attributes["axes"] = ir.AttrInt64s("axes", [int(a) for a in axes.reshape(-1)])
    if len(node.inputs) > 1:
        node.resize_inputs(1)


class LowerOpset(GraphPass):
    """The graph's default-domain opset lowered to the lowest its nodes allow, never below ``floor``.

    ``report`` holds the result; every node that cannot be written at ``floor`` is a blocker,
    with the lowest opset it can be written at.
    """

    def __init__(self, floor: int) -> None:
        super().__init__()
        self.floor = floor
        self.report = OpsetLowering(0, 0)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        current = model.opset_imports.get("", 0)
        self.report = OpsetLowering(current, current)
        if current <= self.floor:
            return ir.passes.PassResult(model, modified=False)
        nodes = [n for n in ir.traversal.RecursiveGraphIterator(model.graph) if n.domain in DEFAULT_DOMAINS]
        target = self.floor
        for node in nodes:
            needs, reason = lowest_opset(node, self.floor, current)
            if reason is not None:
                self.report.blockers.append(OpsetBlocker(node.name or node.op_type, node.op_type, needs, reason))
            target = max(target, needs)
        if target >= current:
            return ir.passes.PassResult(model, modified=False)
        for node in nodes:
            new, old = defs.get_schema(node.op_type, current, ""), defs.get_schema(node.op_type, target, "")
            if node.op_type in REDUCE_AXES_OPS and old.since_version < REDUCE_AXES_INPUT <= new.since_version:
                _reduce_to_attribute(node)
            _drop_new_defaults(node, old, new)
        model.opset_imports[""] = target
        if "ai.onnx" in model.opset_imports:
            model.opset_imports["ai.onnx"] = target
        self.report.after = target
        tidy(model, sort=False)  # a Reduce's axes initializer may now be unused
        return ir.passes.PassResult(model, modified=True)


def lower_opset(model: onnx.ModelProto, floor: int) -> OpsetLowering:
    """Lower ``model``'s default-domain opset towards ``floor`` in place (see :class:`LowerOpset`)."""
    lower = LowerOpset(floor)
    lower.apply(model)
    return lower.report
