"""Sensitivity: each matrix x each candidate format, its exact bytes and the model's output error.

Every quantizable matrix is quantized with every candidate and put back into the float model
*alone*; the output error on a few calibration samples (relative squared error over real tokens)
is that option's cost in the allocation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from edgeq.graph.passes.lm_head import DecoderPlan, plan_decoder
from edgeq.graph.passes.weight_only import LeftInFloat, WeightTarget, read_weight
from edgeq.metrics import sqnr_db
from edgeq.numerics.allocation import Option
from edgeq.numerics.weight_only import LayerStats, weighted_error
from edgeq.numerics.weight_only.common import DATA_DRIVEN
from edgeq.progress import progress_bar
from edgeq.quantize.config import MixedPrecisionConfig
from edgeq.quantize.schemes.mixed.candidates import FLOAT, check_config, resolve_candidates
from edgeq.quantize.schemes.mixed.filesize import message_bytes, removable_weights, stripped_bytes
from edgeq.quantize.schemes.mixed.fitting import (
    file_bytes,
    fit,
    float_bytes,
    stored_bytes,
    unavailable_reason,
)
from edgeq.quantize.schemes.mixed.probe import WeightProbe
from edgeq.quantize.schemes.weight_only.bounds import check_block_size_fits
from edgeq.quantize.schemes.weight_only.padding import is_sequence_model, mask_input, trimmed_batches

# Calibration samples the sensitivity runs use: (targets x candidates) forward passes over them.
# On MiniLM the per-format ranking of the 39 matrices from 16 samples has Spearman rho >= 0.996
# against 64 samples (8 samples: >= 0.988), at a quarter of the time.
SENSITIVITY_SAMPLES = 16


def sensitivity_batches(model: onnx.ModelProto, data: Any, samples: int) -> tuple[list[dict[str, np.ndarray]], str | None, int]:
    """The first ``samples`` calibration samples as batches, padding trimmed for sequence models.

    Sequence models get their samples sorted by length before batching, so a batch carries
    little padding: the measurement runs (targets x candidates) times over these batches.
    """
    taken: list[dict[str, np.ndarray]] = []
    count = 0
    for feeds in data.batches():
        n = int(data.batch_samples(feeds))
        taken.append(feeds)
        count += n
        if count >= samples:
            break
    mask_name = mask_input(model)
    if mask_name is None or not is_sequence_model(model) or not taken or mask_name not in taken[0]:
        return taken, mask_name, count
    joined = {name: np.concatenate([f[name] for f in taken])[:samples] for name in taken[0]}
    count = len(joined[mask_name])
    lengths = (np.asarray(joined[mask_name]) != 0).sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    size = max(1, int(getattr(data, "batch_size", 8)))
    return list(trimmed_batches(joined, mask_name, size, order)), mask_name, count


@dataclass
class CandidateFit:
    """One matrix in one format: exact stored bytes, measured output error, and the proxy."""

    format: str
    nbytes: int
    error: float  # relative output error with this matrix alone quantized so
    proxy: float | None = None  # trace(E H E^T) / trace(W H W^T); relative weight MSE for tables
    weight_sqnr_db: float = float("inf")
    method: str = ""
    note: str = ""
    file_bytes: int = 0  # what the option adds to the written file, nodes and tensor headers included


@dataclass
class MatrixSensitivity:
    """One matrix's measured candidates, and the formats it cannot take with the reason."""

    target: WeightTarget
    fits: list[CandidateFit]
    unavailable: dict[str, str] = field(default_factory=dict)  # format -> why onnxruntime cannot run it

    def option(self, fmt: str) -> CandidateFit | None:
        return next((f for f in self.fits if f.format == fmt), None)


@dataclass
class SensitivityTable:
    """Everything the allocation needs, and what the summary reports about the measurement."""

    matrices: list[MatrixSensitivity]
    left: list[LeftInFloat]
    samples: int
    seconds: float
    probe: WeightProbe | None = None
    fixed_bytes: int = 0  # the serialized model without the weights a format choice can remove

    def options(self, measure: str = "error", size: str = "nbytes") -> list[list[Option]]:
        """The knapsack's options: errors by the measured ``error`` or the Hessian ``proxy``, sizes
        by the stored weight bytes (``nbytes``) or by what each adds to the file (``file_bytes``)."""
        return [[Option(f.format, int(getattr(f, size)), float(getattr(f, measure) or 0.0)) for f in m.fits] for m in self.matrices]

    @property
    def num_weights(self) -> int:
        return sum(m.target.rows * m.target.cols for m in self.matrices)

    @property
    def float_bytes(self) -> int:
        return sum(float_bytes(m.target) for m in self.matrices)


