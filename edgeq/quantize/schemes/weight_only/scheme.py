"""Weight-only quantization: MatMul/Gemm weights and embedding tables to 8, 4 or 2 bits.

One weight at a time (streaming): read the float matrix, let the algorithm choose codes and
scales, emit the format's nodes, drop the float initializer. Data-driven methods (GPTQ, AWQ)
first stream the calibration data once through the float model to collect, per distinct
activation feeding a MatMul/Gemm, ``X^T X`` and the mean ``|x|`` per channel; padding tokens
(``attention_mask == 0``) are left out of both, since no output the user reads depends on them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx

from edgeq.calibrate.observers.base import Observer
from edgeq.errors import ConfigError, UnsupportedError
from edgeq.graph.formats import Emitted, bnb4, gather, matmulnbits, qdq
from edgeq.graph.opset import raise_opset
from edgeq.graph.passes.weight_only import (
    LeftInFloat,
    WeightOnlyRewriter,
    WeightTarget,
    plan_targets,
    read_weight,
    weight_bytes,
)
from edgeq.numerics import weight_only as algorithms
from edgeq.numerics.codecs import Codec, get_codec
from edgeq.numerics.weight_only import AlgorithmResult, LayerStats
from edgeq.numerics.weight_only.awq import awq_group
from edgeq.numerics.weight_only.common import result_error, weight_sqnr_db
from edgeq.progress import progress_bar
from edgeq.quantize.api import QuantizeInputs, QuantizeResult, register
from edgeq.quantize.config import Method, OnnxFormat, WeightFormat, WeightOnlyConfig
from edgeq.quantize.summary import NodeDecision, QuantizationSummary

DATA_DRIVEN = (Method.GPTQ, Method.AWQ)


def check_config(config: WeightOnlyConfig) -> None:
    """Refuse, in one line, the combinations no onnxruntime kernel executes."""
    fmt = config.resolved_format
    table_codec = config.weights in (WeightFormat.NF4, WeightFormat.FP4)
    if table_codec and fmt is not OnnxFormat.BNB4:
        raise UnsupportedError(
            f"--weights {config.weights.value} runs only as com.microsoft.MatMulBnb4; use --format bnb4 "
            "(or --weights int4 for --format matmulnbits/qdq)"
        )
    if not table_codec and fmt is OnnxFormat.BNB4:
        raise UnsupportedError(
            f"--format bnb4 holds nf4 or fp4 codes, not {config.weights.value}; use --weights nf4/fp4 or --format matmulnbits"
        )
    if config.accuracy_level and fmt is not OnnxFormat.MATMULNBITS:
        raise ConfigError(f"--accuracy-level applies to --format matmulnbits only, not {fmt.value}")


def embedding_codec(config: WeightOnlyConfig, codec: Codec) -> tuple[Codec, str]:
    """The codec for embedding tables: NF4/FP4 have no Gather kernel, so their tables use int4."""
    if codec.is_integer:
        return codec, ""
    return get_codec("int4", config.symmetric, codec.positive_scales), f"int4 for the table: no onnxruntime Gather kernel decodes {codec.name}"


# -- calibration statistics ---------------------------------------------------------------


class _TokenMask(Observer):
    """The current batch's ``attention_mask`` (the collector feeds graph inputs to observers too).

    Registered first, so the statistics observers of the same batch read the mask it holds.
    """

    def __init__(self) -> None:
        self.rows: np.ndarray | None = None

    def update(self, x: np.ndarray) -> None:
        self.rows = np.asarray(x).reshape(-1) != 0

    def merge(self, other: Any) -> None:
        raise TypeError("a batch's token mask is not a statistic; there is nothing to merge")


class _LayerStatsObserver(Observer):
    """``X^T X``, mean ``x`` and mean ``|x|`` of one MatMul input over the tokens that are not padding."""

    def __init__(self, mask: _TokenMask | None) -> None:
        self.mask = mask
        self.gram: np.ndarray | None = None
        self.abs_sum: np.ndarray | None = None
        self.sum: np.ndarray | None = None
        self.rows = 0

    def update(self, x: np.ndarray) -> None:
        rows = np.asarray(x, np.float32).reshape(-1, np.shape(x)[-1])
        if self.mask is not None and self.mask.rows is not None and self.mask.rows.size == rows.shape[0]:
            rows = rows[self.mask.rows]
        # One batch's product in float32 (a few thousand rows), the running sum in float64.
        gram = (rows.T @ rows).astype(np.float64)
        magnitude = np.abs(rows).sum(axis=0, dtype=np.float64)
        total = rows.sum(axis=0, dtype=np.float64)
        self.sum = total if self.sum is None else self.sum + total
        self.gram = gram if self.gram is None else self.gram + gram
        self.abs_sum = magnitude if self.abs_sum is None else self.abs_sum + magnitude
        self.rows += rows.shape[0]

    def merge(self, other: Any) -> None:
        self._check_same_kind(other)
        if other.gram is None:
            return
        if self.gram is None or self.abs_sum is None or self.sum is None:
            self.gram, self.abs_sum, self.sum = other.gram.copy(), other.abs_sum.copy(), other.sum.copy()
        else:
            self.gram += other.gram
            self.abs_sum += other.abs_sum
            self.sum += other.sum
        self.rows += other.rows

    def stats(self) -> LayerStats:
        if self.gram is None or self.abs_sum is None or self.sum is None or self.rows == 0:
            return LayerStats()
        return LayerStats(hessian=self.gram / self.rows, magnitudes=self.abs_sum / self.rows, mean=self.sum / self.rows)


def mask_input(model: onnx.ModelProto) -> str | None:
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim if value.type.HasField("tensor_type") else []
        if "mask" in value.name.lower() and len(dims) == 2:
            return value.name
    return None


class _TrimmedPadding:
    """The calibration source with each batch's all-padding tail columns cut off.

    Tokenized calibration sets are padded to a fixed length (MiniLM's: 81% padding); positions
    masked out for every sample of a batch change no unmasked output of an attention model, and
    the statistics ignore them anyway, so running them is pure waste. Applied only when every
    model input is ``[batch, seq]`` with a dynamic ``seq`` and one of them is the mask.
    """

    def __init__(self, data: Any, mask_name: str) -> None:
        self.data = data
        self.mask_name = mask_name
        self.num_samples = data.num_samples

    def batches(self, batch_size: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        # Token ids are small (MiniLM's 512 samples: 1.5 MB): hold them, and batch sentences of
        # similar length together so little padding is left in any batch.
        parts = list(self.data.batches(batch_size))
        if not parts:
            return
        size = len(next(iter(parts[0].values())))
        feeds = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        lengths = np.asarray(feeds[self.mask_name]).astype(bool)
        last = np.where(lengths.any(axis=1), lengths.shape[1] - np.argmax(lengths[:, ::-1], axis=1), 1)
        order = np.argsort(last, kind="stable")
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            width = int(last[rows].max())
            yield {name: np.ascontiguousarray(value[rows, :width]) for name, value in feeds.items()}

    def batch_samples(self, feeds: dict[str, np.ndarray]) -> int:
        return int(self.data.batch_samples(feeds))


def is_sequence_model(model: onnx.ModelProto) -> bool:
    """Every fed input is ``[batch, seq]`` with a dynamic ``seq``: padding columns can be cut."""
    initializers = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim if value.type.HasField("tensor_type") else []
        if len(dims) != 2 or dims[1].HasField("dim_value"):
            return False
    return True


def collect_layer_stats(
    model: onnx.ModelProto, targets: list[WeightTarget], data: Any, progress: bool
) -> dict[str, LayerStats]:
    """Per activation tensor: the Hessian and channel magnitudes, from one pass over ``data``."""
    from edgeq.calibrate.collector import collect

    activations = list(dict.fromkeys(t.activation for t in targets if not t.is_embedding))
    if not activations:
        return {}
    mask_name = mask_input(model)
    mask = _TokenMask() if mask_name is not None else None
    observers: dict[str, list[Observer]] = {}
    if mask_name is not None and mask is not None:
        observers[mask_name] = [mask]  # first: the other observers of a batch read it
    layer_observers = {name: _LayerStatsObserver(mask) for name in activations}
    for name, observer in layer_observers.items():
        observers.setdefault(name, []).append(observer)
    if mask_name is not None and is_sequence_model(model) and hasattr(data, "batches"):
        data = _TrimmedPadding(data, mask_name)
    collect(model, data, observers, progress=progress, description="collecting X^T X")
    return {name: observer.stats() for name, observer in layer_observers.items()}


# -- the handler ----------------------------------------------------------------------------


def _fit_result(
    method: Method, codec: Codec, w: np.ndarray, config: WeightOnlyConfig, stats: LayerStats | None
) -> AlgorithmResult:
    return algorithms.run(
        method.value, codec, w, config.block_size, stats, gptq_damp=config.gptq_damp, gptq_act_order=config.gptq_act_order
    )


def _emit(
    rewriter: WeightOnlyRewriter,
    target: WeightTarget,
    result: AlgorithmResult,
    config: WeightOnlyConfig,
    fmt: OnnxFormat,
    prefix: str,
    readers: set[int],
) -> Emitted:
    """Nodes computing the target's output from its quantized weight in format ``fmt``."""
    emitted = Emitted()
    q = result.quantized
    activation = target.activation
    if result.input_scale is not None:
        activation, scaling = rewriter.scaled_activation(target, result.input_scale, prefix, readers)
        emitted.extend(scaling)
    if target.is_embedding:
        if fmt is OnnxFormat.QDQ:
            emitted.extend(qdq.emit_gather(q, activation, target.output, prefix, target.dtype))
        else:
            emitted.extend(gather.emit(q, activation, target.output, prefix, target.dtype))
        return emitted
    output_bias = None
    if result.bias is not None:
        output_bias = rewriter.fold_output_bias(target, result.bias, prefix)
    needs_add = target.bias is not None or output_bias is not None
    product = target.output if not needs_add else rewriter.fresh(f"{prefix}_product")
    if fmt is OnnxFormat.MATMULNBITS:
        emitted.extend(matmulnbits.emit(q, activation, product, prefix, target.dtype, config.accuracy_level))
    elif fmt is OnnxFormat.QDQ:
        emitted.extend(qdq.emit(q, activation, product, prefix, target.dtype))
    else:
        emitted.extend(bnb4.emit(q, target.rows, target.cols, activation, product, prefix, target.dtype))
    if target.bias is not None:
        gemm_out = target.output if output_bias is None else rewriter.fresh(f"{prefix}_gemm")
        emitted.extend(rewriter.gemm_bias(target, product, prefix, gemm_out))
        product = gemm_out
    if output_bias is not None:
        emitted.extend(output_bias)
        emitted.nodes.append(
            onnx.helper.make_node("Add", [product, output_bias.initializers[0].name], [target.output], name=rewriter.fresh(f"{prefix}_bias_correction"))
        )
    return emitted


def _input_groups(
    targets: list[WeightTarget], config: WeightOnlyConfig, fmt: OnnxFormat, stats: dict[str, LayerStats]
) -> dict[str, list[WeightTarget]]:
    """MatMul/Gemm targets by the activation they read, for the ones a data-driven method fits."""
    groups: dict[str, list[WeightTarget]] = {}
    for target in targets:
        if target.is_embedding or target.activation not in stats or stats[target.activation].magnitudes is None:
            continue
        if fmt is OnnxFormat.BNB4 and bnb4.flat_layout(target.rows, target.cols, config.block_size):
            continue
        groups.setdefault(target.activation, []).append(target)
    return groups


def _refusal(target: WeightTarget, codec: Codec, table_codec: Codec, fmt: OnnxFormat, block_size: int) -> str | None:
    """Why onnxruntime could not run this node in ``fmt`` (it then stays float), from shapes alone."""
    if target.is_embedding:
        if fmt is OnnxFormat.QDQ:
            return None
        return gather.check_table_shape(table_codec.name, table_codec.bits, table_codec.is_integer, target.cols)
    if fmt is OnnxFormat.QDQ:
        return qdq.check_matmul_shape(codec.bits, target.rows, target.cols, block_size)
    return None


def _left(decision: LeftInFloat) -> NodeDecision:
    return NodeDecision(name=decision.name, op_type=decision.op_type, quantized=False, reason=decision.reason, weight=decision.weight)


@register(WeightOnlyConfig)
def quantize_weight_only(model: onnx.ModelProto, config: WeightOnlyConfig, inputs: QuantizeInputs) -> QuantizeResult:
    """The handler behind ``edgeq quantize --weights int8|int4|int2|nf4|fp4``."""
    check_config(config)
    if config.method in DATA_DRIVEN and inputs.data is None:
        raise ConfigError(f"--method {config.method.value} needs calibration data: pass --data (an .npz, folder or recipe)")
    if config.exclude:
        try:
            re.compile(config.exclude)
        except re.error as exc:
            raise ConfigError(f"--exclude: {config.exclude!r} is not a valid regular expression ({exc})") from None
    fmt = config.resolved_format
    # The standard form is what TensorRT and other runtimes read: they refuse negative scales.
    codec = get_codec(config.weights.value, config.symmetric, positive_scales=fmt is OnnxFormat.QDQ)
    if fmt is OnnxFormat.QDQ:
        model = raise_opset(model, qdq.required_opset(codec.bits), "--format qdq", "use --format matmulnbits")

    summary = QuantizationSummary(model=inputs.model_path, config=config.to_dict())
    summary.weight_bytes_before = weight_bytes(model)
    targets, left = plan_targets(model, config.embeddings, config.exclude)
    for skipped in left:
        summary.add(_left(skipped))
    table_codec, table_note = embedding_codec(config, codec)
    runnable = []
    for target in targets:
        reason = _refusal(target, codec, table_codec, fmt, config.block_size)
        if reason is None:
            runnable.append(target)
        else:
            summary.add(NodeDecision(name=target.name, op_type=target.op_type, quantized=False, reason=reason, weight=target.weight))
    targets = runnable
    if not targets:
        summary.notes.append("no MatMul/Gemm/Gather node with a constant float weight: nothing to quantize")
        summary.weight_bytes_after = summary.weight_bytes_before
        return QuantizeResult(model, summary)

    stats: dict[str, LayerStats] = {}
    if config.method in DATA_DRIVEN:
        started = time.perf_counter()
        stats = collect_layer_stats(model, targets, inputs.data, inputs.progress)
        summary.notes.append(f"calibration statistics collected in {time.perf_counter() - started:.1f} s")

    rewriter = WeightOnlyRewriter(model)
    groups = _input_groups(targets, config, fmt, stats)
    fitted: dict[str, AlgorithmResult] = {}
    with progress_bar(len(targets), inputs.progress, "quantizing weights") as bar:
        for target in targets:
            group = groups.get(target.activation, [])
            if config.method is Method.AWQ and target.name not in fitted and target in group:
                # One AWQ fit per shared input (Q, K, V together): one scale vector for all.
                weights = [read_weight(rewriter.model, t) for t in group]
                results = awq_group(codec, weights, config.block_size, stats[target.activation])
                fitted.update({t.name: r for t, r in zip(group, results, strict=True)})
            readers = {t.node_index for t in group}
            decision = _quantize_target(
                rewriter, target, config, fmt, codec, table_codec, table_note, stats, fitted.pop(target.name, None), readers
            )
            summary.add(decision)
            if bar is not None:
                bar.advance(bar.task_ids[0])
    if rewriter.folded_scales:
        summary.notes.append(f"AWQ input scales folded into {rewriter.folded_scales} producer op(s); the others use a Mul")
    model = rewriter.finish()
    summary.weight_bytes_after = weight_bytes(model)
    return QuantizeResult(model, summary)


def _quantize_target(
    rewriter: WeightOnlyRewriter,
    target: WeightTarget,
    config: WeightOnlyConfig,
    fmt: OnnxFormat,
    codec: Codec,
    table_codec: Codec,
    table_note: str,
    stats: dict[str, LayerStats],
    fitted: AlgorithmResult | None = None,
    readers: set[int] | None = None,
) -> NodeDecision:
    w = read_weight(rewriter.model, target)
    method = config.method
    note = ""
    layer_stats = stats.get(target.activation)
    if target.is_embedding:
        codec = table_codec
        note = table_note
        if method in DATA_DRIVEN:
            # A lookup has no input activations to weigh errors by: the best data-free fit.
            method, note = Method.HQQ, "; ".join(filter(None, [note, "hqq for the table: a lookup has no activations"]))
    elif method in DATA_DRIVEN and (layer_stats is None or layer_stats.hessian is None):
        method, note = Method.HQQ, "no calibration activations reached this node; hqq instead"
    flat = fmt is OnnxFormat.BNB4 and not target.is_embedding and bnb4.flat_layout(target.rows, target.cols, config.block_size)
    if flat and method in DATA_DRIVEN:
        method, note = Method.HQQ, f"K={target.cols} is not a multiple of block {config.block_size}: bnb4 blocks straddle rows, hqq instead"

    weight_for_fit = w.reshape(1, -1) if flat else w
    result = fitted if fitted is not None else _fit_result(method, codec, weight_for_fit, config, layer_stats)
    error: dict[str, float] = {"weight_sqnr_db": round(weight_sqnr_db(w, result), 3)}
    if layer_stats is not None and layer_stats.hessian is not None and not target.is_embedding:
        error["output_rel_mse"] = float(result_error(w, result, layer_stats))
        if result.rtn_error is not None:
            error["rtn_output_rel_mse"] = float(result.rtn_error)
    prefix = rewriter.prefix(target)
    emitted = _emit(rewriter, target, result, config, fmt, prefix, readers or {target.node_index})
    rewriter.replace(target, emitted)
    q = result.quantized
    kind = "asym" if q.zero_points is not None else "sym" if q.codec.is_integer else "absmax"
    scheme = f"{q.codec.name} block{q.block_size} {kind} {method.value}"
    if result.input_scale is not None:
        scheme += " +input scale"
    if result.bias is not None:
        scheme += " +bias correction"
    if note:
        scheme += f" ({note})"
    return NodeDecision(
        name=target.name,
        op_type=target.op_type,
        quantized=True,
        scheme=scheme,
        weight=target.weight,
        bits=float(q.codec.bits),
        block_size=q.block_size,
        method=method.value,
        error=error,
    )
