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

from edgeq.quantize.algorithms.common import AlgorithmResult, LayerStats, bias_correction, output_error
from edgeq.quantize.algorithms.rtn import rtn
from edgeq.quantize.codecs import Codec


def channel_scales(magnitudes: np.ndarray, alpha: float) -> np.ndarray:
    """``m^alpha`` normalised to a geometric mean of 1 (keeps the weight's range in place)."""
    m = np.asarray(magnitudes, np.float64)
    positive = m[m > 0]
    floor = float(positive.min()) if positive.size else 1.0
    s = np.power(np.maximum(m, floor), alpha)
    return s / np.exp(np.mean(np.log(s)))


def awq(
    codec: Codec,
    w: np.ndarray,
    block_size: int,
    stats: LayerStats,
    grid: int = 11,
    correct_bias: bool = True,
) -> AlgorithmResult:
    """AWQ on ``w`` ``[rows, cols]`` with ``stats.magnitudes`` ``[cols]`` and ideally ``stats.hessian``."""
    if stats.magnitudes is None:
        raise ValueError("AWQ needs per-channel activation magnitudes from calibration data")
    hessian = stats.hessian if stats.hessian is not None else np.diag(np.asarray(stats.magnitudes, np.float64) ** 2)
    w64 = np.asarray(w, np.float64)
    importance = stats.importance
    assert importance is not None
    best: AlgorithmResult | None = None
    best_err = np.inf
    rtn_err = np.inf
    for alpha in np.linspace(0.0, 1.0, grid):
        s = channel_scales(stats.magnitudes, float(alpha))
        # The scaled layer sees inputs x / s: its per-channel importance shrinks by s^2.
        scaled_stats = LayerStats(magnitudes=np.sqrt(importance) / s)
        candidate = rtn(codec, w64 * s[None, :], block_size, scaled_stats)
        result = AlgorithmResult(candidate.quantized, input_scale=None if alpha == 0 else 1.0 / s)
        err = output_error(w64, result.effective_weight(), hessian)
        if alpha == 0:
            rtn_err = err
        if err < best_err:
            best, best_err = result, err
    assert best is not None
    best.rtn_error = float(rtn_err)
    if correct_bias and stats.mean is not None:
        best.bias = bias_correction(w64, best.effective_weight(), stats.mean)
    return best
