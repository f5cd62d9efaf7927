"""Step 2 of export: the bundle's model put into containers the target's runtime has (in place).

For TensorRT: onnxruntime's contrib MatMuls become standard ONNX, weights with no TensorRT form
are widened (only with ``--allow-widen``), the opset is lowered to what that TensorRT's parser
reads (or the export is refused naming the node that cannot go lower). For onnxruntime:
the exact rewrites its CPU kernels fuse. Then fp16 where the plan puts it in the graph, and an
IR version the board runtimes read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import onnx

from edgeq.errors import UnsupportedError
from edgeq.targets import PrecisionPlan, TargetProfile, Widening, format_version, parse_version
from edgeq.targets.facts import parsed_above_ceiling, parser_max_opset


@dataclass
class Fitted:
    """What fitting changed, for the result and the manifest."""

    widen_report: Any = None  # edgeq.export.widen.WidenReport, TensorRT targets only
    fp16: str | None = None
    notes: list[str] = field(default_factory=list)


def fit_to_target(model: onnx.ModelProto, plan: PrecisionPlan, profile: TargetProfile, allow_widen: bool) -> Fitted:
    """Rewrite ``model`` in place for ``profile``'s runtime; say what changed."""
    from edgeq.graph.io import lower_ir_version

    fitted = Fitted()
    if profile.uses_tensorrt and plan.quantization != "implicit":
        fitted.widen_report = fit_tensorrt(model, plan, allow_widen)
    if not profile.uses_tensorrt:
        from edgeq.quantize import rewrite_for_onnxruntime

        # A model quantized for TensorRT gets the same exact rewrites as --layout onnxruntime.
        rewritten = rewrite_for_onnxruntime(model)
        if rewritten:
            fitted.notes.append(f"for onnxruntime: {rewritten}")
    if plan.fp16_in_graph:
        from edgeq.graph.passes.fp16 import Fp16Pass

        # int8 Q/DQ keep fp32 types and INT4 blocks already need opset 21 (>= 19, where Q/DQ take
        # fp16 scales): no opset conversion is needed for fp16.
        fp16_pass = Fp16Pass()
        fp16_pass.apply(model)
        fitted.fp16 = fp16_pass.report.describe()
    if profile.uses_tensorrt:
        fitted.notes += fit_parser_opset(model, plan, profile)
    # Board runtimes read older IR versions than onnx writes by default.
    lower_ir_version(model)
    return fitted


def fit_tensorrt(model: onnx.ModelProto, plan: PrecisionPlan, allow_widen: bool) -> Any:
    """Contrib MatMuls to standard ONNX, and widening, for a TensorRT target (in place)."""
    from edgeq.export.widen import WidenReport, convert_contrib_matmuls, widen_weights

    report = convert_contrib_matmuls(model)
    widened_to_float = [n for n in report.nodes if n.container == "float"]
    if widened_to_float and plan.widening is None:
        if not allow_widen:
            raise UnsupportedError(
                f"{plan.target}: {len(widened_to_float)} weights ({widened_to_float[0].source}) have no TensorRT form; "
                "pass --allow-widen to store them as fp16, or re-quantize with --format qdq"
            )
        plan.widening = Widening(widened_to_float[0].source.split()[0], "fp16", "no exact TensorRT container")
    if plan.widening is not None:
        container = "int4" if plan.widening.container == "int4" else "float"
        more = widen_weights(model, container)
        report = WidenReport(nodes=[*report.nodes, *more.nodes], notes=[*report.notes, *more.notes])
    leftover = sorted({n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if leftover:
        raise UnsupportedError(f"{plan.target}: the model still has ops TensorRT cannot parse: {', '.join(leftover)}")
    return report


def fit_parser_opset(model: onnx.ModelProto, plan: PrecisionPlan, profile: TargetProfile) -> list[str]:
    """Lower ``model`` (in place) to the opset the plan's TensorRT parser reads, or refuse in one line.

    The graph goes to the profile's preferred opset when every node allows it, and never stays
    above the parser's ceiling (``edgeq.targets.facts.PARSER_MAX_OPSET``) unless the nodes that
    keep it there are quantization ops that TensorRT version parses at their newer opset.
    """
    from edgeq.graph.passes.lower_opset import lower_opset

    assert plan.tensorrt is not None
    trt = parse_version(plan.tensorrt)
    ceiling = parser_max_opset(trt)
    lowering = lower_opset(model, min(profile.onnx.preferred_opset, ceiling))
    if lowering.after <= ceiling:
        return [f"opset {lowering.before} lowered to {lowering.after} (TensorRT {plan.tensorrt} parses up to "
                f"opset {ceiling})"] if lowering.after < lowering.before else []
    stuck = [b for b in lowering.blockers if b.needs > parsed_above_ceiling(b.op_type, trt)]
    if not stuck:
        return [f"opset {lowering.after} kept: TensorRT {plan.tensorrt} parses up to opset {ceiling}, and the "
                f"{', '.join(sorted({b.op_type for b in lowering.blockers if b.needs > ceiling}))} nodes above it are "
                "quantization ops it reads at their own opset"]
    worst = max(stuck, key=lambda b: b.needs)
    where = f"{profile.name} (JetPack {plan.jetpack}, TensorRT {plan.tensorrt})"
    assert profile.tensorrt is not None
    newer = sorted((jp for jp, v in profile.tensorrt.jetpack.items()
                    if parsed_above_ceiling(worst.op_type, parse_version(v)) >= worst.needs), key=parse_version)
    fix = (f"pass --jetpack {newer[0]}" if newer else
           f"re-export the model at opset {ceiling} without {worst.op_type}, or use a board with a newer TensorRT")
    raise UnsupportedError(
        f"{where}: node '{worst.node}' ({worst.op_type}) needs opset {worst.needs} ({worst.reason}), but TensorRT "
        f"{format_version(trt[:2])}'s ONNX parser reads up to opset {ceiling}; {fix}"
    )
