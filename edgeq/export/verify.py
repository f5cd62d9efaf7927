"""The checks a bundle passes before it is written: the TensorRT lint, then onnxruntime.

The bundle's ONNX is not the model that went in (widened weights, fp16, a lower opset, Q/DQ
stripped for DLA), so it is run in onnxruntime next to that reference on the same inputs, output
by output. A non-finite output is always refused; a cosine below ``MIN_COSINE`` is refused
unless the bundle is meant to differ (a Q/DQ model handed to DLA as float + scales).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeq.errors import UnsupportedError
from edgeq.targets import TargetProfile

MIN_COSINE = 0.999  # bundle vs the quantized model that went in, per output


def check_tensorrt_lint(model: onnx.ModelProto, profile: TargetProfile, model_path: Path) -> str:
    """``"passed"`` / ``"not applicable"`` for the manifest; a broken TensorRT Q/DQ rule is refused."""
    if not (profile.uses_tensorrt and any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)):
        return "not applicable"
    from edgeq.graph.trt_lint import tensorrt_violations

    violations = tensorrt_violations(model)
    if violations:
        shown = "; ".join(str(v) for v in violations[:3])
        raise UnsupportedError(
            f"{model_path}: {len(violations)} TensorRT Q/DQ rule(s) broken for {profile.name}: {shown}"
        )
    return "passed"


def run_onnxruntime(
    model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], purpose: str = "the exported model"
) -> list[np.ndarray]:
    """Outputs with graph optimizations off: every Q/DQ computed as written, so neither fused int8
    kernels (which saturate on x86 CPUs without VNNI) nor float fusions blur a comparison."""
    from edgeq.graph.session import cpu_session

    session = cpu_session(model, purpose=purpose, optimize=False)
    names = [i.name for i in session.get_inputs()]
    return [np.asarray(o) for o in session.run(None, {k: v for k, v in feeds.items() if k in names})]


def compare_outputs(
    names: Sequence[str], reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]
) -> dict[str, dict[str, float]]:
    """Per output: cosine and max |difference| against the reference, and whether it is finite."""
    from edgeq.metrics import cosine

    result = {}
    for name, ref, out in zip(names, reference, candidate, strict=True):
        ref64, out64 = np.asarray(ref, np.float64), np.asarray(out, np.float64)
        result[name] = {
            "cosine": float(cosine(ref64, out64)) if ref64.size else 1.0,
            "max_abs_diff": float(np.max(np.abs(ref64 - out64))) if ref64.size else 0.0,
            "finite": bool(np.isfinite(out64).all()),
        }
    return result


def verify_against_reference(
    model_path: Path,
    bundle_model: onnx.ModelProto,
    reference: onnx.ModelProto,
    reference_name: str,
    feeds: Mapping[str, np.ndarray],
    inputs_text: str,
    build_shapes: Mapping[str, Sequence[int]],
    strict: bool,
) -> dict[str, Any]:
    """Run both models on ``feeds``; the verification record for the manifest, or a refusal."""
    output_names = [o.name for o in bundle_model.graph.output]
    executed = "onnxruntime"
    if _has_float4(bundle_model) or _has_float4(reference):
        # onnxruntime has no FLOAT4E2M1 DequantizeLinear: both graphs run with each NVFP4 chain
        # replaced by its weights from edgeq's float64 reference decoder; the rest is as written.
        from edgeq.graph.formats.nvfp4 import dequantized_copy

        bundle_model, reference = dequantized_copy(bundle_model), dequantized_copy(reference)
        executed = "onnxruntime, NVFP4 weights decoded by edgeq's float64 reference (no onnxruntime FP4 kernel)"
    reference_out = run_onnxruntime(reference, feeds, reference_name)
    bundle_out = run_onnxruntime(bundle_model, feeds)
    compared = compare_outputs(output_names, reference_out, bundle_out)
    for name, values in compared.items():
        if not values["finite"]:
            raise UnsupportedError(f"{model_path}: output {name} of the exported model is not finite in onnxruntime")
        if strict and values["cosine"] < MIN_COSINE:
            raise UnsupportedError(
                f"{model_path}: output {name} of the exported model drifts from {reference_name} "
                f"(cosine {values['cosine']:.5f} < {MIN_COSINE}); export without fp16/widening is not possible here"
            )
    return {"reference": reference_name, "inputs": inputs_text, "outputs": compared, "executed_by": executed,
            "shapes": {k: list(v) for k, v in build_shapes.items()}}


def _has_float4(model: onnx.ModelProto) -> bool:
    return any(t.data_type == onnx.TensorProto.FLOAT4E2M1 for t in model.graph.initializer)
