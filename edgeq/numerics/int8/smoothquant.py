"""SmoothQuant scales (Xiao et al., 2023): move activation outliers into the weights.

Transformer activations have a few channels a hundred times larger than the rest; one
per-tensor int8 scale for them crushes every other channel. Dividing channel ``j`` of the
activation by ``s_j`` and multiplying row ``j`` of the weight by it leaves ``X @ W`` unchanged
and, with ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)``, balances the difficulty between
the two (alpha 0.5 for most models; larger for models with worse outliers).
"""

from __future__ import annotations

import numpy as np

MIN_SCALE = 1e-5


def smoothquant_scales(activation_absmax: np.ndarray, weight_absmax: np.ndarray, alpha: float) -> np.ndarray:
    """Per-input-channel divisors for the activation (and multipliers for the weight rows)."""
    a = np.maximum(np.asarray(activation_absmax, np.float64), MIN_SCALE)
    w = np.maximum(np.asarray(weight_absmax, np.float64), MIN_SCALE)
    s = a**alpha / w ** (1.0 - alpha)
    dead = np.asarray(activation_absmax) <= 0
    s[dead] = 1.0
    return np.maximum(s, MIN_SCALE)
