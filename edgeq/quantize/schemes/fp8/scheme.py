"""FP8 (E4M3) W8A8 Q/DQ for TensorRT on GPUs with FP8 tensor cores (Jetson Thor).

The placement is int8's (``edgeq.graph.passes.qdq``: Q/DQ on the inputs of Conv/MatMul/Gemm, the
residual input of an Add after a quantized Conv, pooling and Concat inputs), because TensorRT's
fusion rules are the same for both types; only the element type and the scale change:
``scale = amax / 448`` with a calibrated per-tensor amax for activations and the per-output-channel
amax of the folded weights. E4M3's error is relative (3 mantissa bits at every magnitude), so no
clipping search, equalization or bias correction is run: the summary says so.
"""

from __future__ import annotations

import numpy as np
import onnx

from edgeq.errors import ConfigError
from edgeq.graph.opset import raise_opset
from edgeq.graph.passes.base import constant, nodes_by_name, to_ir
from edgeq.graph.passes.qdq import FP8_ELEMENT, InsertQdq, QdqPlan, WeightQuantization, plan_qdq
from edgeq.numerics.codecs.minifloat import fp8_quantize, fp8_scale
from edgeq.quantize.api import QuantizeInputs, QuantizeResult, register
from edgeq.quantize.config import Fp8Config
from edgeq.quantize.schemes.int8.scheme import observe_activations, prepare_w8a8
from edgeq.quantize.summary import NodeDecision, QuantizationSummary


def fp8_weights(model: onnx.ModelProto, plan: QdqPlan) -> dict[str, WeightQuantization]:
    """Each planned node's weight as E4M3 codes with per-output-channel scales amax / 448."""
    by_name = nodes_by_name(to_ir(model).graph)
    out: dict[str, WeightQuantization] = {}
    for name in plan.nodes:
        weight = constant(by_name[name].inputs[1])
        assert weight is not None  # find_quantizable only selects constant weights
        axis = plan.weight_axes[name]
        if axis is None:
            scale = fp8_scale(np.max(np.abs(weight)))
        else:
            other = tuple(i for i in range(weight.ndim) if i != axis)
            scale = fp8_scale(np.max(np.abs(weight), axis=other))
        codes = fp8_quantize(weight, scale, axis)
        out[name] = WeightQuantization(codes.view(FP8_ELEMENT.dtype), scale, axis)
    return out


@register(Fp8Config)
def quantize_fp8(model: onnx.ModelProto, config: Fp8Config, inputs: QuantizeInputs) -> QuantizeResult:
    if inputs.data is None and inputs.calibration is None:
        raise ConfigError("fp8 activations need calibration: pass --data (samples) or --calib (a table from edgeq calibrate)")
    summary = QuantizationSummary(model=inputs.model_path, config=config.to_dict()["_data"])
    model = raise_opset(model, FP8_ELEMENT.min_opset, "FP8 (FLOAT8E4M3FN) Q/DQ",
                        f"export the model with opset >= {FP8_ELEMENT.min_opset}")
    selected = prepare_w8a8(model, config.fold_batchnorm, config.op_types, config.exclude, summary)
    plan = plan_qdq(model, selected)
    if inputs.data is not None:
        observed = observe_activations(model, inputs.data, list(plan.activations), None, inputs.progress, "calibrating fp8")
        amax = {t: float(h.thresholds()[config.activation_method]) for t, h in observed.items()}
    else:
        assert inputs.calibration is not None
        amax = {t: float(inputs.calibration.thresholds_for(t, plan.roles[t])[config.activation_method])
                for t in plan.activations}
    weights = fp8_weights(model, plan)
    before = {n.name: n for n in model.graph.node}
    InsertQdq(plan, amax, weights, element=FP8_ELEMENT).apply(model)
    for name in plan.nodes:
        axis = weights[name].axis
        granularity = f"per-channel (axis {axis})" if axis is not None else "per-tensor"
        summary.add(NodeDecision(
            name=name, op_type=before[name].op_type, quantized=True, weight=before[name].input[1], bits=8,
            scheme=f"fp8 E4M3 W8A8: weights {granularity} amax/448; activation per-tensor ({config.activation_method}) amax/448",
            method=config.activation_method,
        ))
    from edgeq.graph.trt_lint import lint_tensorrt

    violations = lint_tensorrt(model)
    if violations:  # edgeq's own graphs must pass its lint; anything else is a bug to report
        raise RuntimeError("edgeq wrote an FP8 Q/DQ graph that fails the TensorRT lint: " + "; ".join(map(str, violations[:5])))
    summary.notes.append("fp8: no weight clipping search, equalization or bias correction (E4M3's error is relative)")
    summary.weight_bytes_before = sum(int(w.values.size) * 4 for w in weights.values())
    summary.weight_bytes_after = sum(int(w.values.size) for w in weights.values())
    return QuantizeResult(model, summary)
