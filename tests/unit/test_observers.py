"""Observers against float64 numpy references on known distributions."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.calibrate.observers import (
    ChannelMagnitudeObserver,
    HessianObserver,
    HistogramObserver,
    MinMaxObserver,
)
from edgeq.calibrate.thresholds import entropy_divergences, mse_errors
from edgeq.errors import ConfigError


def _gaussian_with_outliers(seed: int = 0, n: int = 200_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, size=n).astype(np.float32)
    x[rng.choice(n, 20, replace=False)] = rng.choice([-1, 1], 20) * rng.uniform(40, 60, 20)
    return x


def _feed(observer, x: np.ndarray, splits: list[int]) -> None:
    for part in np.split(x, splits):
        observer.update(part)


def test_minmax_exact_over_batches_and_merge() -> None:
    x = _gaussian_with_outliers()
    a, b = MinMaxObserver(), MinMaxObserver()
    _feed(a, x[:1000], [10, 500])
    _feed(b, x[1000:], [7])
    a.merge(b)
    assert (a.min, a.max, a.count) == (float(x.min()), float(x.max()), x.size)
    assert a.amax == max(abs(float(x.min())), float(x.max()))


def test_histogram_matches_numpy_reference() -> None:
    x = _gaussian_with_outliers(1, 50_000)
    h = HistogramObserver(2048)
    h.update(x)
    edges = np.arange(2049, dtype=np.float64) * (h.range / 2048)
    reference, _ = np.histogram(np.abs(x.astype(np.float64)), bins=edges)
    np.testing.assert_array_equal(h.counts, reference)
    assert h.range > h.amax >= h.range / 2  # the range is the next power of two above amax


def test_histogram_independent_of_batching_and_growth() -> None:
    rng = np.random.default_rng(2)
    # Growing range: each batch is wider than the last, forcing several re-binnings.
    batches = [rng.normal(0, scale, 3000).astype(np.float32) for scale in (0.01, 0.3, 1.0, 7.0, 200.0)]
    grown = HistogramObserver()
    for batch in batches:
        grown.update(batch)
    whole = HistogramObserver()
    whole.update(np.concatenate(batches[::-1]))
    np.testing.assert_array_equal(grown.counts, whole.counts)
    assert grown.exponent == whole.exponent and grown.count == whole.count == 15000


def test_histogram_merge_equals_union() -> None:
    rng = np.random.default_rng(3)
    small = rng.normal(0, 0.05, 10_000).astype(np.float32)
    large = rng.laplace(0, 3.0, 10_000).astype(np.float32)
    a, b, union = HistogramObserver(), HistogramObserver(), HistogramObserver()
    a.update(small)
    b.update(large)
    union.update(np.concatenate([large, small]))
    a.merge(b)
    np.testing.assert_array_equal(a.counts, union.counts)
    assert (a.min, a.max, a.exponent) == (union.min, union.max, union.exponent)
    empty = HistogramObserver()
    empty.merge(union)
    np.testing.assert_array_equal(empty.counts, union.counts)


def test_all_zero_tensor_then_growth() -> None:
    h = HistogramObserver()
    h.update(np.zeros(100, np.float32))
    assert h.counts[0] == 100 and h.threshold("entropy") == 0.0 and h.threshold("mse") == 0.0
    h.update(np.full(10, 3.0, np.float32))
    assert h.counts[0] == 100 and h.counts.sum() == 110 and h.amax == 3.0


def test_outliers_clipped_by_entropy_percentile_mse_not_minmax() -> None:
    x = _gaussian_with_outliers()
    h = HistogramObserver()
    _feed(h, x, [50_000, 120_000])
    amax = float(np.abs(x.astype(np.float64)).max())
    assert h.threshold("minmax") == amax >= 40
    for method in ("entropy", "percentile"):
        value = h.threshold(method)
        assert 2.5 < value < 10, (method, value)  # clips the outliers, keeps the Gaussian's bulk
    # MSE keeps these outliers: clipping 20 values by ~45 costs more than coarser rounding (checked
    # against brute force in test_mse_threshold_near_bruteforce_optimum).


def test_percentile_against_numpy() -> None:
    x = _gaussian_with_outliers(4)
    h = HistogramObserver()
    h.update(x)
    magnitude = np.abs(x.astype(np.float64))
    for p in (90.0, 99.0, 99.9, 99.99):
        assert abs(h.threshold("percentile", p) - np.percentile(magnitude, p)) <= h.bin_width, p
    assert h.threshold("percentile", 100.0) == pytest.approx(magnitude.max(), abs=h.bin_width)
    with pytest.raises(ConfigError, match="--percentile"):
        h.threshold("percentile", 0.0)


def _entropy_reference(bins: np.ndarray, start: int = 128, quantized: int = 128) -> tuple[list[int], list[float]]:
    """TensorRT's entropy calibration as pytorch-quantization writes it: a loop, float64, scipy-style KL."""
    used = int(np.flatnonzero(bins)[-1]) + 1
    candidates, divergences = [], []
    for i in range(start, used + 1):
        space = np.linspace(0, i, num=quantized + 1)
        digitized = np.digitize(np.arange(i), space) - 1
        digitized[bins[:i] == 0] = -1
        level = np.zeros(quantized)
        for idx, d in enumerate(digitized):
            if d != -1:
                level[d] += bins[idx]
        members = np.bincount(digitized[digitized >= 0], minlength=quantized)
        q = np.zeros(i)
        for idx, d in enumerate(digitized):
            if d != -1:
                q[idx] = level[d] / members[d]
        p = bins[:i].astype(np.float64).copy()
        p[-1] += bins[i:].sum()
        p /= p.sum()
        q = q / q.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log(p / q), 0.0)
        candidates.append(i)
        divergences.append(float(terms.sum()))
    return candidates, divergences


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_divergences_match_loop_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    bins = np.zeros(512, dtype=np.int64)
    bins[:300] = rng.poisson(rng.uniform(0, 50, 300))
    bins[rng.choice(300, 30)] = 0  # empty bins inside the data
    bins[400] = 3  # isolated outliers beyond a gap: cuts in the gap have Q = 0 where P > 0
    candidates, divergence = entropy_divergences(bins)
    ref_candidates, ref_divergence = _entropy_reference(bins)
    np.testing.assert_array_equal(candidates, ref_candidates)
    finite = np.isfinite(ref_divergence)
    assert (~finite).any() and np.array_equal(np.isfinite(divergence), finite)
    np.testing.assert_allclose(divergence[finite], np.asarray(ref_divergence)[finite], rtol=1e-9, atol=1e-12)


