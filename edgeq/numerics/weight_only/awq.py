"""AWQ: scale salient input channels up before quantizing, and the activation down to match.

Channels that carry large activations matter most to the output; multiplying weight column
``j`` by ``s_j`` (and the input by ``1/s_j``) gives them a finer grid at the others' expense.
Following Lin et al. (2024), ``s = m^alpha`` with ``m`` the mean activation magnitude per
channel, and ``alpha`` is grid-searched per layer on the output error on calibration
activations (exact, through ``H = X^T X``). ``alpha = 0`` is plain RTN, so AWQ is never worse
than RTN on those activations. The ``1/s`` factors become ``input_scale``: the graph pass folds
them into the producer of the activation when it can, otherwise inserts a ``Mul``.
"""

from __future__ import annotations

import numpy as np

from edgeq.numerics.codecs import Codec
from edgeq.numerics.weight_only.common import AlgorithmResult, LayerStats, bias_correction, output_error
from edgeq.numerics.weight_only.rtn import rtn


def channel_scales(magnitudes: np.ndarray, alpha: float) -> np.ndarray:
    """``m^alpha`` normalised to a geometric mean of 1 (keeps the weight's range in place)."""
    m = np.asarray(magnitudes, np.float64)
    positive = m[m > 0]
    floor = float(positive.min()) if positive.size else 1.0
    s = np.power(np.maximum(m, floor), alpha)
    return s / np.exp(np.mean(np.log(s)))


def awq_group(
    codec: Codec,
    weights: list[np.ndarray],
    block_size: int,
    stats: LayerStats,
    grid: int = 11,
    correct_bias: bool = True,
) -> list[AlgorithmResult]:
    """AWQ for weights ``[rows_i, cols]`` that read the same input (Q, K and V): one ``alpha`` for all.

    One shared ``s`` lets the ``1/s`` on the input be a single ``Mul`` or folded into the op that
    produces the input; ``alpha`` minimises the summed relative output errors of the group among
    the values that leave no member worse than its RTN.
    """
    if stats.magnitudes is None:
        raise ValueError("AWQ needs per-channel activation magnitudes from calibration data")
    hessian = stats.hessian if stats.hessian is not None else np.diag(np.asarray(stats.magnitudes, np.float64) ** 2)
    importance = stats.importance
    assert importance is not None
    ws = [np.asarray(w, np.float64) for w in weights]
    best: list[AlgorithmResult] = []
    best_err = np.inf
    rtn_errs: list[float] = []
    for alpha in np.linspace(0.0, 1.0, grid):
        s = channel_scales(stats.magnitudes, float(alpha))
        # The scaled layer sees inputs x / s: its per-channel importance shrinks by s^2.
        scaled_stats = LayerStats(magnitudes=np.sqrt(importance) / s)
        results = [
            AlgorithmResult(rtn(codec, w * s[None, :], block_size, scaled_stats).quantized, input_scale=None if alpha == 0 else 1.0 / s)
            for w in ws
        ]
        errs = [output_error(w, r.effective_weight(), hessian) for w, r in zip(ws, results, strict=True)]
        if alpha == 0:
            rtn_errs = errs
        # Shared alpha, but no member may end up worse than its own RTN (alpha = 0).
        if sum(errs) < best_err and all(e <= r for e, r in zip(errs, rtn_errs, strict=True)):
            best, best_err = results, sum(errs)
    for w, result, rtn_err in zip(ws, best, rtn_errs, strict=True):
        result.rtn_error = float(rtn_err)
        if correct_bias and stats.mean is not None:
            result.bias = bias_correction(w, result.effective_weight(), stats.mean)
    return best


def awq(
    codec: Codec,
    w: np.ndarray,
    block_size: int,
    stats: LayerStats,
    grid: int = 11,
    correct_bias: bool = True,
) -> AlgorithmResult:
    """AWQ on ``w`` ``[rows, cols]`` with ``stats.magnitudes`` ``[cols]`` and ideally ``stats.hessian``."""
    return awq_group(codec, [w], block_size, stats, grid, correct_bias)[0]
