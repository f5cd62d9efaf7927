"""Writing the chosen mix: each matrix spliced in with its format, and the plan as model metadata."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import onnx

from edgeq.graph.passes.weight_only import WeightOnlyRewriter
from edgeq.numerics.allocation import Allocation, format_bytes
from edgeq.numerics.weight_only import LayerStats
from edgeq.quantize.config import MixedPrecisionConfig
from edgeq.quantize.schemes.mixed.candidates import FLOAT, check_config, resolve_candidates
from edgeq.quantize.schemes.mixed.fitting import Fitted, extra_bytes, fit, float_bytes, replacement
from edgeq.quantize.schemes.mixed.sensitivity import SensitivityTable
from edgeq.quantize.schemes.weight_only.decisions import scheme_label
from edgeq.quantize.schemes.weight_only.heads import write_shared_lookup
from edgeq.quantize.summary import NodeDecision

METADATA_KEY = "edgeq.mixed_precision"


@dataclass
class Written:
    """The rewritten model, one summary decision per matrix, and the bytes each matrix now takes."""

    model: onnx.ModelProto
    decisions: list[NodeDecision]
    nbytes: list[int]  # per matrix, bytes of the initializers that replaced its weight


def build_mixed(
    model: onnx.ModelProto,
    table: SensitivityTable,
    formats: Sequence[str],
    config: MixedPrecisionConfig,
    stats: dict[str, LayerStats] | None = None,
    fits: dict[tuple[int, str], Fitted] | None = None,
) -> Written:
    """Rewrite ``model`` (modified in place) with ``formats[i]`` for matrix ``i`` of ``table``.

    ``fits`` may carry fitted weights from an earlier call with the same model and config (a
    benchmark writing many mixes); new fits are added to it.
    """
    method = check_config(config)
    stats = stats or {}
    rewriter = WeightOnlyRewriter(model)
    decisions: list[NodeDecision] = []
    sizes: list[int] = []
    for i, (matrix, fmt) in enumerate(zip(table.matrices, formats, strict=True)):
        target = matrix.target
        option = matrix.option(fmt)
        if option is None:
            raise ValueError(f"{target.name}: {fmt} is not one of its measured formats")
        error = {"predicted_output_rel_mse": option.error, "bytes": float(option.nbytes)}
        if fmt == FLOAT:
            sizes.append(float_bytes(target))
            reason = f"kept in float by the mixed-precision plan ({format_bytes(option.nbytes)} fit the budget)"
            for node in (target, target.shared_lookup):
                if node is not None:
                    decisions.append(NodeDecision(name=node.name, op_type=node.op_type, quantized=False,
                                                  weight=node.weight, error=error if node is target else {}, reason=reason))
            continue
        fitted = fits.get((i, fmt)) if fits is not None else None
        if fitted is None:
            fitted = fit(rewriter.weight(target), target, fmt, config.block_size, method, stats)
            if fits is not None:
                fits[(i, fmt)] = fitted
        result = fitted.result
        emitted, weight_part = replacement(target, result, rewriter.prefix(target), rewriter.fresh, rewriter.gemm_bias)
        rewriter.replace(target, emitted)
        sizes.append(weight_part.nbytes() + extra_bytes(target, result))
        q = fitted.result.quantized
        scheme = scheme_label(
            q, "sym", f"{fitted.method.value} (mixed)",
            input_scale=result.input_scale is not None,
            bias_correction=not target.is_embedding and result.bias is not None, note=fitted.note,
        )
        error["weight_sqnr_db"] = option.weight_sqnr_db
        decision = NodeDecision(
            name=target.name, op_type=target.op_type, quantized=True, scheme=scheme, weight=target.weight,
            bits=float(q.codec.bits), block_size=q.block_size, method=fitted.method.value, error=error,
        )
        decisions.append(decision)
        if target.shared_lookup is not None:
            decisions.append(write_shared_lookup(rewriter, target, target.shared_lookup, decision))
    return Written(rewriter.finish(), decisions, sizes)


def plan_metadata(
    table: SensitivityTable, formats: Sequence[str], sizes: Sequence[int], budget: int,
    config: MixedPrecisionConfig, allocation: Allocation, measured: float | None,
    file_part: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The plan as the ``edgeq.mixed_precision`` metadata JSON: enough to audit every choice.

    ``file_part`` (``--budget``) holds ``fixed_bytes``, the file without the removable weights,
    and ``weights_allowance``, the budget left for the matrices' own bytes (less this entry).
    """
    total = int(sum(sizes))
    nodes = []
    predicted = 0.0
    for matrix, fmt, size in zip(table.matrices, formats, sizes, strict=True):
        option = matrix.option(fmt)
        predicted += option.error if option else 0.0
        node: dict[str, Any] = {
            "node": matrix.target.name,
            "weight": matrix.target.weight,
            "format": fmt,
            "bytes": int(size),
            "predicted_error": option.error if option else None,
            "candidates": {f.format: {"bytes": f.nbytes, "error": f.error} for f in matrix.fits},
        }
        if file_part is not None:
            node["file_bytes"] = option.file_bytes if option else None
        nodes.append(node)
    counts = (
        "the whole written file: graph, metadata, tensors left in float and the matrices as stored"
        if file_part is not None else "weights of the quantizable matrices: codes + scales + zero points as stored"
    )
    return {
        "version": 2,
        "budget_bytes": budget,
        "avg_bits_requested": config.avg_bits,
        "budget_counts": counts,
        **(file_part or {}),
        "candidates": resolve_candidates(config),
        "block_size": config.block_size,
        "method": str(getattr(config.method, "value", config.method)),
        "sensitivity": f"measured: relative output squared error, each matrix alone, {table.samples} calibration samples",
        "solver": allocation.solver,
        "optimal": allocation.optimal,
        "weight_bytes": total,
        "bits_per_weight": 8.0 * total / max(table.num_weights, 1),
        "predicted_error": predicted,
        "measured_error": measured,
        "nodes": nodes,
    }


def set_metadata(model: onnx.ModelProto, key: str, value: str) -> None:
    """Set one ``metadata_props`` entry, replacing an earlier value of the same key."""
    for prop in model.metadata_props:
        if prop.key == key:
            prop.value = value
            return
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value
