"""Empirical bias correction: put back the mean output shift that weight/activation rounding causes.

Rounding errors do not average out per channel: a channel whose quantized weights sum a bit
high shifts its output mean, and after a ReLU6 a shifted mean is a changed distribution.
Depthwise convolutions (9 weights per channel) suffer most. Measuring the float and quantized
outputs on calibration data and adding the per-channel mean difference to the bias removes
the systematic part of the error (Nagel et al., 2019, "empirical" variant).
"""

from __future__ import annotations

import numpy as np


def channel_means(output: np.ndarray, channel_axis: int) -> np.ndarray:
    """Mean over every axis but the channel axis, in float64."""
    x = np.moveaxis(np.asarray(output, np.float64), channel_axis, 0)
    return x.reshape(x.shape[0], -1).mean(axis=1)


def corrected_bias(
    bias: np.ndarray | None,
    float_output: np.ndarray,
    quantized_output: np.ndarray,
    channel_axis: int,
) -> np.ndarray:
    """The bias that makes the quantized output's per-channel mean equal the float one."""
    shift = channel_means(float_output, channel_axis) - channel_means(quantized_output, channel_axis)
    base = np.zeros_like(shift) if bias is None else np.asarray(bias, np.float64)
    dtype = np.float32 if bias is None else np.asarray(bias).dtype
    return (base + shift).astype(dtype)


def shifted_bias(bias: np.ndarray | None, mean_shift: np.ndarray, channels: int) -> np.ndarray:
    """``bias + mean_shift`` (a missing bias counts as zeros), in the bias's dtype."""
    base = np.zeros(channels, np.float64) if bias is None else np.asarray(bias, np.float64)
    dtype = np.float32 if bias is None else np.asarray(bias).dtype
    return (base + np.asarray(mean_shift, np.float64)).astype(dtype)
