"""Mixed precision under a byte budget: measure each matrix, choose its format, write the mix.

``edgeq quantize MODEL --budget 12MB`` (or ``--avg-bits 3``) runs three steps:

1. **sensitivity**: every quantizable matrix is quantized with every candidate format, and the
   dequantized weight is put back into the float model *alone*; the model's output error on a
   few calibration samples (relative squared error over real tokens) is the matrix's cost of
   that format. One onnxruntime session serves every measurement: the weights are turned into
   graph inputs, so swapping one matrix is a different feed, not a new session. This is the
   default because it sees what a layer-local proxy cannot, how much of a layer's error
   survives the rest of the network (``benchmarks/mixed.py`` prints how well the Hessian proxy
   ``trace(E H E^T)`` ranks layers against it on MiniLM);
2. **allocation**: the multiple-choice knapsack in :mod:`edgeq.numerics.allocation` with each
   option's exact stored bytes (codes, scales and zero points as the ONNX format writes them,
   computed by the very emitters that write the file);
3. **rewrite**: each matrix is quantized again with its chosen format (the algorithms are
   deterministic, so it is the same weight that was measured) and spliced in by the weight-only
   rewriter; the plan goes to the summary and to the model's ``metadata_props``.

The budget counts the weights of the quantizable matrices only (what this scheme can change);
biases, norms and the graph itself are extra and the summary states the whole file's size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import onnx

from edgeq.errors import ConfigError
from edgeq.graph.passes.weight_only import weight_bytes
from edgeq.numerics.allocation import (
    Allocation,
    allocate,
    budget_from_avg_bits,
    format_bytes,
    least_error_bytes,
    minimum_bytes,
)
from edgeq.numerics.weight_only import LayerStats
from edgeq.numerics.weight_only.common import DATA_DRIVEN
from edgeq.quantize.api import QuantizeInputs, QuantizeResult, register
from edgeq.quantize.config import MixedPrecisionConfig
from edgeq.quantize.schemes.mixed.candidates import check_config, resolve_candidates
from edgeq.quantize.schemes.mixed.fitting import planned_bytes
from edgeq.quantize.schemes.mixed.sensitivity import SensitivityTable, measure_sensitivity, plan_matrices
from edgeq.quantize.schemes.mixed.writer import (
    METADATA_KEY,
    Written,
    build_mixed,
    plan_metadata,
    set_metadata,
)
from edgeq.quantize.schemes.weight_only.decisions import left_decision, nothing_to_quantize
from edgeq.quantize.schemes.weight_only.stats import timed_layer_stats
from edgeq.quantize.summary import QuantizationSummary


def check_budget(budget: int, smallest: int, config: MixedPrecisionConfig, num_weights: int) -> None:
    """Refuse a budget no allocation can meet, naming the smallest achievable size."""
    if budget >= smallest:
        return
    if config.avg_bits is not None:
        raise ConfigError(
            f"--avg-bits {config.avg_bits:g} ({format_bytes(budget)}) is below the smallest achievable "
            f"{8 * smallest / max(num_weights, 1):.3f} bits per weight ({format_bytes(smallest)}) with candidates {','.join(resolve_candidates(config))}"
        )
    raise ConfigError(
        f"--budget {format_bytes(budget)} is below the smallest achievable size {format_bytes(smallest)} "
        f"(every matrix at its smallest candidate of {','.join(resolve_candidates(config))}, block {config.block_size})"
    )


def resolve_budget(config: MixedPrecisionConfig, num_weights: int) -> int:
    """The budget in bytes: ``--budget`` as given, or ``--avg-bits`` over the matrices' weights."""
    if config.budget_bytes is not None:
        return int(config.budget_bytes)
    assert config.avg_bits is not None  # check_config guarantees one of them
    return budget_from_avg_bits(config.avg_bits, num_weights)


