"""Choosing a clipping threshold (amax) from a histogram of |x|.

Pure numpy over ``counts`` (bins of width ``bin_width`` starting at 0). Each search is one
vectorised pass over all candidates: calibrating a network computes every method for every
observed tensor, so a Python loop over 2000 candidates per tensor would dominate the run.
"""

from __future__ import annotations

import numpy as np

INT8_MAX = 127
ENTROPY_QUANTIZED_BINS = 128


def used_bins(counts: np.ndarray) -> int:
    """Number of bins up to and including the last non-empty one."""
    nonzero = np.flatnonzero(counts)
    return int(nonzero[-1]) + 1 if nonzero.size else 0


def percentile_threshold(counts: np.ndarray, bin_width: float, percentile: float) -> float:
    """The ``percentile``-th percentile of |x|, interpolated linearly inside its bin.

    ORT and pytorch-quantization return the bin's left edge; interpolating assumes values
    spread evenly inside the bin, which halves the worst-case error for the same bins.
    """
    total = float(counts.sum())
    if total == 0:
        return 0.0
    cumulative = np.cumsum(counts, dtype=np.float64)
    target = total * min(max(percentile, 0.0), 100.0) / 100.0
    index = int(np.searchsorted(cumulative, target, side="left"))
    index = min(index, counts.size - 1)
    below = cumulative[index - 1] if index > 0 else 0.0
    inside = float(counts[index])
    fraction = (target - below) / inside if inside > 0 else 1.0
    return (index + min(max(fraction, 0.0), 1.0)) * bin_width


def _xlogx(values: np.ndarray) -> np.ndarray:
    out = np.zeros_like(values, dtype=np.float64)
    positive = values > 0
    out[positive] = values[positive] * np.log(values[positive])
    return out


