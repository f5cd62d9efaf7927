"""Weight-only quantization: MatMul/Gemm weights and embedding tables to 8, 4 or 2 bits.

One weight at a time (streaming): read the float matrix, let the algorithm choose codes and
scales, emit the format's nodes, drop the float initializer. Data-driven methods (GPTQ, AWQ)
first stream the calibration data once through the float model to collect, per distinct
activation feeding a MatMul/Gemm, ``X^T X`` and the mean ``|x|`` per channel; padding tokens
(``attention_mask == 0``) are left out of both, since no output the user reads depends on them.
"""

from __future__ import annotations

import numpy as np
import onnx

from edgeq.errors import ConfigError, UnsupportedError
from edgeq.graph.formats import bnb4, gather, qdq
from edgeq.graph.opset import raise_opset
from edgeq.graph.passes.lm_head import plan_decoder
from edgeq.graph.passes.weight_dq import weight_bytes_all
from edgeq.graph.passes.weight_only import WeightOnlyRewriter, WeightTarget
from edgeq.numerics import weight_only as algorithms
from edgeq.numerics.codecs import Codec, get_codec
from edgeq.numerics.weight_only import AlgorithmResult, LayerStats
from edgeq.numerics.weight_only.awq import awq_group
from edgeq.numerics.weight_only.common import DATA_DRIVEN, data_free_fallback, result_error, weight_sqnr_db
from edgeq.progress import progress_bar
from edgeq.quantize.api import QuantizeInputs, QuantizeResult, register
from edgeq.quantize.config import Method, OnnxFormat, WeightFormat, WeightOnlyConfig
from edgeq.quantize.coverage import census
from edgeq.quantize.schemes.weight_only import dq_weights
from edgeq.quantize.schemes.weight_only.bounds import check_block_size_fits
from edgeq.quantize.schemes.weight_only.decisions import left_decision, scheme_label
from edgeq.quantize.schemes.weight_only.heads import (
    float_heads,
    head_codec,
    share_refusal,
    tie_note,
    write_shared_lookup,
)
from edgeq.quantize.schemes.weight_only.stats import timed_layer_stats
from edgeq.quantize.schemes.weight_only.writer import emit_target
from edgeq.quantize.summary import NodeDecision, QuantizationSummary


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


def _fit_result(
    method: Method, codec: Codec, w: np.ndarray, config: WeightOnlyConfig, stats: LayerStats | None
) -> AlgorithmResult:
    return algorithms.run(
        method.value, codec, w, config.block_size, stats, gptq_damp=config.gptq_damp, gptq_act_order=config.gptq_act_order
    )


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


