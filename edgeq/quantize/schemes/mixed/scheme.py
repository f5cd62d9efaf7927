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

``--budget`` counts the whole written file, what a board's flash or RAM has to hold: the model
without the removable weights is measured once (graph, metadata, every tensor left alone) and
the allocation gets what is left, each option priced by everything it adds to the file (see
:mod:`~edgeq.quantize.schemes.mixed.filesize`); the written model's size is then checked, and a
plan that still overshoots (by bytes no estimate saw) is tightened by the excess and allocated
once more. ``--weight-budget`` and ``--avg-bits`` count the quantizable matrices' stored weights
only, and the summary states the whole file's size beside them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

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
from edgeq.quantize.schemes.mixed.filesize import (
    entry_bytes,
    removable_weights,
    stripped_bytes,
    written_bytes,
)
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

# Bytes of the written file no estimate prices: the com.microsoft opset import (18), the graph's
# length growing a varint byte, a name the rewriter makes unique with a longer suffix. Measured
# 19-20 on the unit tests' models; an overshoot is caught after writing and tightened anyway.
FILE_SLACK = 64
# Per matrix, how much the plan's metadata can differ from the provisional one it is measured
# on: a longer format name, more digits in its byte count and its predicted error.
PLAN_SLACK_PER_MATRIX = 48
# A number with more digits than any byte count the plan records (so the reserve does not depend on the budget).
PLACEHOLDER = 10**13


@dataclass
class Outcome:
    """One written plan: the model, its formats, the allocation behind it and what it measures."""

    written: Written
    formats: list[str]
    allocation: Allocation
    measured: float | None
    file_size: int
    fixed_bytes: int = 0  # --budget: the file without the removable weights, plus the plan's entry
    allowance: int = 0  # --budget: what the allocation was given for the matrices' file bytes


def check_budget(budget: int, smallest: int, config: MixedPrecisionConfig, num_weights: int, fixed: int = 0) -> None:
    """Refuse a budget no allocation can meet, naming the smallest achievable size."""
    if budget >= smallest:
        return
    formats = f"every matrix at its smallest candidate of {','.join(resolve_candidates(config))}, block {config.block_size}"
    if config.avg_bits is not None:
        raise ConfigError(
            f"--avg-bits {config.avg_bits:g} ({format_bytes(budget)}) is below the smallest achievable "
            f"{8 * smallest / max(num_weights, 1):.3f} bits per weight ({format_bytes(smallest)}) with candidates {','.join(resolve_candidates(config))}"
        )
    if config.counts_whole_file:
        raise ConfigError(
            f"--budget {format_bytes(budget)} is below the smallest achievable size {format_bytes(smallest)} for the whole file "
            f"({format_bytes(fixed)} of graph, metadata and tensors left in float, {format_bytes(smallest - fixed)} with {formats})"
        )
    raise ConfigError(f"--weight-budget {format_bytes(budget)} is below the smallest achievable size {format_bytes(smallest)} ({formats})")


def resolve_budget(config: MixedPrecisionConfig, num_weights: int) -> int:
    """The budget in bytes: ``--budget`` or ``--weight-budget`` as given, or ``--avg-bits`` over the matrices' weights."""
    if config.budget_bytes is not None:
        return int(config.budget_bytes)
    if config.weight_budget_bytes is not None:
        return int(config.weight_budget_bytes)
    assert config.avg_bits is not None  # the config guarantees one of them
    return budget_from_avg_bits(config.avg_bits, num_weights)


