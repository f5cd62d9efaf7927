"""W8A8 int8: BN folding, equalization, sequential calibration, Q/DQ for TensorRT or onnxruntime.

The order matters. BatchNorm is folded first (the weights TensorRT will run). Channels are
equalized next, on statistics of the folded model, so every activation grid is used well.
Activation thresholds are then measured on the equalized model, and finally each layer's
activation range, weight clipping and bias are chosen in topological order on the outputs of
the already-quantized layers (``int8_sequential``). With only a calibration table (no data),
the table's thresholds and data-free weight clipping are used, and the summary says what was
not done. The onnxruntime layout is the same numbers written the way its CPU kernels fuse:
conv outputs into residual Adds quantized too, re-centered tensors as zero points.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx

from edgeq.errors import ConfigError
from edgeq.graph.ops import COMPUTE_OPS
from edgeq.graph.opset import raise_opset
from edgeq.graph.passes.base import NameNodes, constant, nodes_by_name, to_ir
from edgeq.graph.passes.equalize import CrossLayerEqualization, find_equalization_pairs
from edgeq.graph.passes.fold_batchnorm import FoldBatchNorm
from edgeq.graph.passes.qdq import MIN_OPSET, InsertQdq, QdqPlan, WeightQuantization, plan_qdq
from edgeq.graph.quantizable import find_quantizable
from edgeq.numerics.int8 import equalize as int8_equalize
from edgeq.numerics.int8 import weights as int8_weights
from edgeq.quantize.api import QuantizeInputs, QuantizeResult, register
from edgeq.quantize.config import Int8Config
from edgeq.quantize.coverage import census, complete
from edgeq.quantize.schemes.int8 import recurrent
from edgeq.quantize.schemes.int8.layer_weights import weight_qmax
from edgeq.quantize.summary import NodeDecision, QuantizationSummary

# Samples the layer-by-layer search keeps in memory (two streams of live activations).
SEQUENTIAL_SAMPLES = 48
# Migration strength for equalizing into a dense consumer (a depthwise consumer takes it all).
DENSE_EQUALIZATION_ALPHA = 0.5


def rewrite_for_onnxruntime(model: onnx.ModelProto) -> str | None:
    """The exact rewrites that make a Q/DQ graph fuse in onnxruntime's CPU kernels (and that
    TensorRT would refuse): re-centered tensors as zero points, int32 Gemm biases. Returns what
    was done, None when nothing was."""
    from edgeq.graph.passes.int32_bias import Int32GemmBias
    from edgeq.graph.passes.zero_point_centers import CentersToZeroPoints

    to_zero_points, int32_bias = CentersToZeroPoints(), Int32GemmBias()
    done = []
    if to_zero_points.apply(model):
        done.append(
            f"{len(to_zero_points.converted)} re-centered activations written with zero point -128 "
            f"({to_zero_points.pads_removed} Pad nodes folded back into their convs)"
        )
    if int32_bias.apply(model):
        done.append(f"{len(int32_bias.converted)} Gemm biases in int32 (fused to QGemm)")
    return ", ".join(done) or None


def prepare_w8a8(
    model: onnx.ModelProto, fold_batchnorm: bool, op_types: tuple[str, ...], exclude: str | None,
    summary: QuantizationSummary,
) -> list[str]:
    """Name nodes, fold BatchNorm, and pick the compute nodes to quantize (the rest noted with why).

    The first steps of every W8A8 scheme (int8 and fp8): the weights quantized are the folded ones
    TensorRT will run.
    """
    NameNodes().apply(model)
    if fold_batchnorm:
        fold = FoldBatchNorm()
        fold.apply(model)
        if fold.folded:
            summary.notes.append(f"folded {len(fold.folded)} BatchNormalization nodes into the Conv before them")
        for bn, why in fold.skipped:
            summary.notes.append(f"BatchNormalization {bn} not folded: {why}")
    found, skipped = find_quantizable(model, op_types=COMPUTE_OPS)
    pattern = re.compile(exclude) if exclude else None
    selected: list[str] = []
    for node in found:
        if node.op_type not in op_types:
            summary.add(NodeDecision(node.name, node.op_type, False, reason=f"op type {node.op_type} not in --op-types", weight=node.weight))
        elif pattern is not None and pattern.search(node.name):
            summary.add(NodeDecision(node.name, node.op_type, False, reason=f"excluded by --exclude {exclude!r}", weight=node.weight))
        else:
            selected.append(node.name)
    for skip in skipped:
        summary.add(NodeDecision(skip.name, skip.op_type, False, reason=skip.reason))
    return selected


def _take_batches(data: Any, samples: int) -> list[dict[str, np.ndarray]]:
    batches: list[dict[str, np.ndarray]] = []
    seen = 0
    iterator: Iterator[dict[str, np.ndarray]] = iter(data)
    for feeds in iterator:
        batches.append(feeds)
        seen += data.batch_samples(feeds) if hasattr(data, "batch_samples") else len(next(iter(feeds.values())))
        if seen >= samples:
            break
    return batches


def observe_activations(
    model: onnx.ModelProto, data: Any, tensors: list[str], channel_axis: int | None, progress: bool, description: str = "calibrating int8"
) -> dict[str, Any]:
    """Histogram (and optionally per-channel magnitude) observers for ``tensors`` over ``data``."""
    from edgeq.calibrate.collector import collect
    from edgeq.calibrate.observers import ChannelMagnitudeObserver, HistogramObserver

    observers: dict[str, list[Any]] = {}
    for name in tensors:
        group: list[Any] = [HistogramObserver()] if channel_axis is None else [ChannelMagnitudeObserver(channel_axis)]
        observers[name] = group
    collect(model, data, observers, progress=progress, description=description)
    return {name: group[0] for name, group in observers.items()}


def _equalize(model: onnx.ModelProto, data: Any, quantized: set[str], progress: bool) -> tuple[int, list[str]]:
    pairs = [p for p in find_equalization_pairs(model) if p.consumer in quantized]
    if not pairs:
        return 0, []
    stats = observe_activations(model, data, sorted({p.tensor for p in pairs}), channel_axis=1, progress=progress)
    scales: dict[tuple[str, str], np.ndarray] = {}
    for pair in pairs:
        channel_max = stats[pair.tensor].absmax
        if channel_max.size != pair.channels:
            continue
        alpha = 1.0 if pair.consumer_depthwise else DENSE_EQUALIZATION_ALPHA
        scales[(pair.producer, pair.consumer)] = int8_equalize.activation_scales(channel_max, alpha=alpha, clip=pair.clip)
    cle = CrossLayerEqualization(pairs, scales)
    cle.apply(model)
    return len(cle.applied), [f"{p.producer} -> {p.consumer}" for p in cle.applied]


def _static_weights(model: onnx.ModelProto, plan: QdqPlan, clipping: str, reduce_range: bool) -> dict[str, WeightQuantization]:
    by_name = nodes_by_name(to_ir(model).graph)
    out: dict[str, WeightQuantization] = {}
    for name in plan.nodes:
        weight = constant(by_name[name].inputs[1])
        assert weight is not None
        axis = plan.weight_axes[name]
        qmax = weight_qmax(by_name[name], weight, reduce_range)
        view, view_axis = (weight.reshape(1, -1), 0) if axis is None else (weight, axis)
        if clipping == "mse":
            scale = int8_weights.mse_weight_scales(view, view_axis, qmax=qmax)
        else:
            scale = int8_weights.max_weight_scales(view, view_axis, qmax)
        values = int8_weights.quantize_weight(view, scale, view_axis, qmax).reshape(weight.shape)
        out[name] = WeightQuantization(values, scale.reshape(()) if axis is None else scale, axis)
    return out


def _scheme_text(
    config: Int8Config, axis: int | None, method: str, sequential: bool, gptq: tuple[int, int] | None, qmax: int
) -> str:
    weights = f"per-channel (axis {axis})" if axis is not None else "per-tensor"
    if qmax != int8_weights.WEIGHT_QMAX:
        weights += f" in [-{qmax}, {qmax}] (reduce range)"
    clip = "clip by output MSE" if (sequential and config.weight_clipping == "mse") else f"clip {config.weight_clipping}"
    rounding = f", GPTQ rounding on {gptq[0]}/{gptq[1]} channels" if gptq else ""
    return f"int8 W8A8: weights {weights}, {clip}{rounding}; activation per-tensor ({method})"


@register(Int8Config)
def quantize_int8(model: onnx.ModelProto, config: Int8Config, inputs: QuantizeInputs) -> QuantizeResult:
    if inputs.data is None and inputs.calibration is None:
        raise ConfigError("int8 activations need calibration: pass --data (samples) or --calib (a table from edgeq calibrate)")
    summary = QuantizationSummary(model=inputs.model_path, config=config.to_dict()["_data"])
    model = raise_opset(model, max(MIN_OPSET, recurrent.required_opset(model, config)), "per-channel Q/DQ",
                        f"export the model with opset >= {MIN_OPSET}")
    selected = prepare_w8a8(model, config.fold_batchnorm, config.op_types, config.exclude, summary)

    data = inputs.data
    sequential = data is not None
    if data is not None and config.equalization:
        count, _ = _equalize(model, data, set(selected), inputs.progress)
        summary.notes.append(f"cross-layer equalization rescaled {count} conv pairs (activation-aware; ReLU6 clip kept exact)")
    elif config.equalization:
        summary.notes.append("cross-layer equalization skipped: it needs --data (a calibration table describes the unequalized model)")
    fixed_amax: dict[str, float] = {}
    if data is not None and config.recenter:
        from edgeq.graph.passes.recenter import RecenterActivations, centered_amax, find_recenter_sites

        recenter = RecenterActivations(find_recenter_sites(model, set(selected)))
        recenter.apply(model)
        fixed_amax = {t: centered_amax(c) for t, c in recenter.centered.items()}
        if recenter.applied:
            summary.notes.append(
                f"re-centered {len(recenter.applied)} clipped activations to use both halves of the symmetric int8 grid "
                f"({recenter.pads_added} zero paddings made explicit Pad nodes)"
            )
    if config.smoothquant_alpha is not None:
        if data is None:
            raise ConfigError("--smoothquant needs --data: it scales by per-channel activation maxima measured on samples")
        from edgeq.graph.passes.smoothquant import SmoothQuant, smoothable_tensors

        readers = smoothable_tensors(model, set(selected))
        magnitudes = observe_activations(model, data, list(readers), -1, inputs.progress, "smoothquant statistics") if readers else {}
        sq = SmoothQuant.from_magnitudes(model, readers, {t: m.absmax for t, m in magnitudes.items()}, config.smoothquant_alpha)
        sq.apply(model)
        summary.notes.append(f"smoothquant alpha {config.smoothquant_alpha}: migrated {len(sq.applied)} activation tensors into their weights")

    sites = census(model)
    plan = plan_qdq(model, selected, conv_outputs_into_add=config.layout == "onnxruntime")
    candidates: dict[str, dict[str, float]] = {}
    if data is not None:
        histograms = observe_activations(model, data, list(plan.activations), None, inputs.progress)
        for tensor, hist in histograms.items():
            candidates[tensor] = hist.thresholds()
    else:
        table = inputs.calibration
        assert table is not None  # checked on entry: data or a table
        for tensor in plan.activations:
            candidates[tensor] = table.thresholds_for(tensor, plan.roles[tensor])

    for tensor, value in fixed_amax.items():
        if tensor in candidates:
            candidates[tensor] = {"centered": value}
    if sequential:
        from edgeq.quantize.schemes.int8.sequential import SequentialOptions, sequential_quantize

        batches = _take_batches(data, SEQUENTIAL_SAMPLES)
        options = SequentialOptions(
            weight_clipping=config.weight_clipping,
            bias_correction=config.bias_correction,
            activation_method=config.activation_method,
            reduce_range=config.reduce_range,
        )
        seq = sequential_quantize(model, plan, batches, candidates, options)
        amax, methods, weights, errors = seq.activation_amax, seq.activation_method, seq.weights, seq.errors
        gptq_channels = seq.gptq_channels
        if config.bias_correction:
            corrected = sum(1 for w in weights.values() if w.bias is not None)
            summary.notes.append(f"bias correction on {corrected} of {len(weights)} layers; layer-by-layer search on {len(batches)} batches")
    else:
        method = config.activation_method if config.activation_method != "auto" else "mse"
        amax = {t: c.get(method, c["minmax"]) for t, c in candidates.items()}
        methods = dict.fromkeys(candidates, method)
        weights = _static_weights(model, plan, config.weight_clipping, config.reduce_range)
        errors = {}
        gptq_channels = {}
        if config.bias_correction:
            summary.notes.append("bias correction skipped: it needs --data (samples through the quantized layers)")

    before = {n.name: n for n in model.graph.node}
    act_of = {name: before[name].input[0] for name in plan.nodes}
    weight_of = {name: before[name].input[1] for name in plan.nodes}
    op_of = {name: before[name].op_type for name in plan.nodes}
    InsertQdq(plan, amax, weights).apply(model)
    for name in plan.nodes:
        method = methods.get(act_of[name], "")
        summary.add(
            NodeDecision(
                name=name,
                op_type=op_of[name],
                quantized=True,
                scheme=_scheme_text(
                    config, weights[name].axis, method, sequential, gptq_channels.get(name),
                    weight_qmax(before[name], weights[name].values, config.reduce_range),
                ),
                weight=weight_of[name],
                bits=8,
                method=method,
                error=errors.get(name, {}),
            )
        )
    if config.layout == "onnxruntime":
        rewritten = rewrite_for_onnxruntime(model)
        summary.notes.append(f"layout onnxruntime: {rewritten or 'no tensor to rewrite'}; not for TensorRT, which needs zero points of 0")
    else:
        from edgeq.graph.trt_lint import lint_tensorrt

        violations = lint_tensorrt(model)
        if violations:  # edgeq's own graphs must pass its lint; anything else is a bug to report
            raise RuntimeError("edgeq wrote a Q/DQ graph that fails the TensorRT lint: " + "; ".join(map(str, violations[:5])))
    # Placement notes for Q/DQ beyond compute inputs, as written (the onnxruntime layout folds some away).
    written = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    for tensor in sorted(set(plan.activations) - set(act_of.values())):
        if tensor in written:
            summary.notes.append(f"Q/DQ on {tensor}: {plan.roles[tensor]}")
    summary.weight_bytes_before = sum(int(np.prod(w.values.shape)) * 4 for w in weights.values())
    summary.weight_bytes_after = sum(int(np.prod(w.values.shape)) for w in weights.values())
    recurrent.weight_only_rest(model, config, summary)
    complete(summary, sites, "int8")
    return QuantizeResult(model, summary)