@register(MixedPrecisionConfig)
def quantize_mixed(model: onnx.ModelProto, config: MixedPrecisionConfig, inputs: QuantizeInputs) -> QuantizeResult:
    """The handler behind ``edgeq quantize --budget 12MB`` / ``--avg-bits 3``."""
    method = check_config(config)
    if inputs.data is None:
        raise ConfigError("mixed precision measures each matrix's effect on the outputs: pass --data (an .npz, folder or recipe)")
    candidates = resolve_candidates(config)
    summary = QuantizationSummary(model=inputs.model_path, config=config.to_dict())
    summary.weight_bytes_before = weight_bytes(model)
    planned = plan_matrices(model, config)
    targets, left, unavailable = planned
    for skipped in left:
        summary.add(left_decision(skipped))
    if not targets:
        return nothing_to_quantize(model, summary)

    num_weights = sum(t.rows * t.cols for t in targets)
    budget = resolve_budget(config, num_weights)
    # Refuse an impossible budget before measuring anything (AWQ's input scales only add bytes).
    smallest = sum(
        min(planned_bytes(t, fmt, config.block_size) for fmt in candidates if fmt not in unavailable[i])
        for i, t in enumerate(targets)
    )
    check_budget(budget, smallest, config, num_weights)

    stats: dict[str, LayerStats] = {}
    if method in DATA_DRIVEN:
        stats = timed_layer_stats(model, targets, inputs.data, inputs.progress, summary.notes)
    table = measure_sensitivity(model, config, inputs.data, stats, inputs.progress, planned=planned)
    options = table.options()
    check_budget(budget, minimum_bytes(options), config, num_weights)
    allocation = allocate(options, budget)
    formats = [m.fits[j].format for m, j in zip(table.matrices, allocation.choice, strict=True)]

    written = build_mixed(model, table, formats, config, stats)
    for decision in written.decisions:
        summary.add(decision)
    measured = table.probe.model_error(written.model) if table.probe is not None else None
    metadata = plan_metadata(table, formats, written.nbytes, budget, config, allocation, measured)
    set_metadata(written.model, METADATA_KEY, json.dumps(metadata, sort_keys=True))
    summary.weight_bytes_after = weight_bytes(written.model)
    summary.notes.extend(_notes(table, formats, written, budget, allocation, measured, config))
    return QuantizeResult(written.model, summary)


def _notes(
    table: SensitivityTable, formats: Sequence[str], written: Written, budget: int,
    allocation: Allocation, measured: float | None, config: MixedPrecisionConfig,
) -> list[str]:
    total = int(sum(written.nbytes))
    counts = {fmt: formats.count(fmt) for fmt in dict.fromkeys(formats)}
    mix = ", ".join(f"{n} x {fmt}" for fmt, n in counts.items())
    notes = [
        f"mixed precision: {mix}; weights {format_bytes(total)} of the {format_bytes(budget)} budget "
        f"({8 * total / max(table.num_weights, 1):.3f} bits per weight, {len(table.matrices)} matrices; "
        "the budget counts the quantizable matrices' codes, scales and zero points as stored)",
        f"float size of those matrices {format_bytes(table.float_bytes)}; whole model file {format_bytes(written.model.ByteSize())}",
        f"sensitivity: measured output error with each matrix alone quantized, {table.samples} calibration samples, "
        f"{table.probe.runs if table.probe else 0} runs in {table.seconds:.1f} s",
        f"allocation: {allocation.solver}{' (optimal)' if allocation.optimal else f', lower bound {allocation.lower_bound:.4g}'}; "
        f"predicted output error {allocation.error:.4g}" + (f", measured on the written model {measured:.4g}" if measured is not None else ""),
    ]
    if budget >= least_error_bytes(table.options()):
        notes.append(
            f"the budget covers {format_bytes(least_error_bytes(table.options()))}: every matrix takes its most accurate candidate, no trade-off was needed"
        )
    if budget >= table.float_bytes:
        notes.append(f"the budget is at least the float size of the matrices ({format_bytes(table.float_bytes)})")
    if config.avg_bits is not None:
        notes.append(f"--avg-bits {config.avg_bits:g} -> budget {format_bytes(budget)} over {table.num_weights:,} weights")
    return notes