@register(MixedPrecisionConfig)
def quantize_mixed(model: onnx.ModelProto, config: MixedPrecisionConfig, inputs: QuantizeInputs) -> QuantizeResult:
    """The handler behind ``edgeq quantize --budget 12MB`` / ``--weight-budget 12MB`` / ``--avg-bits 3``."""
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
    # Refuse an impossible budget before measuring anything (a lower bound: AWQ's input scales,
    # node and tensor headers only add bytes).
    smallest = sum(
        min(planned_bytes(t, fmt, config.block_size) for fmt in candidates if fmt not in unavailable[i])
        for i, t in enumerate(targets)
    )
    fixed = stripped_bytes(model, removable_weights(model, targets)) if config.counts_whole_file else 0
    check_budget(budget, fixed + smallest, config, num_weights, fixed)

    stats: dict[str, LayerStats] = {}
    if method in DATA_DRIVEN:
        stats = timed_layer_stats(model, targets, inputs.data, inputs.progress, summary.notes, inputs.layer_stats)
    table = measure_sensitivity(model, config, inputs.data, stats, inputs.progress, planned=planned)
    if config.counts_whole_file:
        outcome = within_file(model, table, config, stats, budget)
    else:
        options = table.options()
        check_budget(budget, minimum_bytes(options), config, num_weights)
        outcome = write_plan(model, table, allocate(options, budget), config, stats, budget)
    for decision in outcome.written.decisions:
        summary.add(decision)
    summary.weight_bytes_after = weight_bytes(outcome.written.model)
    summary.notes.extend(_notes(table, outcome, budget, config))
    return QuantizeResult(outcome.written.model, summary)


def write_plan(
    model: onnx.ModelProto, table: SensitivityTable, allocation: Allocation, config: MixedPrecisionConfig,
    stats: dict[str, LayerStats], budget: int, file_part: dict[str, int] | None = None,
) -> Outcome:
    """Rewrite ``model`` (in place) with the allocation's formats and put the plan in its metadata."""
    formats = [m.fits[j].format for m, j in zip(table.matrices, allocation.choice, strict=True)]
    written = build_mixed(model, table, formats, config, stats)
    measured = table.probe.model_error(written.model) if table.probe is not None else None
    metadata = plan_metadata(table, formats, written.nbytes, budget, config, allocation, measured, file_part)
    set_metadata(written.model, METADATA_KEY, json.dumps(metadata, sort_keys=True))
    return Outcome(written, formats, allocation, measured, written_bytes(written.model))


def file_part(table: SensitivityTable, overhead: int, allowance: int) -> dict[str, int]:
    """What the plan's metadata records about a ``--budget`` allocation (the same keys when measured)."""
    return {"fixed_bytes": table.fixed_bytes, "matrix_overhead_bytes": overhead, "weights_allowance": allowance}


def plan_entry_bytes(table: SensitivityTable, config: MixedPrecisionConfig) -> int:
    """Bytes kept for the plan's own metadata entry, measured on a provisional plan (every matrix
    at its smallest option): the real plan differs only in numbers and format names."""
    choice = [min(range(len(m.fits)), key=lambda j: m.fits[j].nbytes) for m in table.matrices]
    formats = [m.fits[j].format for m, j in zip(table.matrices, choice, strict=True)]
    sizes = [m.fits[j].nbytes for m, j in zip(table.matrices, choice, strict=True)]
    provisional = Allocation(choice, sum(sizes), 0.0, f"DP on a {PLACEHOLDER}-byte grid+greedy", False)
    placeholder = {key: PLACEHOLDER for key in file_part(table, 0, 0)}
    text = json.dumps(plan_metadata(table, formats, sizes, PLACEHOLDER, config, provisional, -1.2345678901234567e-300, placeholder), sort_keys=True)
    return entry_bytes(METADATA_KEY, len(text.encode()) + PLAN_SLACK_PER_MATRIX * len(table.matrices) + 64)


def file_fixed_bytes(table: SensitivityTable, config: MixedPrecisionConfig) -> tuple[int, int]:
    """The bytes of the file that the matrices' stored weights are not, at most, and the matrices' header part of it.

    The model without the removable weights, each matrix's largest header overhead, the plan's
    metadata entry and the slack: a ``--budget`` leaves the rest to the knapsack.
    """
    overhead = sum(max(f.file_bytes - f.nbytes for f in m.fits) for m in table.matrices)
    return table.fixed_bytes + overhead + plan_entry_bytes(table, config) + FILE_SLACK, overhead


