"""Symmetric int8 numbers for TensorRT: per-channel weights, per-tensor activations.

TensorRT's explicit quantization is symmetric (zero point 0): weights use [-127, 127] so the
grid is symmetric around zero, activations [-128, 127]. A channel's scale is its clipping
threshold over 127. Clipping below the channel maximum trades a few large-value errors for a
finer grid everywhere else; choosing the threshold that minimises the (optionally weighted)
squared error beats the maximum on nearly every real layer, which is why the field uses it.
"""

from __future__ import annotations

import numpy as np

WEIGHT_QMAX = 127
# onnxruntime's int8 GEMM on x86 without VNNI adds two u8 x s8 products in a saturating int16:
# 255 * (64 + 64) = 32640 fits, 255 * (127 + 127) does not. Its quantizer calls this reduce_range.
REDUCED_WEIGHT_QMAX = 64
ACTIVATION_QMIN, ACTIVATION_QMAX = -128, 127
# Clip ratios tried per channel (fraction of the channel's absolute maximum).
DEFAULT_CLIP_RATIOS = tuple(float(r) for r in np.linspace(0.5, 1.0, 26))
_TINY = np.finfo(np.float32).tiny


def _channel_view(weight: np.ndarray, axis: int) -> np.ndarray:
    """The weight as [channels, everything else]."""
    return np.moveaxis(np.asarray(weight), axis, 0).reshape(weight.shape[axis], -1)


def _broadcast(scale: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = -1
    return np.asarray(scale).reshape(shape)


def channel_absmax(weight: np.ndarray, axis: int) -> np.ndarray:
    return np.max(np.abs(_channel_view(weight, axis)), axis=1)


def scale_from_amax(amax: np.ndarray | float, qmax: int = WEIGHT_QMAX) -> np.ndarray:
    """Scale for a clipping threshold; an all-zero channel gets a harmless positive scale."""
    amax = np.asarray(amax, np.float64)
    return np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)


def quantize_weight(weight: np.ndarray, scale: np.ndarray, axis: int, qmax: int = WEIGHT_QMAX) -> np.ndarray:
    """int8 values in [-qmax, qmax] (round half to even, as QuantizeLinear does)."""
    s = _broadcast(np.asarray(scale, np.float32), weight.ndim, axis)
    q = np.rint(np.asarray(weight, np.float32) / s)
    return np.clip(q, -qmax, qmax).astype(np.int8)


def dequantize_weight(q: np.ndarray, scale: np.ndarray, axis: int) -> np.ndarray:
    return (q.astype(np.float32) * _broadcast(np.asarray(scale, np.float32), q.ndim, axis)).astype(np.float32)


def fake_quantize_weight(weight: np.ndarray, scale: np.ndarray, axis: int, qmax: int = WEIGHT_QMAX) -> np.ndarray:
    return dequantize_weight(quantize_weight(weight, scale, axis, qmax), scale, axis)


def fake_quantize_activation(x: np.ndarray, amax: float) -> np.ndarray:
    """What DQ(Q(x)) returns for a per-tensor symmetric int8 activation."""
    scale = np.float32(scale_from_amax(amax, ACTIVATION_QMAX))
    q = np.clip(np.rint(np.asarray(x, np.float32) / scale), ACTIVATION_QMIN, ACTIVATION_QMAX)
    return (q * scale).astype(np.float32)


def clip_errors(
    weight: np.ndarray,
    axis: int,
    ratios: tuple[float, ...] = DEFAULT_CLIP_RATIOS,
    importance: np.ndarray | None = None,
    qmax: int = WEIGHT_QMAX,
) -> np.ndarray:
    """Squared quantization error per (ratio, channel): ``[len(ratios), channels]``.

    ``importance`` weights each element's error (broadcast against the weight moved to
    ``[channels, ...]`` and flattened): e.g. the mean square of the input that multiplies it,
    so the error is measured where it reaches the layer output.
    """
    w = _channel_view(weight, axis).astype(np.float64)
    amax = np.max(np.abs(w), axis=1)
    weights = None
    if importance is not None:
        weights = np.broadcast_to(np.asarray(importance, np.float64), w.shape)
    errors = np.empty((len(ratios), w.shape[0]))
    for i, ratio in enumerate(ratios):
        scale = np.where(amax > 0, amax * ratio / qmax, 1.0)[:, None]
        err = (np.clip(np.rint(w / scale), -qmax, qmax) * scale - w) ** 2
        errors[i] = (err * weights).sum(axis=1) if weights is not None else err.sum(axis=1)
    return errors


def mse_weight_scales(
    weight: np.ndarray,
    axis: int,
    ratios: tuple[float, ...] = DEFAULT_CLIP_RATIOS,
    importance: np.ndarray | None = None,
    qmax: int = WEIGHT_QMAX,
) -> np.ndarray:
    """Per-channel scales whose clipping threshold minimises the squared weight error."""
    amax = channel_absmax(weight, axis).astype(np.float64)
    errors = clip_errors(weight, axis, ratios, importance, qmax)
    best = np.asarray(ratios)[np.argmin(errors, axis=0)]
    return scale_from_amax(amax * best, qmax)


def max_weight_scales(weight: np.ndarray, axis: int, qmax: int = WEIGHT_QMAX) -> np.ndarray:
    return scale_from_amax(channel_absmax(weight, axis), qmax)


def weight_sqnr_db(weight: np.ndarray, scale: np.ndarray, axis: int) -> float:
    w = np.asarray(weight, np.float64)
    err = w - fake_quantize_weight(weight, scale, axis).astype(np.float64)
    noise = float(np.sum(err * err))
    return float("inf") if noise == 0 else float(10 * np.log10(float(np.sum(w * w)) / noise))
