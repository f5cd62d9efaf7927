"""GPTQ rounding for per-channel int8 weights of Conv, MatMul and Gemm.

Rounding each weight to the nearest grid point is optimal for the weight, not for the layer
output. With ``H = X^T X`` of the layer's (already quantized) input, GPTQ (Frantar et al.,
2023) rounds one input column at a time and moves the rounding error onto the columns not yet
rounded, along ``H^-1``; the output error drops well below round-to-nearest at the same grid.
Scales stay fixed per output channel (the TensorRT grid), only the integers change.

Convolutions become matrix products over their input patches (im2col): a dense conv has one
``D x D`` Hessian with ``D = C_in * kh * kw``; a depthwise conv has one ``kh*kw`` square Hessian
per channel. Patches are subsampled to a fixed number of rows, plenty for ``D`` up to a few
thousand.
"""

from __future__ import annotations

import numpy as np

QMAX = 127
DEFAULT_DAMP = 0.01
MAX_ROWS = 65536


def _patches(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int], pads: tuple[int, int, int, int], dilations: tuple[int, int]) -> np.ndarray:
    """``[N, C, H', W', kh, kw]`` input windows of a 2-D convolution."""
    top, left, bottom, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    kh, kw = kernel
    dh, dw = dilations
    span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    windows = np.lib.stride_tricks.sliding_window_view(xp, span, axis=(2, 3))
    return windows[:, :, :: strides[0], :: strides[1], ::dh, ::dw]


def _row_subset(count: int, limit: int, rng: np.random.Generator) -> np.ndarray | slice:
    return slice(None) if count <= limit else np.sort(rng.choice(count, limit, replace=False))


def conv_hessian(
    inputs: list[np.ndarray],
    kernel: tuple[int, int],
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
    depthwise: bool,
    max_rows: int = MAX_ROWS,
    seed: int = 0,
) -> np.ndarray:
    """``X^T X`` over conv input patches: ``[D, D]`` (dense) or ``[C, k, k]`` with k = kh*kw (depthwise).

    Patch positions are sampled before any patch is copied, so memory stays at ``max_rows``
    patches whatever the feature-map size.
    """
    rng = np.random.default_rng(seed)
    samples = sum(x.shape[0] for x in inputs)
    hessian: np.ndarray | None = None
    for x in inputs:
        win = _patches(np.asarray(x, np.float64), kernel, strides, pads, dilations)
        n, c, oh, ow, kh, kw = win.shape
        positions = n * oh * ow
        limit = max(1, int(max_rows * n / max(samples, 1)))
        if positions > limit:
            flat = np.sort(rng.choice(positions, limit, replace=False))
            ni, rest = np.divmod(flat, oh * ow)
            ii, jj = np.divmod(rest, ow)
            picked = win[ni, :, ii, jj].astype(np.float64)  # [P, C, kh, kw]
        else:
            picked = np.moveaxis(win, 1, 3).reshape(positions, c, kh, kw).astype(np.float64)
        h: np.ndarray
        if depthwise:
            per_channel = np.moveaxis(picked.reshape(picked.shape[0], c, kh * kw), 1, 0)  # [C, P, k]
            h = np.einsum("cpi,cpj->cij", per_channel, per_channel)
        else:
            rows = picked.reshape(picked.shape[0], c * kh * kw)
            h = rows.T @ rows
        hessian = h if hessian is None else hessian + h
    assert hessian is not None
    return hessian


def _out_hw(hw: tuple[int, ...], kernel: tuple[int, int], strides: tuple[int, int], pads: tuple[int, int, int, int], dilations: tuple[int, int]) -> tuple[int, int]:
    out = []
    for i in range(2):
        size = hw[i] + pads[i] + pads[i + 2] - ((kernel[i] - 1) * dilations[i] + 1)
        out.append(size // strides[i] + 1)
    return out[0], out[1]


def matmul_hessian(inputs: list[np.ndarray], max_rows: int = MAX_ROWS, seed: int = 0) -> np.ndarray:
    """``X^T X`` over the rows of MatMul/Gemm inputs (last axis = input features)."""
    rng = np.random.default_rng(seed)
    total = sum(int(np.prod(x.shape[:-1])) for x in inputs)
    hessian: np.ndarray | None = None
    for x in inputs:
        rows = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
        if total > max_rows:
            rows = rows[_row_subset(rows.shape[0], max(1, int(max_rows * rows.shape[0] / total)), rng)]
        h = rows.T @ rows
        hessian = h if hessian is None else hessian + h
    assert hessian is not None
    return hessian


def _inverse_upper(h: np.ndarray, damp: float) -> np.ndarray:
    """Upper-triangular ``U`` with ``U^T U = (H + damp * mean(diag) I)^-1`` (batched over leading axes)."""
    h = np.array(h, np.float64, copy=True)
    d = np.einsum("...ii->...i", h)
    dead = d <= 0
    mean = np.where(d.mean(axis=-1, keepdims=True) > 0, d.mean(axis=-1, keepdims=True), 1.0)
    idx = np.arange(h.shape[-1])
    h[..., idx, idx] += np.where(dead, 1.0, 0.0) + damp * mean
    inv = np.linalg.inv(h)
    inv = (inv + np.swapaxes(inv, -1, -2)) / 2
    lower = np.linalg.cholesky(inv)
    return np.swapaxes(lower, -1, -2)


def gptq_int8(weight_rows: np.ndarray, scale: np.ndarray, hessian: np.ndarray, damp: float = DEFAULT_DAMP) -> np.ndarray:
    """int8 values for ``weight_rows`` ``[R, D]`` on the fixed per-row grid ``scale`` ``[R]``.

    ``hessian`` is ``[D, D]`` (shared by all rows) or ``[R, D, D]`` (one per row, depthwise).
    """
    w = np.array(weight_rows, np.float64, copy=True)
    s = np.asarray(scale, np.float64).reshape(-1)
    u = _inverse_upper(hessian, damp)
    shared = u.ndim == 2
    q = np.zeros(w.shape, np.int8)
    for j in range(w.shape[1]):
        col = w[:, j]
        qj = np.clip(np.rint(col / s), -QMAX, QMAX)
        q[:, j] = qj
        diag = u[j, j] if shared else u[:, j, j]
        err = (col - qj * s) / diag
        if j + 1 < w.shape[1]:
            tail = u[j, j + 1 :][None, :] if shared else u[:, j, j + 1 :]
            w[:, j + 1 :] -= err[:, None] * tail
    return q