def test_entropy_threshold_picks_reference_argmin() -> None:
    x = _gaussian_with_outliers(5)
    h = HistogramObserver()
    h.update(x)
    candidates, divergence = _entropy_reference(h.counts)
    best = len(divergence) - 1 - int(np.argmin(divergence[::-1]))
    assert h.threshold("entropy") == pytest.approx(candidates[best] * h.bin_width)


def _fake_quant_mse(x: np.ndarray, amax: float) -> float:
    scale = amax / 127
    q = np.clip(np.round(x / scale), -127, 127) * scale
    return float(np.mean((x - q) ** 2))


@pytest.mark.parametrize("outliers", [True, False])
def test_mse_threshold_near_bruteforce_optimum(outliers: bool) -> None:
    x = _gaussian_with_outliers(6).astype(np.float64)
    if not outliers:  # a plain Gaussian: the optimum clips the tails (about 4 sigma for int8)
        x = np.random.default_rng(6).normal(size=200_000)
    h = HistogramObserver()
    h.update(x.astype(np.float32))
    grid = np.linspace(0.5, np.abs(x).max(), 600)
    brute = np.array([_fake_quant_mse(x, t) for t in grid])
    chosen = h.threshold("mse")
    assert _fake_quant_mse(x, chosen) <= brute.min() * 1.03
    # The histogram model of the error tracks the true error across thresholds.
    cuts = np.array([64, 200, 400, 1000])
    modelled = mse_errors(h.counts, h.bin_width, cuts)
    true = np.array([_fake_quant_mse(x, c * h.bin_width) for c in cuts])
    np.testing.assert_allclose(modelled, true, rtol=0.05)
    if not outliers:
        assert chosen < 0.9 * np.abs(x).max()


def test_unknown_method_and_bad_bins() -> None:
    with pytest.raises(ConfigError, match="--method"):
        HistogramObserver().threshold("kl")
    with pytest.raises(ConfigError, match="power of two"):
        HistogramObserver(1000)


def test_channel_magnitude_against_numpy() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(6, 5, 16)).astype(np.float32) * np.linspace(0.1, 9, 16, dtype=np.float32)
    a, b = ChannelMagnitudeObserver(-1), ChannelMagnitudeObserver(-1)
    a.update(x[:2])
    b.update(x[2:])
    a.merge(b)
    flat = np.abs(x.astype(np.float64)).reshape(-1, 16)
    np.testing.assert_allclose(a.absmax, flat.max(0))
    np.testing.assert_allclose(a.absmean, flat.mean(0), rtol=1e-12)
    conv = ChannelMagnitudeObserver(1)
    images = rng.normal(size=(4, 3, 5, 5)).astype(np.float32)
    conv.update(images)
    np.testing.assert_allclose(conv.absmax, np.abs(images).max(axis=(0, 2, 3)))


def test_hessian_against_float64_reference() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=(3, 7, 12)).astype(np.float32)
    a, b = HessianObserver(), HessianObserver()
    a.update(x[:1])
    b.update(x[1:])
    a.merge(b)
    rows = x.astype(np.float64).reshape(-1, 12)
    np.testing.assert_allclose(a.hessian, rows.T @ rows / rows.shape[0], rtol=1e-12)
    assert a.rows == 21 and a.hessian.dtype == np.float64
    nchw = HessianObserver(channel_axis=1)
    images = rng.normal(size=(2, 4, 3, 3)).astype(np.float32)
    nchw.update(images)
    flat = np.moveaxis(images, 1, -1).reshape(-1, 4).astype(np.float64)
    np.testing.assert_allclose(nchw.hessian, flat.T @ flat / 18, rtol=1e-12)
