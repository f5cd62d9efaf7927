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
    """``X^T X`` over conv input patches: ``[D, D]`` (dense) or ``[C, k, k]`` with k = kh*kw (depthwise)."""
    return conv_statistics(inputs, None, kernel, strides, pads, dilations, depthwise, max_rows, seed)[0]


def conv_statistics(
    inputs: list[np.ndarray],
    targets: list[np.ndarray] | None,
    kernel: tuple[int, int],
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
    depthwise: bool,
    max_rows: int = MAX_ROWS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``X^T X`` of the input patches and, with ``targets`` (the float model's input at the same
    layer), the cross term ``T^T X``; dense ``[D, D]`` or depthwise ``[C, k, k]``.

    Patch positions are sampled before any patch is copied, so memory stays at ``max_rows``
    patches whatever the feature-map size.
    """
    rng = np.random.default_rng(seed)
    samples = sum(x.shape[0] for x in inputs)
    hessian: np.ndarray | None = None
    cross: np.ndarray | None = None
    pairs = zip(inputs, targets if targets is not None else [None] * len(inputs), strict=True)
    for x, t in pairs:
        win = _patches(np.asarray(x, np.float64), kernel, strides, pads, dilations)
        twin = None if t is None else _patches(np.asarray(t, np.float64), kernel, strides, pads, dilations)
        n, _, oh, ow, _, _ = win.shape
        positions = n * oh * ow
        limit = max(1, int(max_rows * n / max(samples, 1)))
        pick: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if positions > limit:
            flat = np.sort(rng.choice(positions, limit, replace=False))
            ni, rest = np.divmod(flat, oh * ow)
            ii, jj = np.divmod(rest, ow)
            pick = (ni, ii, jj)
        xr = _patch_rows(win, pick)
        h = _gram(xr, xr, depthwise)
        hessian = h if hessian is None else hessian + h
        if twin is not None:
            cr = _gram(_patch_rows(twin, pick), xr, depthwise)
            cross = cr if cross is None else cross + cr
    assert hessian is not None
    return hessian, cross


def _patch_rows(win: np.ndarray, pick: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> np.ndarray:
    """``[P, C, kh, kw]`` patches at the picked (sample, row, column) positions, or all of them."""
    n, c, oh, ow, kh, kw = win.shape
    if pick is not None:
        return win[pick[0], :, pick[1], pick[2]].astype(np.float64)
    return np.moveaxis(win, 1, 3).reshape(n * oh * ow, c, kh, kw).astype(np.float64)


def _gram(a: np.ndarray, b: np.ndarray, depthwise: bool) -> np.ndarray:
    """``a^T b`` over patch rows: ``[D, D]``, or ``[C, k, k]`` per channel when depthwise."""
    p, c, kh, kw = a.shape
    if depthwise:
        pa = np.moveaxis(a.reshape(p, c, kh * kw), 1, 0)
        pb = np.moveaxis(b.reshape(p, c, kh * kw), 1, 0)
        return np.einsum("cpi,cpj->cij", pa, pb)
    return a.reshape(p, -1).T @ b.reshape(p, -1)


def corrected_weight(weight_rows: np.ndarray, hessian: np.ndarray, cross: np.ndarray, damp: float = DEFAULT_DAMP) -> np.ndarray:
    """Weights that best map the quantized input back to the float layer output (ridge least squares).

    The layers before have already changed the input ``X`` to ``X~``; ``W (T^T X~)(X~^T X~ + l I)^-1``
    minimises ``|X~ W'^T - T W^T|`` where ``T`` is the float input, so each layer absorbs part of
    the error it inherits instead of passing it on.
    """
    h = np.array(hessian, np.float64, copy=True)
    d = np.einsum("...ii->...i", h)
    mean = np.where(d.mean(axis=-1, keepdims=True) > 0, d.mean(axis=-1, keepdims=True), 1.0)
    idx = np.arange(h.shape[-1])
    h[..., idx, idx] += damp * mean
    w = np.asarray(weight_rows, np.float64)
    if h.ndim == 2:
        return np.linalg.solve(h, (w @ cross).T).T  # h symmetric: (w C) h^-1 = solve(h, (w C)^T)^T
    rhs = np.einsum("ri,rij->rj", w, cross)
    return np.linalg.solve(h, rhs[:, :, None])[:, :, 0]


def _out_hw(hw: tuple[int, ...], kernel: tuple[int, int], strides: tuple[int, int], pads: tuple[int, int, int, int], dilations: tuple[int, int]) -> tuple[int, int]:
    out = []
    for i in range(2):
        size = hw[i] + pads[i] + pads[i + 2] - ((kernel[i] - 1) * dilations[i] + 1)
        out.append(size // strides[i] + 1)
    return out[0], out[1]


def matmul_hessian(inputs: list[np.ndarray], max_rows: int = MAX_ROWS, seed: int = 0) -> np.ndarray:
    """``X^T X`` over the rows of MatMul/Gemm inputs (last axis = input features)."""
    return matmul_statistics(inputs, None, max_rows, seed)[0]


def matmul_statistics(
    inputs: list[np.ndarray], targets: list[np.ndarray] | None, max_rows: int = MAX_ROWS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """``X^T X`` and (with ``targets``) ``T^T X`` over the rows of MatMul/Gemm inputs."""
    rng = np.random.default_rng(seed)
    total = sum(int(np.prod(x.shape[:-1])) for x in inputs)
    hessian: np.ndarray | None = None
    cross: np.ndarray | None = None
    for i, x in enumerate(inputs):
        rows = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
        trows = None if targets is None else np.asarray(targets[i], np.float64).reshape(-1, x.shape[-1])
        if total > max_rows:
            pick = _row_subset(rows.shape[0], max(1, int(max_rows * rows.shape[0] / total)), rng)
            rows = rows[pick]
            trows = None if trows is None else trows[pick]
        h = rows.T @ rows
        hessian = h if hessian is None else hessian + h
        if trows is not None:
            c = trows.T @ rows
            cross = c if cross is None else cross + c
    assert hessian is not None
    return hessian, cross


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


def gptq_int8(
    weight_rows: np.ndarray, scale: np.ndarray, hessian: np.ndarray, damp: float = DEFAULT_DAMP, act_order: bool = True, qmax: int = QMAX
) -> np.ndarray:
    """int8 values for ``weight_rows`` ``[R, D]`` on the fixed per-row grid ``scale`` ``[R]``.

    ``hessian`` is ``[D, D]`` (shared by all rows) or ``[R, D, D]`` (one per row, depthwise).
    With ``act_order`` the columns with the largest input energy are rounded first, while the
    most columns remain to absorb their error (GPTQ's "act-order").
    """
    w = np.array(weight_rows, np.float64, copy=True)
    h = np.asarray(hessian, np.float64)
    shared = h.ndim == 2
    perm: np.ndarray | None = None
    if act_order:
        diag = np.einsum("...ii->...i", h)
        perm = np.argsort(-diag, axis=-1, kind="stable")
        if shared:
            w = w[:, perm]
            h = h[np.ix_(perm, perm)]
        else:
            w = np.take_along_axis(w, perm, axis=1)
            h = np.take_along_axis(np.take_along_axis(h, perm[:, :, None], axis=1), perm[:, None, :], axis=2)
    s = np.asarray(scale, np.float64).reshape(-1)
    u = _inverse_upper(h, damp)
    q = np.zeros(w.shape, np.int8)
    for j in range(w.shape[1]):
        col = w[:, j]
        qj = np.clip(np.rint(col / s), -qmax, qmax)
        q[:, j] = qj
        diag_j = u[j, j] if shared else u[:, j, j]
        err = (col - qj * s) / diag_j
        if j + 1 < w.shape[1]:
            tail = u[j, j + 1 :][None, :] if shared else u[:, j, j + 1 :]
            w[:, j + 1 :] -= err[:, None] * tail
    if perm is None:
        return q
    out = np.empty_like(q)
    if shared:
        out[:, perm] = q
    else:
        np.put_along_axis(out, perm, q, axis=1)
    return out
