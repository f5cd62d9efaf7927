"""Step 2 of export: the bundle's model put into containers the target's runtime has (in place).

For TensorRT: onnxruntime's contrib MatMuls become standard ONNX, weights with no TensorRT form
are widened (only with ``--allow-widen``), the opset is lowered to the board's. For onnxruntime:
the exact rewrites its CPU kernels fuse. Then fp16 where the plan puts it in the graph, and an
IR version the board runtimes read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import onnx

from edgeq.errors import UnsupportedError
from edgeq.targets import PrecisionPlan, TargetProfile, Widening


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
        from edgeq.export.widen import lower_opset

        lower_opset(model, profile.onnx.preferred_opset)
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
