"""The input statistics of an int8 Conv, MatMul or Gemm: ``X^T X`` and the cross term ``T^T X``.

GPTQ rounding and the least-squares refit of the int8 sequential quantizer work on matrix
products, so a convolution becomes one over its input patches (im2col): a dense conv has one
``D x D`` matrix with ``D = C_in * kh * kw``; a depthwise conv has one ``kh*kw`` square matrix
per channel. Rows (patch positions, token rows) are subsampled to a fixed number, plenty for
``D`` up to a few thousand; the sums themselves are :class:`~edgeq.numerics.hessian.GramAccumulator`'s.
"""

from __future__ import annotations

import numpy as np

from edgeq.numerics.hessian import GramAccumulator

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
    hessian = GramAccumulator()
    cross = GramAccumulator()
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
        xr = _gram_rows(_patch_rows(win, pick), depthwise)
        hessian.add(xr)
        if twin is not None:
            cross.add(_gram_rows(_patch_rows(twin, pick), depthwise), xr)
    assert hessian.sum is not None
    return hessian.sum, cross.sum


def _patch_rows(win: np.ndarray, pick: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> np.ndarray:
    """``[P, C, kh, kw]`` patches at the picked (sample, row, column) positions, or all of them."""
    n, c, oh, ow, kh, kw = win.shape
    if pick is not None:
        return win[pick[0], :, pick[1], pick[2]].astype(np.float64)
    return np.moveaxis(win, 1, 3).reshape(n * oh * ow, c, kh, kw).astype(np.float64)


def _gram_rows(patches: np.ndarray, depthwise: bool) -> np.ndarray:
    """Patches ``[P, C, kh, kw]`` as accumulator rows: ``[P, D]``, or ``[C, P, k]`` per channel when depthwise."""
    p, c, kh, kw = patches.shape
    if depthwise:
        return np.moveaxis(patches.reshape(p, c, kh * kw), 1, 0)
    return patches.reshape(p, -1)


def matmul_hessian(inputs: list[np.ndarray], max_rows: int = MAX_ROWS, seed: int = 0) -> np.ndarray:
    """``X^T X`` over the rows of MatMul/Gemm inputs (last axis = input features)."""
    return matmul_statistics(inputs, None, max_rows, seed)[0]


def matmul_statistics(
    inputs: list[np.ndarray], targets: list[np.ndarray] | None, max_rows: int = MAX_ROWS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """``X^T X`` and (with ``targets``) ``T^T X`` over the rows of MatMul/Gemm inputs."""
    rng = np.random.default_rng(seed)
    total = sum(int(np.prod(x.shape[:-1])) for x in inputs)
    hessian = GramAccumulator()
    cross = GramAccumulator()
    for i, x in enumerate(inputs):
        rows = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
        trows = None if targets is None else np.asarray(targets[i], np.float64).reshape(-1, x.shape[-1])
        if total > max_rows:
            pick = _row_subset(rows.shape[0], max(1, int(max_rows * rows.shape[0] / total)), rng)
            rows = rows[pick]
            trows = None if trows is None else trows[pick]
        hessian.add(rows)
        if trows is not None:
            cross.add(trows, rows)
    assert hessian.sum is not None
    return hessian.sum, cross.sum
