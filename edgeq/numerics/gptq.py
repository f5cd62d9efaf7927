"""GPTQ's error feedback: round one input column at a time and push its error onto the columns left.

With ``H = X^T X`` of the layer input, the output error of a weight perturbation ``D`` is
``trace(D H D^T)``. GPTQ (Frantar et al., 2023) walks the columns (input channels) in order,
rounds one, and corrects the columns not yet rounded with the optimal update, read off the upper
factor ``U`` of ``H^-1 = U^T U``: column ``j``'s error divided by ``U[j, j]`` times the row
``U[j, j:]``. Lazy batches of columns turn the update of the far columns into one matrix product.

This module is the walk only; what "round a column" means is a callback: a block-format codec
for weight-only formats (:mod:`edgeq.numerics.weight_only.gptq`), the fixed per-channel int8 grid
for int8 (:mod:`edgeq.numerics.int8.gptq`). ``H`` is either one ``[D, D]`` matrix shared by all
weight rows, or one matrix per row ``[R, D, D]`` (depthwise convolutions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgeq.numerics.hessian import damped_hessian

# Rounds walk column ``j``: receives ``j`` and the weights ``[R, D - j]`` still to be rounded (with
# every correction so far applied to the current lazy batch; column 0 of it is column ``j``),
# returns the rounded column ``[R]`` in float64.
ColumnQuantizer = Callable[[int, np.ndarray], np.ndarray]


def inverse_cholesky_upper(h: np.ndarray) -> np.ndarray:
    """Upper ``U`` with ``U^T U = H^-1``, from one Cholesky factorisation of ``H`` (batched).

    With ``J`` the reversal permutation and ``J H J = L L^T``, ``U = J L^-1 J``: one Cholesky of
    ``H`` and one triangular inverse. The paper's recipe (invert ``H``, then factor the inverse)
    takes three cubic steps and, on an ill-conditioned ``H``, can lose the positive definiteness of
    the computed inverse to rounding. Damping is raised until ``H`` is numerically positive definite.
    """
    n = h.shape[-1]
    eye = np.eye(n)
    extra = 0.0
    reversed_h = h[..., ::-1, ::-1]
    for _ in range(8):
        try:
            lower = np.linalg.cholesky(reversed_h + extra * eye)
            rhs = eye if lower.ndim == 2 else np.broadcast_to(eye, lower.shape)
            return np.linalg.solve(lower, rhs)[..., ::-1, ::-1].copy()
        except np.linalg.LinAlgError:
            extra = max(extra * 10.0, 1e-6 * float(np.mean(np.einsum("...ii->...i", h))))
    raise np.linalg.LinAlgError("Hessian is not positive definite even with damping")


@dataclass
class PreparedHessian:
    """What every GPTQ walk over one layer shares: the column order, the factor of ``H^-1`` (in
    that order) and the dead input channels (in the original order).

    Shared Hessian: ``perm`` ``[D]``, ``u`` ``[D, D]``, ``dead`` ``[D]``; one per row: ``[R, D]``,
    ``[R, D, D]``, ``[R, D]``.
    """

    perm: np.ndarray
    u: np.ndarray
    dead: np.ndarray

    @classmethod
    def build(cls, hessian: np.ndarray, damp: float, act_order: bool) -> PreparedHessian:
        """Damp ``hessian`` and factor it; with ``act_order`` the columns with the largest input
        energy come first, while the most columns remain to absorb their error (GPTQ's act-order)."""
        h, dead = damped_hessian(hessian, damp)
        diag = np.einsum("...ii->...i", h)
        if h.ndim == 2:
            perm = np.argsort(-diag, kind="stable") if act_order else np.arange(h.shape[0])
            return cls(perm, inverse_cholesky_upper(h[np.ix_(perm, perm)]), dead)
        if act_order:
            perm = np.argsort(-diag, axis=-1, kind="stable")
        else:
            perm = np.broadcast_to(np.arange(h.shape[-1]), diag.shape).copy()
        h = np.take_along_axis(np.take_along_axis(h, perm[:, :, None], axis=1), perm[:, None, :], axis=2)
        return cls(perm, inverse_cholesky_upper(h), dead)

    @property
    def shared(self) -> bool:
        return self.u.ndim == 2

    def to_walk_order(self, w: np.ndarray) -> np.ndarray:
        """The columns of ``w`` ``[R, D]`` in walk order (a copy)."""
        return w[:, self.perm] if self.shared else np.take_along_axis(w, self.perm, axis=1)

    def to_original_order(self, values: np.ndarray) -> np.ndarray:
        """Undo :meth:`to_walk_order` on ``values`` ``[R, D]``."""
        if self.shared:
            return values[:, np.argsort(self.perm)]
        out = np.empty_like(values)
        np.put_along_axis(out, self.perm, values, axis=1)
        return out


def error_feedback_walk(
    weights: np.ndarray, u: np.ndarray, quantize: ColumnQuantizer, lazy_batch: int | None = None
) -> None:
    """Round the columns of ``weights`` ``[R, D]`` (float64, in walk order) one by one through
    ``quantize``, feeding each column's error forward along ``u`` (``[D, D]`` or ``[R, D, D]``).

    ``weights`` is scratch space, overwritten. ``lazy_batch`` columns are corrected eagerly, the
    rest once per batch (None: all columns in one batch, every correction eager).
    """
    cols = weights.shape[1]
    batch = cols if lazy_batch is None else lazy_batch
    shared = u.ndim == 2
    for start in range(0, cols, max(batch, 1)):
        end = min(start + batch, cols)
        chunk = weights[:, start:end].copy()
        errors = np.zeros_like(chunk)
        u_chunk = u[..., start:end, start:end]
        for i in range(end - start):
            deq = quantize(start + i, chunk[:, i:])
            if shared:
                err = (chunk[:, i] - deq) / u_chunk[i, i]
                chunk[:, i:] -= np.outer(err, u_chunk[i, i:])
            else:
                err = (chunk[:, i] - deq) / u_chunk[:, i, i]
                chunk[:, i:] -= err[:, None] * u_chunk[:, i, i:]
            errors[:, i] = err
        if shared:
            weights[:, end:] -= errors @ u[start:end, end:]
        elif end < cols:
            weights[:, end:] -= np.einsum("ri,rij->rj", errors, u[:, start:end, end:])
