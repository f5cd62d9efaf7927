"""How far a quantized layer's output is from the float one, batch by batch.

The sequential search scores every candidate (activation range, clipping ratio, GPTQ versus
round-to-nearest) by these numbers on the layer *output*; per-channel moments also give the
bias correction its mean shift. Sums run in float64 one batch at a time, so no copy of all
activations is ever made.
"""

from __future__ import annotations

import numpy as np


def channel_moments(ref: list[np.ndarray], out: list[np.ndarray], axis: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-channel sum and sum of squares of ``ref - out``, batch by batch (no big copies)."""
    total: np.ndarray | None = None
    squares: np.ndarray | None = None
    count = 0
    for r, o in zip(ref, out, strict=True):
        d = np.moveaxis(r - o, axis, 0).reshape(r.shape[axis], -1).astype(np.float64)
        s1, s2 = d.sum(axis=1), np.einsum("ij,ij->i", d, d)
        total = s1 if total is None else total + s1
        squares = s2 if squares is None else squares + s2
        count += d.shape[1]
    assert total is not None and squares is not None
    return total, squares, count


def channel_error(ref: list[np.ndarray], out: list[np.ndarray], axis: int, centered: bool) -> np.ndarray:
    """Per-channel mean squared error; ``centered``: only its variance, the part bias correction
    cannot remove (used when the layer's bias will be corrected)."""
    total, squares, count = channel_moments(ref, out, axis)
    mean = total / count
    return squares / count - (mean * mean if centered else 0.0)


def squared_error(ref: list[np.ndarray], out: list[np.ndarray]) -> float:
    """Total squared error over all batches, in float64."""
    return float(sum(np.sum((r.astype(np.float64) - o) ** 2) for r, o in zip(ref, out, strict=True)))


def sqnr(ref: list[np.ndarray], out: list[np.ndarray]) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when the outputs are identical)."""
    signal = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in ref)
    noise = squared_error(ref, out)
    return float("inf") if noise == 0 else float(10 * np.log10(max(signal, 1e-300) / noise))