def within_file(
    model: onnx.ModelProto, table: SensitivityTable, config: MixedPrecisionConfig, stats: dict[str, LayerStats], budget: int,
) -> Outcome:
    """``--budget``: allocate what the fixed part leaves, write, check the file; tighten once if it overshoots.

    The knapsack keeps the stored weight bytes as its prices (their large common factors keep
    the DP exact) and each matrix's largest header overhead (its nodes and tensor headers, in
    whichever format) moves into the fixed part: an upper bound off by a few bytes per matrix.
    """
    options = table.options()
    fixed, overhead = file_fixed_bytes(table, config)
    check_budget(budget, fixed + minimum_bytes(options), config, table.num_weights, fixed)
    snapshot = onnx.ModelProto()  # the rewrite works in place: keep the float model for a second try
    snapshot.CopyFrom(model)
    allowance = budget - fixed
    for source in (model, snapshot):
        outcome = write_plan(source, table, allocate(options, allowance), config, stats, budget, file_part(table, overhead, allowance))
        outcome.fixed_bytes, outcome.allowance = fixed, allowance
        if outcome.file_size <= budget:
            return outcome
        allowance = outcome.allocation.nbytes - (outcome.file_size - budget)  # what it spent, less the excess
        if allowance < minimum_bytes(options):
            break
    raise ConfigError(
        f"--budget {format_bytes(budget)}: the written file would be {format_bytes(outcome.file_size)} "
        f"({format_bytes(table.fixed_bytes)} of graph, metadata and tensors left in float, the rest the matrices and the plan); "
        "raise the budget or drop a candidate"
    )


def _notes(table: SensitivityTable, outcome: Outcome, budget: int, config: MixedPrecisionConfig) -> list[str]:
    formats, written, allocation, measured = outcome.formats, outcome.written, outcome.allocation, outcome.measured
    total = int(sum(written.nbytes))
    counts = {fmt: formats.count(fmt) for fmt in dict.fromkeys(formats)}
    mix = ", ".join(f"{n} x {fmt}" for fmt, n in counts.items())
    bits = f"{8 * total / max(table.num_weights, 1):.3f} bits per weight, {len(table.matrices)} matrices"
    if config.counts_whole_file:
        notes = [
            f"mixed precision: {mix}; the budget counts the whole file: budget {format_bytes(budget)}, "
            f"file written {format_bytes(outcome.file_size)}, margin {format_bytes(budget - outcome.file_size)}",
            f"of the file: matrices {format_bytes(total)} ({bits}); graph, metadata and tensors left in float "
            f"{format_bytes(outcome.file_size - total)}; float size of the matrices {format_bytes(table.float_bytes)}",
        ]
    else:
        option = "--avg-bits" if config.avg_bits is not None else "--weight-budget"
        notes = [
            f"mixed precision: {mix}; weights {format_bytes(total)} of the {format_bytes(budget)} budget ({bits}; "
            f"{option}: the budget counts the quantizable matrices' codes, scales and zero points as stored)",
            f"float size of those matrices {format_bytes(table.float_bytes)}; whole model file {format_bytes(outcome.file_size)}",
        ]
    notes += [
        f"sensitivity: measured output error with each matrix alone quantized, {table.samples} calibration samples, "
        f"{table.probe.runs if table.probe else 0} runs in {table.seconds:.1f} s",
        f"allocation: {allocation.solver}{' (optimal)' if allocation.optimal else f', lower bound {allocation.lower_bound:.4g}'}; "
        f"predicted output error {allocation.error:.4g}" + (f", measured on the written model {measured:.4g}" if measured is not None else ""),
    ]
    if config.counts_whole_file:
        covered = outcome.allowance >= least_error_bytes(table.options())
        above_float = budget >= table.fixed_bytes + table.float_bytes
    else:
        covered = budget >= least_error_bytes(table.options())
        above_float = budget >= table.float_bytes
    if covered:
        notes.append(
            f"the budget covers {format_bytes(least_error_bytes(table.options()))} of weights: "
            "every matrix takes its most accurate candidate, no trade-off was needed"
        )
    if above_float:
        notes.append(f"the budget is at least the float size of the matrices ({format_bytes(table.float_bytes)})")
    if config.avg_bits is not None:
        notes.append(f"--avg-bits {config.avg_bits:g} -> budget {format_bytes(budget)} over {table.num_weights:,} weights")
    return notes
