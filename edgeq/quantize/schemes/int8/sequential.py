"""Sequential int8 calibration: choose every number on the inputs the quantized model really sees.

Quantizing layer by layer in topological order, each layer is tuned on the activations coming
out of the already-quantized layers before it, against the float model's output at the same
point. Three decisions are made per compute node, each on calibration data:

1. the activation range of its input, chosen per tensor among the calibration methods'
   thresholds (max, percentile, entropy, MSE) by the error it causes at the layer *output*;
2. each output channel's weight clipping ratio, by the same output error (output channel ``c``
   depends only on weight row ``c``, so all channels are searched at once);
3. the bias, corrected by the per-channel mean difference between float and quantized
   outputs, which also absorbs the mean shift the layers before it left.

Nodes run one at a time in onnxruntime (one small session each), so the simulated arithmetic is
the arithmetic of the final Q/DQ graph. Memory is the live activations of the calibration
subset, for two streams (float and quantized).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.graph.passes.base import constant, input_value, is_constant, nodes_by_name, to_ir
from edgeq.graph.passes.qdq import QdqPlan, WeightQuantization
from edgeq.numerics.int8 import bias as int8_bias
from edgeq.numerics.int8 import weights as int8_weights
from edgeq.quantize.schemes.int8.layer_error import channel_error, channel_moments, sqnr, squared_error
from edgeq.quantize.schemes.int8.layer_weights import (
    bias_slot,
    gptq_values,
    output_channel_axis,
    refitted_weight,
    rows_per_weight,
    weight_qmax,
)
from edgeq.quantize.schemes.int8.node_runner import NodeRunner

DEFAULT_RATIOS = (1.0, 0.95, 0.9, 0.84, 0.77, 0.68, 0.58)
# Data-fitted steps need many more rows (input positions) than unknowns per output channel, or
# they fit the calibration samples instead of the layer: rows per unknown below which they are skipped.
MIN_ROWS_PER_WEIGHT_GPTQ = 4
MIN_ROWS_PER_WEIGHT_REFIT = 32


@dataclass
class SequentialOptions:
    weight_clipping: str = "mse"  # "mse": per-channel ratio by output error; "max": no clipping
    bias_correction: bool = True
    activation_method: str = "auto"  # "auto": per tensor by output error; else one method for all
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    search_batches: int = 2  # batches used for the amax and clipping searches (all for the bias)
    gptq: bool = True  # GPTQ rounding on the chosen grid, kept per output channel where it lowers the error
    target_correction: bool = False  # refit weights onto the float output (least squares): off, it inflates weight ranges
    reduce_range: bool = False  # dense layers' weights in [-64, 64]: no int16 saturation in onnxruntime on x86 without VNNI
    threads: int = 2


@dataclass
class SequentialResult:
    activation_amax: dict[str, float] = field(default_factory=dict)
    activation_method: dict[str, str] = field(default_factory=dict)
    weights: dict[str, WeightQuantization] = field(default_factory=dict)
    errors: dict[str, dict[str, float]] = field(default_factory=dict)
    gptq_channels: dict[str, tuple[int, int]] = field(default_factory=dict)  # node -> (GPTQ-rounded, total)
    notes: list[str] = field(default_factory=list)


def sequential_quantize(
    model: onnx.ModelProto | ir.Model,
    plan: QdqPlan,
    batches: Sequence[dict[str, np.ndarray]],
    candidates: dict[str, dict[str, float]],
    options: SequentialOptions | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> SequentialResult:
    """Choose activation ranges, weight scales and biases for ``plan`` layer by layer."""
    options = options or SequentialOptions()
    model = to_ir(model)
    graph = model.graph
    by_name = nodes_by_name(graph)
    runner = NodeRunner(model, options.threads)
    result = SequentialResult()
    planned = set(plan.nodes)
    quantized_slots: dict[tuple[str, int], str] = {}
    for tensor, readers in plan.activations.items():
        for reader, slot in readers:
            quantized_slots[(reader, slot)] = tensor
    remaining: dict[str, int] = {}
    for node in graph:
        for name in _input_names(node):
            remaining[name] = remaining.get(name, 0) + 1
    ref: dict[str, list[np.ndarray]] = {}
    qnt: dict[str, list[np.ndarray]] = {}
    for feed in batches:
        for name, value in feed.items():
            ref.setdefault(name, []).append(value)
            qnt.setdefault(name, []).append(value)
    n_search = max(1, min(options.search_batches, len(batches)))

    def decide_amax(tensor: str, evaluate: Callable[[float], float] | None) -> float:
        if tensor in result.activation_amax:
            return result.activation_amax[tensor]
        options_for = candidates.get(tensor)
        if not options_for:
            raise ValueError(f"no calibration range for tensor {tensor}")
        if options.activation_method != "auto" and options.activation_method in options_for:
            method = options.activation_method
        elif evaluate is None or len(set(options_for.values())) == 1:
            method = "mse" if "mse" in options_for else next(iter(options_for))
        else:
            scored = {m: evaluate(a) for m, a in options_for.items() if a > 0}
            method = min(scored, key=lambda m: (scored[m], m)) if scored else next(iter(options_for))
        result.activation_amax[tensor] = float(options_for[method])
        result.activation_method[tensor] = method
        return result.activation_amax[tensor]

    def quant_inputs(node: ir.Node, batch: int) -> dict[str, np.ndarray]:
        feeds: dict[str, np.ndarray] = {}
        for slot, input_ in enumerate(node.inputs):
            if input_ is None or not input_.name or is_constant(input_):
                continue
            name = input_.name
            value = qnt[name][batch]
            tensor = quantized_slots.get((node.name or "", slot))
            if tensor is not None:
                value = int8_weights.fake_quantize_activation(value, decide_amax(tensor, None))
            feeds[name] = value
        return feeds

    def release(node: ir.Node) -> None:
        for name in _input_names(node):
            remaining[name] -= 1
            if remaining[name] == 0:
                ref.pop(name, None)
                qnt.pop(name, None)

    nodes = list(graph)
    for position, node in enumerate(nodes):
        if progress is not None:
            progress(position, len(nodes), node.name or "")
        if node.name in planned:
            _quantize_compute(by_name, node, plan, runner, ref, qnt, decide_amax, quant_inputs, options, n_search, result)
        else:
            for b in range(len(batches)):
                ref_feeds = {v.name: ref[v.name][b] for v in node.inputs if v is not None and v.name and not is_constant(v)}
                outputs = [o.name for o in node.outputs if o.name]
                for name, value in zip(outputs, runner.run(node, ref_feeds), strict=False):
                    ref.setdefault(name, []).append(value)
                for name, value in zip(outputs, runner.run(node, quant_inputs(node, b)), strict=False):
                    qnt.setdefault(name, []).append(value)
            runner.forget(node)
        release(node)
    # Tensors read only by nodes that never needed a search (e.g. a residual read before its conv).
    for tensor in plan.activations:
        decide_amax(tensor, None)
    return result


def _input_names(node: ir.Node) -> list[str]:
    """The names ``node`` reads, once per input slot (missing optional inputs left out)."""
    return [v.name for v in node.inputs if v is not None and v.name]


def _quantize_compute(
    by_name: dict[str, ir.Node],
    node: ir.Node,
    plan: QdqPlan,
    runner: NodeRunner,
    ref: dict[str, list[np.ndarray]],
    qnt: dict[str, list[np.ndarray]],
    decide_amax: Callable[[str, Callable[[float], float] | None], float],
    quant_inputs: Callable[[ir.Node, int], dict[str, np.ndarray]],
    options: SequentialOptions,
    n_search: int,
    result: SequentialResult,
) -> None:
    name = node.name or ""
    act, weight_input = node.inputs[0], node.inputs[1]
    assert act is not None and weight_input is not None
    act_tensor, weight_name = act.name or "", weight_input.name or ""
    stored = constant(weight_input)
    assert stored is not None
    weight: np.ndarray = stored
    axis = plan.weight_axes.get(name)
    out_axis = output_channel_axis(node)
    n_batches = len(ref[act_tensor])
    out_name = node.outputs[0].name or ""

    def run(feeds: dict[str, np.ndarray], w: np.ndarray) -> np.ndarray:
        return runner.run(node, {**feeds, weight_name: w.astype(weight.dtype)}, weight_as_input=True)[0]

    ref_out = [run({act_tensor: ref[act_tensor][b]}, weight) for b in range(n_batches)]
    qmax = weight_qmax(node, weight, options.reduce_range)
    # Start from the weight-MSE scales (data-free), then refine by output error.
    if axis is None:
        scale = np.asarray(int8_weights.scale_from_amax(np.abs(weight).max(), qmax), np.float32).reshape(())
    elif options.weight_clipping == "max":
        scale = int8_weights.max_weight_scales(weight, axis, qmax)
    else:
        scale = int8_weights.mse_weight_scales(weight, axis, qmax=qmax)

    def fq_weight(s: np.ndarray) -> np.ndarray:
        if axis is None:
            return int8_weights.fake_quantize_weight(weight.reshape(1, -1), s.reshape(1), 0, qmax).reshape(weight.shape)
        return int8_weights.fake_quantize_weight(weight, s, axis, qmax)

    raw_inputs = [qnt[act_tensor][b] for b in range(n_search)]
    w_fq = fq_weight(scale)

    def evaluate(amax: float) -> float:
        outs = [run({act_tensor: int8_weights.fake_quantize_activation(x, amax)}, w_fq) for x in raw_inputs]
        return squared_error(ref_out[:n_search], outs)

    decide_amax(act_tensor, evaluate)
    original_weight = weight
    if options.target_correction and axis is not None:
        q_inputs = [quant_inputs(node, b)[act_tensor] for b in range(n_batches)]
        enough = rows_per_weight(node, weight, q_inputs) >= MIN_ROWS_PER_WEIGHT_REFIT
        corrected = refitted_weight(node, weight, axis, q_inputs, ref[act_tensor]) if enough else None
        del q_inputs
        if corrected is not None:
            weight = corrected.astype(weight.dtype)
            if options.weight_clipping == "max":
                scale = int8_weights.max_weight_scales(weight, axis, qmax)
            else:
                scale = int8_weights.mse_weight_scales(weight, axis, qmax=qmax)
    search_feeds = [quant_inputs(node, b) for b in range(n_search)]
    slot = bias_slot(node) if options.bias_correction else None
    centered = slot is not None
    if options.weight_clipping == "mse" and axis is not None:
        amax = int8_weights.channel_absmax(weight, axis).astype(np.float64)
        errors = []
        for ratio in options.ratios:
            s = int8_weights.scale_from_amax(amax * ratio, qmax)
            outs = [run(f, fq_weight(s)) for f in search_feeds]
            errors.append(channel_error(ref_out[:n_search], outs, out_axis, centered))
        best = np.asarray(options.ratios)[np.argmin(np.stack(errors), axis=0)]
        scale = int8_weights.scale_from_amax(amax * best, qmax)
    values = (
        int8_weights.quantize_weight(weight.reshape(1, -1), scale.reshape(1), 0, qmax).reshape(weight.shape)
        if axis is None
        else int8_weights.quantize_weight(weight, scale, axis, qmax)
    )
    if options.gptq and axis is not None:
        inputs = [quant_inputs(node, b)[act_tensor] for b in range(n_batches)]
        enough = rows_per_weight(node, weight, inputs) >= MIN_ROWS_PER_WEIGHT_GPTQ
        rounded = gptq_values(node, weight, scale, axis, inputs, qmax) if enough else None
        if rounded is not None:
            shape = [1] * weight.ndim
            shape[axis] = -1

            def dequant(v: np.ndarray) -> np.ndarray:
                return (v.astype(np.float32) * scale.reshape(shape)).astype(weight.dtype)

            rtn_err = channel_error(ref_out[:n_search], [run(f, dequant(values)) for f in search_feeds], out_axis, centered)
            gptq_err = channel_error(ref_out[:n_search], [run(f, dequant(rounded)) for f in search_feeds], out_axis, centered)
            better = gptq_err < rtn_err
            values = np.where(better.reshape(shape), rounded, values)
            result.gptq_channels[name] = (int(better.sum()), int(better.size))
    shape_b = [1] * weight.ndim
    if axis is not None:
        shape_b[axis] = -1
    w_fq = (values.astype(np.float32) * np.asarray(scale, np.float32).reshape(shape_b)).astype(weight.dtype)
    q_out = [run(quant_inputs(node, b), w_fq) for b in range(n_batches)]
    new_bias = None
    if slot is not None:
        old_bias = constant(input_value(by_name[slot[0]], slot[1]))
        total, _, count = channel_moments(ref_out, q_out, out_axis)
        new_bias = int8_bias.shifted_bias(old_bias, total / count, q_out[0].shape[out_axis])
        shift = (new_bias.astype(np.float64) - (0 if old_bias is None else old_bias.astype(np.float64))).astype(np.float32)
        shape = [1] * q_out[0].ndim
        shape[out_axis] = -1
        q_out = [q + shift.reshape(shape) for q in q_out]
        # A bias living in a following Add gets the same shift: addition commutes, so shifting
        # this node's output in the quantized stream is what the corrected Add will compute.
    result.weights[name] = WeightQuantization(values, np.asarray(scale, np.float32), axis, new_bias, slot if new_bias is not None else None)
    result.errors[name] = {
        "weight_sqnr_db": sqnr([original_weight], [w_fq]),
        "output_sqnr_db": sqnr(ref_out, q_out),
    }
    ref[out_name] = ref_out
    qnt[out_name] = q_out
    runner.forget(node)