def plan_matrices(model: onnx.ModelProto, config: MixedPrecisionConfig) -> tuple[list[WeightTarget], list[LeftInFloat], dict[int, dict[str, str]]]:
    """The matrices in the budget, the nodes left out (with reasons) and unavailable formats per matrix.

    A table tied to the LM head is one matrix: the head target, with the Gather as its
    ``shared_lookup``, so the plan prices and measures it once and writes it once.
    """
    candidates = resolve_candidates(config)
    plan = plan_decoder(model, config.embeddings, config.exclude)
    targets, left = fold_ties(plan), plan.left
    check_block_size_fits(config.block_size, targets)
    kept: list[WeightTarget] = []
    unavailable: dict[int, dict[str, str]] = {}
    for target in targets:
        reasons = {fmt: r for fmt in candidates if (r := unavailable_reason(target, fmt)) is not None}
        if len(reasons) == len(candidates):
            why = "; ".join(f"{fmt}: {r}" for fmt, r in reasons.items())
            left.append(LeftInFloat(target.name, target.op_type, f"no candidate format can hold it ({why}); not counted in the budget", target.weight))
            continue
        unavailable[len(kept)] = reasons
        kept.append(target)
    return kept, left, unavailable


def fold_ties(plan: DecoderPlan) -> list[WeightTarget]:
    """The plan's targets with each tied Gather folded into its head's ``shared_lookup``."""
    folded: set[int] = set()
    for tie in plan.ties:
        if tie.gather is not None and tie.head.alpha == 1.0 and any(t is tie.gather for t in plan.targets):
            tie.head.shared_lookup = tie.gather
            folded.add(id(tie.gather))
    return [t for t in plan.targets if id(t) not in folded]


def measure_sensitivity(
    model: onnx.ModelProto,
    config: MixedPrecisionConfig,
    data: Any,
    stats: dict[str, LayerStats] | None = None,
    progress: bool = False,
    samples: int | None = None,
    planned: tuple[list[WeightTarget], list[LeftInFloat], dict[int, dict[str, str]]] | None = None,
    proxy_stats: dict[str, LayerStats] | None = None,
) -> SensitivityTable:
    """Each matrix x each candidate: exact bytes and the output error with that matrix alone quantized.

    ``stats`` feed the algorithms (as in the weight-only scheme: GPTQ/AWQ need them, RTN/HQQ weigh
    their error by them); ``proxy_stats`` (default: ``stats``) only give each option its Hessian
    proxy ``trace(E H E^T) / trace(W H W^T)``, to compare with the measured error.
    """
    method = check_config(config)
    candidates = resolve_candidates(config)
    targets, left, unavailable = planned if planned is not None else plan_matrices(model, config)
    stats = stats or {}
    started = time.perf_counter()
    batches, mask_name, count = sensitivity_batches(model, data, samples or SENSITIVITY_SAMPLES)
    probe = WeightProbe(model, targets, batches, mask_name, with_bias=method in DATA_DRIVEN) if targets else None
    removable = removable_weights(model, targets)
    float_file = {t.name: message_bytes([t]) for t in model.graph.initializer if t.name in removable}
    matrices: list[MatrixSensitivity] = []
    total = sum(len(candidates) - len(unavailable[i]) for i in range(len(targets)))
    with progress_bar(total, progress, "measuring sensitivities") as bar:
        for i, target in enumerate(targets):
            assert probe is not None
            w = read_weight(model, target)
            layer_stats = (proxy_stats if proxy_stats is not None else stats).get(target.activation)
            hessian = None if target.is_embedding or layer_stats is None else layer_stats.hessian
            fits: list[CandidateFit] = []
            for fmt in candidates:
                if fmt in unavailable[i]:
                    continue
                if fmt == FLOAT:
                    kept = float_file.get(target.weight, 0)  # 0: the weight stays in the file anyway
                    fits.append(CandidateFit(FLOAT, float_bytes(target), 0.0, 0.0, float("inf"), "", "kept as it is", kept))
                else:
                    fitted = fit(w, target, fmt, config.block_size, method, stats)
                    effective = fitted.effective(w.shape)
                    bias = None if target.is_embedding else fitted.result.bias
                    fits.append(
                        CandidateFit(
                            fmt,
                            stored_bytes(target, fitted.result),
                            probe.error({i: effective}, None if bias is None else {i: bias}),
                            weighted_error(w, effective, hessian),
                            round(float(sqnr_db(w, effective)), 3),
                            fitted.method.value,
                            fitted.note,
                            file_bytes(target, fitted.result, model.graph.node[target.node_index]),
                        )
                    )
                if bar is not None:
                    bar.advance(bar.task_ids[0])
            matrices.append(MatrixSensitivity(target, fits, dict(unavailable[i])))
    return SensitivityTable(matrices, left, count, time.perf_counter() - started, probe, stripped_bytes(model, removable))
