"""Cross-layer equalization scales (Nagel et al., 2019) and their activation-aware form.

Two convolutions joined by a positive-homogeneous activation (ReLU; ReLU6 with care) compute
the same function when output channel ``i`` of the first is multiplied by ``t_i`` and input
channel ``i`` of the second divided by it. With per-tensor int8 activations between them, a
channel whose values span 0.05 while another spans 6 gets two grid steps; equalizing puts
every channel on the same grid.

With per-channel weights (what TensorRT uses) scaling the first layer's output channels costs
nothing: each channel gets its own weight scale anyway. The cost is on the second layer: a
depthwise conv has one weight channel per input channel, so it is free there too; a dense conv
sees its input columns shrink, coarsening them inside each output channel's grid. ``alpha``
trades the two (SmoothQuant's migration strength).

ReLU6 is positive-homogeneous only up to its clip point: ``relu6(t x) != t relu6(x)``. Channels
whose calibration maximum reaches the clip keep ``t = 1`` (their clip stays exact) and every
other channel is scaled at most up to the clip, so on the calibration range the function is
unchanged; beyond it the int8 activation clips anyway. This is the alternative to AIMET's
choice of replacing ReLU6 by ReLU, which changes the float model.
"""

from __future__ import annotations

import numpy as np

# Largest factor a channel is scaled by: a dead channel (maximum ~0) must not blow up weights.
DEFAULT_MAX_SCALE = 64.0
SATURATION_TOLERANCE = 1e-3


def weight_range_scales(range1: np.ndarray, range2: np.ndarray, max_scale: float = DEFAULT_MAX_SCALE) -> np.ndarray:
    """Data-free CLE: factors ``t`` making ``range1 * t == range2 / t`` (= sqrt(range1 * range2)).

    ``range1[i]`` is the absolute maximum of the first layer's output channel ``i``,
    ``range2[i]`` that of the second layer's input channel ``i``. The first layer is
    multiplied by ``t``, the second divided by it.
    """
    r1 = np.asarray(range1, np.float64)
    r2 = np.asarray(range2, np.float64)
    t = np.ones_like(r1)
    ok = (r1 > 0) & (r2 > 0)
    t[ok] = np.sqrt(r2[ok] / r1[ok])
    return np.clip(t, 1.0 / max_scale, max_scale)


def activation_scales(
    channel_max: np.ndarray,
    alpha: float = 1.0,
    clip: float | None = None,
    max_scale: float = DEFAULT_MAX_SCALE,
) -> np.ndarray:
    """Factors ``t >= 1`` lifting every channel's calibration maximum towards the largest one.

    ``channel_max[i]`` is channel ``i``'s maximum of the activation between the two layers
    (non-negative after a ReLU). ``clip`` is ReLU6's upper bound when there is one: the target
    is then the clip, channels reaching it keep ``t = 1`` and no channel is pushed past it.
    ``alpha`` in [0, 1]: 1 equalizes fully, 0 leaves the layer alone.
    """
    m = np.asarray(channel_max, np.float64)
    target = float(clip) if clip is not None else float(m.max(initial=0.0))
    t = np.ones_like(m)
    if target <= 0:
        return t
    live = m > target * 1e-6
    t[live] = (target / m[live]) ** alpha
    if clip is not None:
        saturated = m >= clip * (1 - SATURATION_TOLERANCE)
        t[saturated] = 1.0
    return np.clip(t, 1.0, max_scale)
