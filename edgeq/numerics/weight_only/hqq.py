"""HQQ: calibration-free half-quadratic optimisation of each block's zero point (or scale).

Half-quadratic splitting of ``min ||W - dequant(quant(W))||_p`` (p < 1, robust to the few large
weights that dominate a block) alternates a closed-form shrinkage of the residual with a
closed-form update of the zero point (asymmetric integer codecs) or the scale (symmetric and
table codecs), following Badri & Shaji (2023). The zero point stays integer in the formats,
so the optimised zero is rounded and the scale refitted by least squares for those codes.
Each block keeps whichever of (clip-searched RTN start, HQQ result) has the lower squared error,
so HQQ is never worse than RTN on the weight.
"""

from __future__ import annotations

import numpy as np

from edgeq.numerics.codecs import Codec, to_blocks
from edgeq.numerics.weight_only.common import ROW_CHUNK, AlgorithmResult, LayerStats
from edgeq.numerics.weight_only.rtn import fit_params, quantize_blocks


def _shrink(x: np.ndarray, beta: float, p: float) -> np.ndarray:
    """Proximal operator of the l_p (p <= 1) penalty: generalised soft thresholding."""
    mag = np.abs(x)
    if p == 1.0:
        return np.sign(x) * np.maximum(mag - 1.0 / beta, 0.0)
    return np.sign(x) * np.maximum(mag - (1.0 / beta) * np.power(mag + 1e-8, p - 1.0), 0.0)


def _levels(codec: Codec, codes: np.ndarray, zero: np.ndarray | float) -> np.ndarray:
    if codec.is_integer:
        return codes.astype(np.float64) - zero
    assert codec.table is not None
    return codec.table.astype(np.float64)[codes]


def _lsq_scale(x: np.ndarray, levels: np.ndarray, weight: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    num = np.sum(weight * x * levels, axis=-1, keepdims=True)
    den = np.sum(weight * levels * levels, axis=-1, keepdims=True)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), fallback)


def optimize_blocks(
    codec: Codec,
    x: np.ndarray,
    mask: np.ndarray | None,
    scale: np.ndarray,
    zero: np.ndarray | None,
    importance: np.ndarray | None = None,
    iters: int = 20,
    p: float = 0.7,
    beta: float = 10.0,
    kappa: float = 1.01,
) -> tuple[np.ndarray, np.ndarray | None]:
    """HQQ on ``x`` ``[rows, n_blocks, block_size]`` from start ``scale``/``zero`` ``[rows, n_blocks]``."""
    valid = np.ones(x.shape[1:], np.float64) if mask is None else mask.astype(np.float64)
    weight = valid if importance is None else valid * importance
    count = np.maximum(valid.sum(axis=-1), 1.0)
    s = scale.astype(np.float64)[..., None].copy()
    s = np.where(s == 0, 1e-12, s)
    z: np.ndarray | float = codec.zero_or_implicit(None if zero is None else zero[..., None].astype(np.float64))
    for _ in range(iters):
        codes = codec.encode(x, s, z if codec.has_zero_point else None)
        deq = codec.decode(codes, s, z if codec.has_zero_point else None)
        residual = _shrink(x - deq, beta, p)
        target = x - residual
        if codec.has_zero_point:
            z = np.sum((codes - target / s) * valid, axis=-1, keepdims=True) / count[..., None]
            z = np.clip(z, 0, codec.qmax)
        else:
            s = _lsq_scale(target, _levels(codec, codes, z), valid, s)
        beta *= kappa
    # Integer zero points in the formats: round, then refit the scale for the codes it gives.
    if codec.has_zero_point:
        z = np.clip(np.rint(z), 0, codec.qmax)
    codes = codec.encode(x, s, z if codec.has_zero_point else None)
    s = _lsq_scale(x, _levels(codec, codes, z), weight, s)
    zero_out = np.asarray(z)[..., 0] if codec.has_zero_point else None
    return s[..., 0], zero_out


def _block_error(
    codec: Codec, x: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, weight: np.ndarray
) -> np.ndarray:
    deq = codec.fake_quantize(x, scale[..., None], None if zero is None else zero[..., None])
    return np.sum((x - deq) ** 2 * weight, axis=-1)


def hqq(
    codec: Codec,
    w: np.ndarray,
    block_size: int,
    stats: LayerStats | None = None,
    iters: int = 20,
    start: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> AlgorithmResult:
    """Quantize ``w`` ``[rows, cols]`` with HQQ-optimised parameters (no calibration needed).

    ``start`` is the clip-searched RTN grid when the caller already has it.
    """
    importance = stats.importance if stats is not None else None
    if start is None:
        start = fit_params(codec, w, block_size, importance, clip_search=True)
    start_scales, start_zeros = start
    imp_blocks = None
    if importance is not None:
        imp_blocks = to_blocks(np.asarray(importance, np.float64)[None, :], block_size)[0][0]
    scales = start_scales.astype(np.float64).copy()
    zeros = None if start_zeros is None else start_zeros.copy()
    for begin in range(0, w.shape[0], ROW_CHUNK):
        rows = slice(begin, begin + ROW_CHUNK)
        x, mask = to_blocks(np.asarray(w[rows], np.float64), block_size)
        weight = np.ones(x.shape[1:]) if mask is None else mask.astype(np.float64)
        if imp_blocks is not None:
            weight = weight * imp_blocks
        s0 = scales[rows]
        z0 = None if zeros is None else zeros[rows]
        s1, z1 = optimize_blocks(codec, x, mask, s0, z0, imp_blocks, iters=iters)
        better = _block_error(codec, x, s1, z1, weight) < _block_error(codec, x, s0, z0, weight)
        scales[rows] = np.where(better, s1, s0)
        if zeros is not None and z0 is not None and z1 is not None:
            zeros[rows] = np.where(better, z1, z0)
    return AlgorithmResult(quantize_blocks(codec, w, block_size, scales.astype(np.float32), zeros))