def entropy_divergences(
    counts: np.ndarray, quantized_bins: int = ENTROPY_QUANTIZED_BINS, start: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """KL(P || Q) for every candidate bin count ``i`` in ``start .. used_bins``.

    The algorithm of TensorRT's entropy calibrator (as NVIDIA's pytorch-quantization writes
    it): P is the histogram cut at ``i`` bins with the clipped outliers added to bin ``i-1``;
    Q merges the first ``i`` bins into ``quantized_bins`` levels (bin ``k`` goes to level
    ``floor(k * quantized_bins / i)``) and spreads each level evenly over its non-empty bins.

    Rather than building P and Q per candidate, the divergence is expanded into sums over
    whole chunks, which prefix sums give for every candidate at once:
    ``T·KL = Σb·log b − S·log T + S·log S − Σ_j C_j·log(C_j/N_j) + (last-bin correction)``
    with T all values, S the values under the cut, C_j and N_j the count and the non-empty
    bins of chunk j. Returns ``(candidates, divergences)``; infinity where Q is empty under a
    non-empty P (the cut bin is empty but outliers land in it).
    """
    counts = np.asarray(counts, dtype=np.float64)
    used = used_bins(counts)
    first = quantized_bins if start is None else start
    if used == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    if used <= first:
        # Everything fits in the first candidate's bins: no clipping, no loss from merging.
        return np.asarray([used], dtype=np.int64), np.zeros(1)
    candidates = np.arange(first, used + 1, dtype=np.int64)
    total = counts.sum()
    prefix_count = np.concatenate([[0.0], np.cumsum(counts)])
    prefix_nonzero = np.concatenate([[0], np.cumsum(counts > 0)])
    prefix_blogb = np.concatenate([[0.0], np.cumsum(_xlogx(counts))])

    # Chunk boundaries per candidate: bin k is in chunk j iff j*i <= k*quantized_bins < (j+1)*i.
    levels = np.arange(quantized_bins + 1, dtype=np.int64)
    bounds = (levels[None, :] * candidates[:, None] + quantized_bins - 1) // quantized_bins
    chunk_count = prefix_count[bounds[:, 1:]] - prefix_count[bounds[:, :-1]]
    chunk_nonzero = (prefix_nonzero[bounds[:, 1:]] - prefix_nonzero[bounds[:, :-1]]).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        level_value = np.where(chunk_count > 0, chunk_count / np.maximum(chunk_nonzero, 1), 1.0)
    chunk_term = (chunk_count * np.log(level_value)).sum(axis=1)

    kept = prefix_count[candidates]  # S
    outliers = total - kept
    divergence = prefix_blogb[candidates] - kept * np.log(total) + _xlogx(kept) - chunk_term

    # The cut bin i-1 also holds the outliers in P: swap its term for the bigger count.
    last = counts[candidates - 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        q_last = level_value[:, -1] / np.where(kept > 0, kept, 1.0)
        correction = _xlogx(last + outliers) - _xlogx(last) - outliers * (np.log(total) + np.log(q_last))
    has_outliers = outliers > 0
    divergence = divergence + np.where(has_outliers & (last > 0), correction, 0.0)
    divergence = np.where(has_outliers & (last == 0), np.inf, divergence / total)
    return candidates, divergence


def entropy_threshold(counts: np.ndarray, bin_width: float, quantized_bins: int = ENTROPY_QUANTIZED_BINS) -> float:
    """The cut (upper edge of bin ``i-1``) with the least divergence; the largest among ties."""
    candidates, divergence = entropy_divergences(counts, quantized_bins)
    if candidates.size == 0:
        return 0.0
    best = divergence.size - 1 - int(np.argmin(divergence[::-1]))
    return float(candidates[best]) * bin_width


def _rounding_integral(u: np.ndarray, step: np.ndarray) -> np.ndarray:
    """∫_{-step/2}^{u} e(x)² dx for the rounding error e of a grid of ``step``, u >= -step/2."""
    v = u + step / 2
    periods = np.floor(v / step)
    rest = v - periods * step
    return periods * step**3 / 12 + ((rest - step / 2) ** 3 + step**3 / 8) / 3


def mse_errors(counts: np.ndarray, bin_width: float, cuts: np.ndarray, levels: int = INT8_MAX) -> np.ndarray:
    """Expected squared int8 error (per value) for each cut (in bins), values even within bins.

    Below the cut a value is rounded to a grid of step ``cut/levels``; above it, it is
    clipped to the cut. Both are integrated exactly over each bin, so the only approximation
    is the histogram itself.
    """
    counts = np.asarray(counts, dtype=np.float64)
    used = max(used_bins(counts), 1)
    counts = counts[:used]
    lows = np.arange(used, dtype=np.float64) * bin_width
    thresholds = np.asarray(cuts, dtype=np.float64) * bin_width
    total = counts.sum()
    # Clipping: mean of (x - t)² over a bin [a, a+w) above t is d² + d·w + w²/3 with d = a - t.
    suffix_c = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])
    suffix_ca = np.concatenate([np.cumsum((counts * lows)[::-1])[::-1], [0.0]])
    suffix_caa = np.concatenate([np.cumsum((counts * lows**2)[::-1])[::-1], [0.0]])
    index = np.minimum(np.asarray(cuts, dtype=np.int64), used)
    c, ca, caa = suffix_c[index], suffix_ca[index], suffix_caa[index]
    t = thresholds
    clip = caa - 2 * t * ca + t**2 * c + bin_width * (ca - t * c) + bin_width**2 / 3 * c
    # Rounding below the cut, bin by bin (candidates x bins).
    step = (thresholds / levels)[:, None]
    inside = (np.arange(used)[None, :] < index[:, None]).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_bin = (_rounding_integral(lows[None, :] + bin_width, step) - _rounding_integral(lows[None, :], step)) / bin_width
    per_bin = np.where(step > 0, per_bin, (lows[None, :] + bin_width / 2) ** 2)
    rounding = (per_bin * inside * counts[None, :]).sum(axis=1)
    return (clip + rounding) / max(total, 1.0)


def mse_threshold(
    counts: np.ndarray, bin_width: float, levels: int = INT8_MAX, search_bins: int = 256, coarse_step: int = 8
) -> float:
    """The cut with the least expected squared int8 error.

    The search runs on the histogram merged down to ``search_bins`` bins (the error curve is
    flat near its minimum, so 1/256 of the range is ample resolution): a scan every
    ``coarse_step`` bins, then every bin around the best.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if used_bins(counts) == 0:
        return 0.0
    group = max(1, counts.size // search_bins)
    if group > 1:
        counts = counts[: counts.size - counts.size % group].reshape(-1, group).sum(axis=1)
        bin_width *= group
    used = used_bins(counts)
    coarse = np.unique(np.append(np.arange(coarse_step, used + 1, coarse_step), used))
    errors = mse_errors(counts, bin_width, coarse, levels)
    best = int(coarse[int(np.argmin(errors))])
    fine = np.arange(max(1, best - coarse_step), min(used, best + coarse_step) + 1)
    errors = mse_errors(counts, bin_width, fine, levels)
    return float(fine[int(np.argmin(errors))]) * bin_width
