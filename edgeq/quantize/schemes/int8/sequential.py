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
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeq.graph.passes.qdq import QdqPlan, WeightQuantization
from edgeq.graph.proto import GraphIndex, get_attribute
from edgeq.numerics.int8 import bias as int8_bias
from edgeq.numerics.int8 import gptq as int8_gptq
from edgeq.numerics.int8 import refit as int8_refit
from edgeq.numerics.int8 import statistics as int8_statistics
from edgeq.numerics.int8 import weights as int8_weights

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


class _NodeRunner:
    """Runs single nodes of a model in onnxruntime; the weight of a compute node is an input."""

    def __init__(self, model: onnx.ModelProto, threads: int) -> None:
        import onnxruntime as ort

        self._ort = ort
        self.model = model
        self.index = GraphIndex(model.graph)
        self.sessions: dict[tuple[str, bool], Any] = {}
        self.options = ort.SessionOptions()
        self.options.intra_op_num_threads = threads
        self.options.inter_op_num_threads = 1
        self.options.log_severity_level = 4  # errors arrive as exceptions, said once
        # Hundreds of one-node sessions: an arena per session would keep each one's peak forever.
        self.options.enable_cpu_mem_arena = False

    def _session(self, node: onnx.NodeProto, weight_as_input: bool, feeds: dict[str, np.ndarray]) -> Any:
        key = (node.name, weight_as_input)
        if key in self.sessions:
            return self.sessions[key]
        inputs, inits = [], []
        seen: set[str] = set()
        for position, name in enumerate(node.input):
            if not name or name in seen:
                continue
            seen.add(name)
            value = self.index.constant(name) if not (weight_as_input and position == 1) else None
            if value is not None:
                inits.append(numpy_helper.from_array(value, name))
            else:
                dtype = helper.np_dtype_to_tensor_dtype(feeds[name].dtype)
                inputs.append(helper.make_tensor_value_info(name, dtype, None))
        outputs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
        graph = helper.make_graph([node], f"node_{node.name}", inputs, outputs, inits)
        model = helper.make_model(graph, opset_imports=list(self.model.opset_import))
        model.ir_version = self.model.ir_version
        session = self._ort.InferenceSession(model.SerializeToString(), self.options, providers=["CPUExecutionProvider"])
        self.sessions[key] = session
        return session

    def forget(self, node: onnx.NodeProto) -> None:
        """Drop the node's sessions once its layer is done (each holds its weights)."""
        self.sessions.pop((node.name, False), None)
        self.sessions.pop((node.name, True), None)

    def run(self, node: onnx.NodeProto, feeds: dict[str, np.ndarray], weight_as_input: bool = False) -> list[np.ndarray]:
        session = self._session(node, weight_as_input, feeds)
        wanted = {i.name for i in session.get_inputs()}
        return list(session.run(None, {k: v for k, v in feeds.items() if k in wanted}))


def weight_qmax(node: onnx.NodeProto, weight: np.ndarray, reduce_range: bool) -> int:
    """The weight grid's half width. Reduced only where onnxruntime runs a GEMM (dense and grouped
    convs, MatMul, Gemm); its depthwise kernel accumulates in 32 bits and keeps all of int8."""
    if not reduce_range:
        return int8_weights.WEIGHT_QMAX
    group = int(get_attribute(node, "group", 1)) if node.op_type == "Conv" else 1
    depthwise = group > 1 and group == weight.shape[0] and weight.ndim > 1 and weight.shape[1] == 1
    return int8_weights.WEIGHT_QMAX if depthwise else int8_weights.REDUCED_WEIGHT_QMAX


def _output_channel_axis(node: onnx.NodeProto) -> int:
    return 1 if node.op_type in ("Conv", "ConvTranspose") else -1


