"""GPTQ rounding for per-channel int8 weights of Conv, MatMul and Gemm.

Rounding each weight to the nearest grid point is optimal for the weight, not for the layer
output. With ``H = X^T X`` of the layer's (already quantized) input (from
:mod:`edgeq.numerics.int8.statistics`), the error-feedback walk of :mod:`edgeq.numerics.gptq`
rounds one input column at a time and moves the rounding error onto the columns not yet
rounded; the output error drops well below round-to-nearest at the same grid. Scales stay fixed
per output channel (the TensorRT grid), only the integers change.
"""

from __future__ import annotations

import numpy as np

from edgeq.numerics.gptq import PreparedHessian, error_feedback_walk

QMAX = 127
DEFAULT_DAMP = 0.01


def gptq_int8(
    weight_rows: np.ndarray, scale: np.ndarray, hessian: np.ndarray, damp: float = DEFAULT_DAMP, act_order: bool = True, qmax: int = QMAX
) -> np.ndarray:
    """int8 values for ``weight_rows`` ``[R, D]`` on the fixed per-row grid ``scale`` ``[R]``.

    ``hessian`` is ``[D, D]`` (shared by all rows) or ``[R, D, D]`` (one per row, depthwise).
    With ``act_order`` the columns with the largest input energy are rounded first. Weights of
    dead input channels (never active in calibration) are kept and rounded to nearest, as this
    walk always did; the weight-only walk zeroes them.
    """
    prepared = PreparedHessian.build(np.asarray(hessian, np.float64), damp, act_order)
    w = prepared.to_walk_order(np.array(weight_rows, np.float64, copy=True))
    s = np.asarray(scale, np.float64).reshape(-1)
    q = np.zeros(w.shape, np.int8)

    def quantize(j: int, pending: np.ndarray) -> np.ndarray:
        qj = np.clip(np.rint(pending[:, 0] / s), -qmax, qmax)
        q[:, j] = qj
        return qj * s

    # Every correction eager (no lazy batches): the arithmetic of the original column walk.
    error_feedback_walk(w, prepared.u, quantize)
    return prepared.to_original_order(q)
