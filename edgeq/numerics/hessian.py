"""The input second moment ``X^T X`` of a layer, accumulated batch by batch, and its damping.

For a linear layer ``y = x W^T`` the squared output error of a weight perturbation ``D`` is
``trace(D X^T X D^T)``, so GPTQ, the output-error searches and the least-squares refit need only
this ``K x K`` matrix, never the activations themselves. Calibration streams the activations, so
the matrix is summed batch by batch; the running sum is float64 (float32 sums over millions of
rows lose the small eigenvalues the Cholesky step of GPTQ depends on).

The same accumulator sums a cross term ``T^T X`` (targets against inputs), and a batch of
independent matrices at once (``[C, rows, k]``: one ``k x k`` matrix per depthwise channel).
"""

from __future__ import annotations

import numpy as np


class GramAccumulator:
    """Running float64 sum of ``A^T B`` over row batches (``X^T X`` when ``B`` is ``A``).

    Rows are along the second-to-last axis: ``[rows, K]`` gives a ``[K, K]`` sum, ``[C, rows, k]``
    gives ``[C, k, k]``. Each batch's product is computed in the dtype of the rows passed (float32
    rows: a fast float32 product of a few thousand rows; float64 rows: an exact float64 product);
    only the running sum is always float64.
    """

    def __init__(self) -> None:
        self.sum: np.ndarray | None = None
        self.rows = 0

    def add(self, left: np.ndarray, right: np.ndarray | None = None) -> None:
        """Add ``left^T right`` (``right`` defaults to ``left``) and count ``left``'s rows."""
        other = left if right is None else right
        if left.ndim == 2:
            product = left.T @ other
        else:
            product = np.einsum("cpi,cpj->cij", left, other)
        gram = product.astype(np.float64)
        if self.sum is None:
            self.sum = gram
        else:
            if gram.shape != self.sum.shape:
                raise ValueError(f"channel count changed from {self.sum.shape[-1]} to {gram.shape[-1]} between batches")
            self.sum += gram
        self.rows += left.shape[-2]

    def merge(self, other: GramAccumulator) -> None:
        """Add another accumulator's sum (e.g. from a parallel worker)."""
        if other.sum is None:
            return
        self.sum = other.sum.copy() if self.sum is None else self.sum + other.sum
        self.rows += other.rows

    def mean(self) -> np.ndarray:
        """``sum / rows``: the second moment per row, float64 (empty ``0 x 0`` before any batch)."""
        if self.sum is None:
            return np.zeros((0, 0))
        return self.sum / max(self.rows, 1)


def add_ridge(h: np.ndarray, damp: float) -> np.ndarray:
    """A float64 copy of ``h`` with ``damp * mean(diag)`` (1 when that mean is not positive) added to
    its diagonal: a scale-free ridge that makes solves with ``h`` well posed. Batched over leading axes."""
    out = np.array(h, dtype=np.float64, copy=True)
    diag = np.einsum("...ii->...i", out)
    mean = diag.mean(axis=-1, keepdims=True)
    idx = np.arange(out.shape[-1])
    out[..., idx, idx] += damp * np.where(mean > 0, mean, 1.0)
    return out


def damped_hessian(h: np.ndarray, damp: float) -> tuple[np.ndarray, np.ndarray]:
    """The Hessian ready to factor, and the mask of dead input channels (never active in calibration).

    A dead channel has a zero row and column; its diagonal is set to 1 (it then decouples from the
    rest), then the ridge of :func:`add_ridge` is added. Batched over leading axes.
    """
    out = np.array(h, dtype=np.float64, copy=True)
    idx = np.arange(out.shape[-1])
    diag = out[..., idx, idx]
    dead = diag <= 0
    out[..., idx, idx] = np.where(dead, 1.0, diag)
    return add_ridge(out, damp), dead