@register(WeightOnlyConfig)
def quantize_weight_only(model: onnx.ModelProto, config: WeightOnlyConfig, inputs: QuantizeInputs) -> QuantizeResult:
    """The handler behind ``edgeq quantize --weights int8|int4|int2|nf4|fp4``."""
    check_config(config)
    if config.method in DATA_DRIVEN and inputs.data is None:
        raise ConfigError(f"--method {config.method.value} needs calibration data: pass --data (an .npz, folder or recipe)")
    fmt, head_fmt = config.resolved_format, config.head_format
    # The standard form is what TensorRT and other runtimes read: they refuse negative scales.
    codec = get_codec(config.weights.value, config.symmetric, positive_scales=fmt is OnnxFormat.QDQ)
    lm_codec = head_codec(config)
    qdq_bits = [c.bits for c, f in ((codec, fmt), (lm_codec, head_fmt)) if c is not None and f is OnnxFormat.QDQ]
    if qdq_bits:
        model = raise_opset(model, max(qdq.required_opset(b) for b in qdq_bits), "--format qdq", "use --format matmulnbits")
    model = dq_weights.raise_for(model, config)
    sites = census(model)

    summary = QuantizationSummary(model=inputs.model_path, config=config.to_dict())
    summary.weight_bytes_before = weight_bytes_all(model)
    plan = plan_decoder(model, config.embeddings, config.exclude)
    targets, left = plan.targets, [s for s in plan.left if s.op_type not in dq_weights.TOP_LEVEL_OPS]  # written below
    check_block_size_fits(config.block_size, targets)
    if lm_codec is None:
        targets, kept, notes = float_heads(plan)
        left = [*left, *kept]
        summary.notes.extend(notes)
    for skipped in left:
        summary.add(left_decision(skipped))
    table_codec, table_note = embedding_codec(config, codec)

    def codec_of(target: WeightTarget) -> tuple[Codec, OnnxFormat]:
        return (lm_codec, head_fmt) if target.lm_head and lm_codec is not None else (codec, fmt)

    ties = {id(t.head): t for t in plan.ties if any(t.head is x for x in targets)}
    shared = {id(t.gather): t for t in ties.values()
              if t.gather is not None and share_refusal(t, config, codec_of(t.head)[0], table_codec) is None}
    runnable = []
    for target in targets:
        target_codec, target_fmt = codec_of(target)
        reason = None if id(target) in shared else _refusal(target, target_codec, table_codec, target_fmt, config.block_size)
        if reason is None:
            runnable.append(target)
        else:
            summary.add(NodeDecision(name=target.name, op_type=target.op_type, quantized=False, reason=reason, weight=target.weight))
    targets = runnable
    if not targets:
        return dq_weights.finish(model, summary, config, sites)

    stats: dict[str, LayerStats] = {}
    if config.method in DATA_DRIVEN:
        stats = timed_layer_stats(model, targets, inputs.data, inputs.progress, summary.notes, inputs.layer_stats)

    rewriter = WeightOnlyRewriter(model)
    groups = _input_groups([t for t in targets if codec_of(t)[0] == codec], config, fmt, stats)
    fitted: dict[str, AlgorithmResult] = {}
    decisions: dict[int, NodeDecision] = {}
    with progress_bar(len(targets), inputs.progress, "quantizing weights") as bar:
        for target in targets:
            if id(target) in shared:
                continue  # written with its head, from the head's codes
            group = groups.get(target.activation, [])
            if config.method is Method.AWQ and target.name not in fitted and target in group:
                # One AWQ fit per shared input (Q, K, V together): one scale vector for all.
                weights = [rewriter.weight(t) for t in group]
                results = awq_group(codec, weights, config.block_size, stats[target.activation])
                fitted.update({t.name: r for t, r in zip(group, results, strict=True)})
            readers = {t.node_index for t in group}
            target_codec, target_fmt = codec_of(target)
            decision = _quantize_target(
                rewriter, target, config, target_fmt, target_codec, table_codec, table_note, stats,
                fitted.pop(target.name, None), readers,
            )
            decisions[id(target)] = decision
            tie = ties.get(id(target))
            if tie is not None and tie.gather is not None and id(tie.gather) in shared:
                decisions[id(tie.gather)] = write_shared_lookup(rewriter, tie.head, tie.gather, decision)
            if bar is not None:
                bar.advance(bar.task_ids[0], advance=1 + (tie is not None and id(tie.gather) in shared))
    for target in targets:  # in graph order
        summary.add(decisions[id(target)])
    for tie in ties.values():
        if id(tie.head) not in decisions:
            continue
        gather = decisions.get(id(tie.gather))
        refusal = None if id(tie.gather) in shared else share_refusal(tie, config, codec_of(tie.head)[0], table_codec)
        summary.notes.append(tie_note(tie, decisions[id(tie.head)].scheme, gather.scheme if gather else "", refusal))
    if rewriter.folded_scales:
        summary.notes.append(f"AWQ input scales folded into {rewriter.folded_scales} producer op(s); the others use a Mul")
    return dq_weights.finish(rewriter.finish(), summary, config, sites)


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
    w = rewriter.weight(target)
    layer_stats = stats.get(target.activation)
    flat = fmt is OnnxFormat.BNB4 and not target.is_embedding and bnb4.flat_layout(target.rows, target.cols, config.block_size)
    chosen, note = data_free_fallback(
        config.method, table=target.is_embedding, has_hessian=layer_stats is not None and layer_stats.hessian is not None,
        flat=flat, cols=target.cols, block_size=config.block_size,
    )
    method = Method(chosen)
    if target.is_embedding:
        codec = table_codec
        note = "; ".join(filter(None, [table_note, note]))

    weight_for_fit = w.reshape(1, -1) if flat else w
    result = fitted if fitted is not None else _fit_result(method, codec, weight_for_fit, config, layer_stats)
    error: dict[str, float] = {"weight_sqnr_db": round(weight_sqnr_db(w, result), 3)}
    if layer_stats is not None and layer_stats.hessian is not None and not target.is_embedding:
        error["output_rel_mse"] = float(result_error(w, result, layer_stats))
        if result.rtn_error is not None:
            error["rtn_output_rel_mse"] = float(result.rtn_error)
    prefix = rewriter.prefix(target)
    emitted = emit_target(rewriter, target, result, config, fmt, prefix, readers or {target.node_index})
    rewriter.replace(target, emitted)
    q = result.quantized
    kind = "asym" if q.zero_points is not None else "sym" if q.codec.is_integer else "absmax"
    scheme = scheme_label(
        q, kind, method.value, input_scale=result.input_scale is not None, bias_correction=result.bias is not None, note=note
    )
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