def _channel_moments(ref: list[np.ndarray], out: list[np.ndarray], axis: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-channel sum and sum of squares of ``ref - out``, batch by batch (no big copies)."""
    total: np.ndarray | None = None
    squares: np.ndarray | None = None
    count = 0
    for r, o in zip(ref, out, strict=True):
        d = np.moveaxis(r - o, axis, 0).reshape(r.shape[axis], -1).astype(np.float64)
        s1, s2 = d.sum(axis=1), np.einsum("ij,ij->i", d, d)
        total = s1 if total is None else total + s1
        squares = s2 if squares is None else squares + s2
        count += d.shape[1]
    assert total is not None and squares is not None
    return total, squares, count


def _channel_error(ref: list[np.ndarray], out: list[np.ndarray], axis: int, centered: bool) -> np.ndarray:
    """Per-channel mean squared error; ``centered``: only its variance, the part bias correction
    cannot remove (used when the layer's bias will be corrected)."""
    total, squares, count = _channel_moments(ref, out, axis)
    mean = total / count
    return squares / count - (mean * mean if centered else 0.0)


def _squared_error(ref: list[np.ndarray], out: list[np.ndarray]) -> float:
    return float(sum(np.sum((r.astype(np.float64) - o) ** 2) for r, o in zip(ref, out, strict=True)))


def _sqnr(ref: list[np.ndarray], out: list[np.ndarray]) -> float:
    signal = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in ref)
    noise = _squared_error(ref, out)
    return float("inf") if noise == 0 else float(10 * np.log10(max(signal, 1e-300) / noise))


def bias_slot(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[str, int] | None:
    """Where a compute node's bias lives (or may be added): its own input 2, or a following Add."""
    index = GraphIndex(model.graph)
    if node.op_type in ("Conv", "ConvTranspose"):
        if len(node.input) > 2 and node.input[2] and not index.is_constant(node.input[2]):
            return None
        return (node.name, 2)
    if node.op_type == "Gemm":
        if len(node.input) > 2 and node.input[2]:
            c = index.constant(node.input[2])
            if c is None or c.ndim != 1:
                return None
        return (node.name, 2)
    reader = index.single_reader(node.output[0])
    if reader is not None and reader.op_type == "Add":
        other = 1 if reader.input[0] == node.output[0] else 0
        value = index.constant(reader.input[other])
        if value is not None and value.ndim == 1:
            return (reader.name, other)
    return None


def sequential_quantize(
    model: onnx.ModelProto,
    plan: QdqPlan,
    batches: Sequence[dict[str, np.ndarray]],
    candidates: dict[str, dict[str, float]],
    options: SequentialOptions | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> SequentialResult:
    """Choose activation ranges, weight scales and biases for ``plan`` layer by layer."""
    options = options or SequentialOptions()
    graph = model.graph
    index = GraphIndex(graph)
    runner = _NodeRunner(model, options.threads)
    result = SequentialResult()
    planned = set(plan.nodes)
    quantized_slots: dict[tuple[str, int], str] = {}
    for tensor, readers in plan.activations.items():
        for reader, slot in readers:
            quantized_slots[(reader, slot)] = tensor
    remaining: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            if name:
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

    def quant_inputs(node: onnx.NodeProto, batch: int) -> dict[str, np.ndarray]:
        feeds: dict[str, np.ndarray] = {}
        for slot, name in enumerate(node.input):
            if not name or index.is_constant(name):
                continue
            value = qnt[name][batch]
            tensor = quantized_slots.get((node.name, slot))
            if tensor is not None:
                value = int8_weights.fake_quantize_activation(value, decide_amax(tensor, None))
            feeds[name] = value
        return feeds

    def release(node: onnx.NodeProto) -> None:
        for name in node.input:
            if not name:
                continue
            remaining[name] -= 1
            if remaining[name] == 0:
                ref.pop(name, None)
                qnt.pop(name, None)

    nodes = list(graph.node)
    for position, node in enumerate(nodes):
        if progress is not None:
            progress(position, len(nodes), node.name)
        if node.name in planned:
            _quantize_compute(model, node, plan, runner, ref, qnt, decide_amax, quant_inputs, options, n_search, result)
        else:
            for b in range(len(batches)):
                ref_feeds = {n: ref[n][b] for n in node.input if n and not index.is_constant(n)}
                for name, value in zip([o for o in node.output if o], runner.run(node, ref_feeds), strict=False):
                    ref.setdefault(name, []).append(value)
                for name, value in zip([o for o in node.output if o], runner.run(node, quant_inputs(node, b)), strict=False):
                    qnt.setdefault(name, []).append(value)
            runner.forget(node)
        release(node)
    # Tensors read only by nodes that never needed a search (e.g. a residual read before its conv).
    for tensor in plan.activations:
        decide_amax(tensor, None)
    return result


def _quantize_compute(
    model: onnx.ModelProto,
    node: onnx.NodeProto,
    plan: QdqPlan,
    runner: _NodeRunner,
    ref: dict[str, list[np.ndarray]],
    qnt: dict[str, list[np.ndarray]],
    decide_amax: Callable[[str, Callable[[float], float] | None], float],
    quant_inputs: Callable[[onnx.NodeProto, int], dict[str, np.ndarray]],
    options: SequentialOptions,
    n_search: int,
    result: SequentialResult,
) -> None:
    index = runner.index
    weight_name = node.input[1]
    stored = index.constant(weight_name)
    assert stored is not None
    weight: np.ndarray = stored
    axis = plan.weight_axes.get(node.name)
    out_axis = _output_channel_axis(node)
    n_batches = len(ref[node.input[0]])
    out_name = node.output[0]

    def run(feeds: dict[str, np.ndarray], w: np.ndarray) -> np.ndarray:
        return runner.run(node, {**feeds, weight_name: w.astype(weight.dtype)}, weight_as_input=True)[0]

    ref_out = [run({n: ref[n][b] for n in node.input[:1]}, weight) for b in range(n_batches)]
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

    act_tensor = node.input[0]
    raw_inputs = [qnt[act_tensor][b] for b in range(n_search)]
    w_fq = fq_weight(scale)

    def evaluate(amax: float) -> float:
        outs = [run({act_tensor: int8_weights.fake_quantize_activation(x, amax)}, w_fq) for x in raw_inputs]
        return _squared_error(ref_out[:n_search], outs)

    decide_amax(act_tensor, evaluate)
    original_weight = weight
    if options.target_correction and axis is not None:
        q_inputs = [quant_inputs(node, b)[act_tensor] for b in range(n_batches)]
        enough = _rows_per_weight(node, weight, q_inputs) >= MIN_ROWS_PER_WEIGHT_REFIT
        corrected = _layer_statistics(node, weight, axis, q_inputs, ref[act_tensor]) if enough else None
        del q_inputs
        if corrected is not None:
            weight = corrected.astype(weight.dtype)
            if options.weight_clipping == "max":
                scale = int8_weights.max_weight_scales(weight, axis, qmax)
            else:
                scale = int8_weights.mse_weight_scales(weight, axis, qmax=qmax)
    search_feeds = [quant_inputs(node, b) for b in range(n_search)]
    slot = bias_slot(model, node) if options.bias_correction else None
    centered = slot is not None
    if options.weight_clipping == "mse" and axis is not None:
        amax = int8_weights.channel_absmax(weight, axis).astype(np.float64)
        errors = []
        for ratio in options.ratios:
            s = int8_weights.scale_from_amax(amax * ratio, qmax)
            outs = [run(f, fq_weight(s)) for f in search_feeds]
            errors.append(_channel_error(ref_out[:n_search], outs, out_axis, centered))
        best = np.asarray(options.ratios)[np.argmin(np.stack(errors), axis=0)]
        scale = int8_weights.scale_from_amax(amax * best, qmax)
    values = (
        int8_weights.quantize_weight(weight.reshape(1, -1), scale.reshape(1), 0, qmax).reshape(weight.shape)
        if axis is None
        else int8_weights.quantize_weight(weight, scale, axis, qmax)
    )
    if options.gptq and axis is not None:
        inputs = [quant_inputs(node, b)[act_tensor] for b in range(n_batches)]
        enough = _rows_per_weight(node, weight, inputs) >= MIN_ROWS_PER_WEIGHT_GPTQ
        rounded = _gptq_values(node, weight, scale, axis, inputs, qmax) if enough else None
        if rounded is not None:
            shape = [1] * weight.ndim
            shape[axis] = -1

            def dequant(v: np.ndarray) -> np.ndarray:
                return (v.astype(np.float32) * scale.reshape(shape)).astype(weight.dtype)

            rtn_err = _channel_error(ref_out[:n_search], [run(f, dequant(values)) for f in search_feeds], out_axis, centered)
            gptq_err = _channel_error(ref_out[:n_search], [run(f, dequant(rounded)) for f in search_feeds], out_axis, centered)
            better = gptq_err < rtn_err
            values = np.where(better.reshape(shape), rounded, values)
            result.gptq_channels[node.name] = (int(better.sum()), int(better.size))
    shape_b = [1] * weight.ndim
    if axis is not None:
        shape_b[axis] = -1
    w_fq = (values.astype(np.float32) * np.asarray(scale, np.float32).reshape(shape_b)).astype(weight.dtype)
    q_out = [run(quant_inputs(node, b), w_fq) for b in range(n_batches)]
    new_bias = None
    if slot is not None:
        holder = {n.name: n for n in model.graph.node}[slot[0]]
        old_name = holder.input[slot[1]] if len(holder.input) > slot[1] else ""
        old_bias = index.constant(old_name) if old_name else None
        total, _, count = _channel_moments(ref_out, q_out, out_axis)
        new_bias = int8_bias.shifted_bias(old_bias, total / count, q_out[0].shape[out_axis])
        shift = (new_bias.astype(np.float64) - (0 if old_bias is None else old_bias.astype(np.float64))).astype(np.float32)
        shape = [1] * q_out[0].ndim
        shape[out_axis] = -1
        q_out = [q + shift.reshape(shape) for q in q_out]
        # A bias living in a following Add gets the same shift: addition commutes, so shifting
        # this node's output in the quantized stream is what the corrected Add will compute.
    result.weights[node.name] = WeightQuantization(values, np.asarray(scale, np.float32), axis, new_bias, slot if new_bias is not None else None)
    result.errors[node.name] = {
        "weight_sqnr_db": _sqnr([original_weight], [w_fq]),
        "output_sqnr_db": _sqnr(ref_out, q_out),
    }
    ref[out_name] = ref_out
    qnt[out_name] = q_out
    runner.forget(node)


def _conv_geometry(node: onnx.NodeProto, weight: np.ndarray) -> tuple[Any, ...] | None:
    """(kernel, strides, pads, dilations, depthwise) of a dense or depthwise Conv; None for other groupings."""
    group = int(get_attribute(node, "group", 1))
    depthwise = group > 1 and group == weight.shape[0] and weight.shape[1] == 1
    if group != 1 and not depthwise:
        return None
    kernel = (weight.shape[2], weight.shape[3])
    strides = tuple(get_attribute(node, "strides", [1, 1]))
    pads = tuple(get_attribute(node, "pads", [0, 0, 0, 0]))
    dilations = tuple(get_attribute(node, "dilations", [1, 1]))
    return kernel, strides, pads, dilations, depthwise


def _gptq_values(
    node: onnx.NodeProto, weight: np.ndarray, scale: np.ndarray, axis: int, inputs: list[np.ndarray], qmax: int
) -> np.ndarray | None:
    """GPTQ integers on the per-channel grid, or None for layouts it does not handle."""
    if node.op_type == "Conv" and weight.ndim == 4 and axis == 0:
        geometry = _conv_geometry(node, weight)
        if geometry is None:
            return None
        hessian = int8_statistics.conv_hessian(inputs, *geometry)  # type: ignore[arg-type]
        rows = weight.reshape(weight.shape[0], -1)
        return int8_gptq.gptq_int8(rows, scale, hessian, act_order=False, qmax=qmax).reshape(weight.shape)
    if node.op_type in ("MatMul", "Gemm") and weight.ndim == 2:
        if node.op_type == "Gemm" and int(get_attribute(node, "transA", 0)):
            return None
        hessian = int8_statistics.matmul_hessian(inputs)
        rows = weight if axis == 0 else weight.T
        q = int8_gptq.gptq_int8(rows, scale, hessian, act_order=False, qmax=qmax)
        return q if axis == 0 else q.T
    return None


def _rows_per_weight(node: onnx.NodeProto, weight: np.ndarray, inputs: list[np.ndarray]) -> float:
    """Input rows (patch positions or token rows) per weight of one output channel."""
    if node.op_type == "Conv" and weight.ndim == 4:
        rows = sum(int(np.prod(x.shape[2:])) * x.shape[0] for x in inputs)  # ~ output positions
        per_channel = int(np.prod(weight.shape[1:]))
    else:
        rows = sum(int(np.prod(x.shape[:-1])) for x in inputs)
        per_channel = inputs[0].shape[-1]
    return min(rows, int8_statistics.MAX_ROWS) / max(per_channel, 1)


def _layer_statistics(node: onnx.NodeProto, weight: np.ndarray, axis: int, inputs: list[np.ndarray], targets: list[np.ndarray]) -> np.ndarray | None:
    """The layer's weight refitted (ridge least squares) so its quantized input maps to the float output."""
    if node.op_type == "Conv" and weight.ndim == 4 and axis == 0:
        geometry = _conv_geometry(node, weight)
        if geometry is None:
            return None
        hessian, cross = int8_statistics.conv_statistics(inputs, targets, *geometry)  # type: ignore[arg-type]
        assert cross is not None
        rows = weight.reshape(weight.shape[0], -1)
        return int8_refit.corrected_weight(rows, hessian, cross).reshape(weight.shape)
    if node.op_type in ("MatMul", "Gemm") and weight.ndim == 2:
        if node.op_type == "Gemm" and int(get_attribute(node, "transA", 0)):
            return None
        hessian, cross = int8_statistics.matmul_statistics(inputs, targets)
        assert cross is not None
        rows = weight if axis == 0 else weight.T
        fitted = int8_refit.corrected_weight(rows, hessian, cross)
        return fitted if axis == 0 else fitted.T
    return None
