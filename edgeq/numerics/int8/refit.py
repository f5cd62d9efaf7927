"""Least-squares refit of an int8 layer's float weight onto the float model's output.

The layers before have already changed the input ``X`` to ``X~``; refitting the weight on
``X~`` against the float output lets each layer absorb part of the error it inherits instead of
passing it on. The statistics come from :mod:`edgeq.numerics.int8.statistics`.
"""

from __future__ import annotations

import numpy as np

from edgeq.numerics.hessian import add_ridge

DEFAULT_DAMP = 0.01


def corrected_weight(weight_rows: np.ndarray, hessian: np.ndarray, cross: np.ndarray, damp: float = DEFAULT_DAMP) -> np.ndarray:
    """Weights that best map the quantized input back to the float layer output (ridge least squares).

    ``W (T^T X~)(X~^T X~ + l I)^-1`` minimises ``|X~ W'^T - T W^T|`` where ``T`` is the float
    input; ``hessian`` and ``cross`` are ``[D, D]`` (dense) or ``[C, k, k]`` (depthwise).
    """
    h = add_ridge(hessian, damp)
    w = np.asarray(weight_rows, np.float64)
    if h.ndim == 2:
        return np.linalg.solve(h, (w @ cross).T).T  # h symmetric: (w C) h^-1 = solve(h, (w C)^T)^T
    rhs = np.einsum("ri,rij->rj", w, cross)
    return np.linalg.solve(h, rhs[:, :, None])[:, :, 0]
