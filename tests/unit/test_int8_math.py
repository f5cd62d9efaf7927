"""int8 math (pure numpy) against independent float64 references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeq.numerics.int8 import bias as int8_bias
from edgeq.numerics.int8 import equalize as int8_equalize
from edgeq.numerics.int8 import gptq as int8_gptq
from edgeq.numerics.int8 import refit as int8_refit
from edgeq.numerics.int8 import smoothquant as int8_smoothquant
from edgeq.numerics.int8 import statistics as int8_statistics
from edgeq.numerics.int8 import weights as int8_weights


def test_quantize_weight_matches_reference_and_is_symmetric():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    scale = int8_weights.max_weight_scales(w, 0)
    np.testing.assert_allclose(scale, np.abs(w).reshape(5, -1).max(axis=1) / 127, rtol=1e-6)
    q = int8_weights.quantize_weight(w, scale, 0)
    ref = np.clip(np.round(w.astype(np.float64) / scale.astype(np.float64)[:, None, None, None]), -127, 127)
    np.testing.assert_array_equal(q, ref.astype(np.int8))
    assert q.min() >= -127 and q.max() == 127


def test_axis_one_for_matmul_weights():
    w = np.array([[1.0, 100.0], [-0.5, 50.0]], np.float32)  # [K, N]: channel = column
    scale = int8_weights.max_weight_scales(w, 1)
    np.testing.assert_allclose(scale, [1.0 / 127, 100.0 / 127], rtol=1e-6)


def test_mse_clipping_never_worse_than_max_on_weight_error():
    rng = np.random.default_rng(1)
    w = rng.standard_t(1.2, size=(8, 4096)).astype(np.float32)  # very heavy tails: clipping pays even at 8 bits
    s_max = int8_weights.max_weight_scales(w, 0)
    s_mse = int8_weights.mse_weight_scales(w, 0)
    err = lambda s: ((int8_weights.fake_quantize_weight(w, s, 0) - w) ** 2).sum(axis=1)  # noqa: E731
    assert np.all(err(s_mse) <= err(s_max) * (1 + 1e-3))  # float32 scales vs the float64 search
    assert err(s_mse).sum() < err(s_max).sum()


@settings(max_examples=30, deadline=None)
@given(st.floats(0.01, 100.0), st.integers(0, 10_000))
def test_fake_quantize_activation_error_bound(amax, seed):
    x = np.random.default_rng(seed).uniform(-amax, amax, 256).astype(np.float32)
    y = int8_weights.fake_quantize_activation(x, amax)
    step = amax / 127
    assert np.max(np.abs(x - y)) <= step / 2 + 1e-6 * amax
    assert np.all(np.abs(y) <= 128 * step + 1e-6)


def test_bias_correction_removes_mean_shift():
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((8, 4, 5, 5))
    quant = ref + np.array([0.3, -0.2, 0.0, 1.0])[None, :, None, None] + 0.01 * rng.standard_normal(ref.shape)
    bias = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    new = int8_bias.corrected_bias(bias, ref, quant, channel_axis=1)
    expected = bias.astype(np.float64) + (ref - quant).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(new, expected, rtol=1e-6)
    corrected = quant + (new - bias)[None, :, None, None]
    assert np.all(np.abs(int8_bias.channel_means(corrected - ref, 1)) < 1e-6)


def test_activation_scales_keep_saturated_channels_and_lift_the_rest():
    m = np.array([6.0, 3.0, 0.6, 0.0, 0.01])
    t = int8_equalize.activation_scales(m, alpha=1.0, clip=6.0, max_scale=64.0)
    np.testing.assert_allclose(t, [1.0, 2.0, 10.0, 1.0, 64.0])
    assert np.all(t * m <= 6.0 + 1e-9)  # never past the clip: ReLU6 stays exact on the calibration range
    half = int8_equalize.activation_scales(m, alpha=0.5, clip=6.0)
    np.testing.assert_allclose(half[:3], [1.0, np.sqrt(2.0), np.sqrt(10.0)])


def test_weight_range_scales_reference():
    r1, r2 = np.array([4.0, 1.0, 0.0]), np.array([1.0, 4.0, 2.0])
    t = int8_equalize.weight_range_scales(r1, r2)
    np.testing.assert_allclose(t, [0.5, 2.0, 1.0])


def test_smoothquant_scales_reference():
    a, w = np.array([100.0, 1.0, 0.0]), np.array([0.5, 2.0, 1.0])
    s = int8_smoothquant.smoothquant_scales(a, w, 0.5)
    np.testing.assert_allclose(s[:2], [np.sqrt(100 / 0.5), np.sqrt(1 / 2.0)])
    assert s[2] == 1.0


def test_gptq_lowers_output_error_and_equals_rtn_for_identity_hessian():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2000, 48)) @ rng.standard_normal((48, 48))
    w = rng.standard_normal((16, 48))
    s = np.abs(w).max(axis=1) / 127
    rtn = np.clip(np.rint(w / s[:, None]), -127, 127)
    q = int8_gptq.gptq_int8(w, s, x.T @ x, damp=1e-4).astype(np.float64)
    err = lambda v: np.sum((x @ (w - v * s[:, None]).T) ** 2)  # noqa: E731
    assert err(q) < 0.8 * err(rtn)
    assert np.abs(q).max() <= 127
    ident = int8_gptq.gptq_int8(w, s, np.eye(48), damp=0.0)
    np.testing.assert_array_equal(ident, rtn.astype(np.int8))


def test_gptq_depthwise_rows_each_use_their_own_hessian_and_keep_dead_channels():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 500, 9)) @ (rng.standard_normal((9, 9)) + np.eye(9))
    x[1, :, 4] = 0.0  # channel 1 never sees input 4
    hessians = np.einsum("cpi,cpj->cij", x, x)
    w = rng.standard_normal((3, 9))
    s = np.abs(w).max(axis=1) / 127
    for act_order in (False, True):
        q = int8_gptq.gptq_int8(w, s, hessians, act_order=act_order)
        for r in range(3):
            alone = int8_gptq.gptq_int8(w[r : r + 1], s[r : r + 1], hessians[r], act_order=act_order)
            np.testing.assert_array_equal(q[r], alone[0])
        assert q[1, 4] == np.clip(np.rint(w[1, 4] / s[1]), -127, 127)  # rounded to nearest, not zeroed


def test_conv_hessian_matches_explicit_im2col():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 5, 5))
    dense = int8_statistics.conv_hessian([x], (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), depthwise=False)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    rows = [xp[n, :, i : i + 3, j : j + 3].ravel() for n in range(2) for i in range(0, 5, 2) for j in range(0, 5, 2)]
    p = np.array(rows)
    np.testing.assert_allclose(dense, p.T @ p, rtol=1e-10)
    dw = int8_statistics.conv_hessian([x], (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), depthwise=True)
    for c in range(3):
        pc = np.array([xp[n, c, i : i + 3, j : j + 3].ravel() for n in range(2) for i in range(0, 5, 2) for j in range(0, 5, 2)])
        np.testing.assert_allclose(dw[c], pc.T @ pc, rtol=1e-10)


@pytest.mark.parametrize("rows", [1, 7])
def test_matmul_hessian(rows):
    x = np.random.default_rng(rows).standard_normal((rows, 3, 4))
    np.testing.assert_allclose(int8_statistics.matmul_hessian([x]), x.reshape(-1, 4).T @ x.reshape(-1, 4))


def test_refit_recovers_the_weight_when_the_input_is_exact_and_solves_least_squares():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((400, 10))
    w = rng.standard_normal((4, 10))
    h, cross = int8_statistics.matmul_statistics([x], [x])
    assert cross is not None
    np.testing.assert_allclose(int8_refit.corrected_weight(w, h, cross, damp=0.0), w, rtol=1e-9)
    noisy = x + 0.1 * rng.standard_normal(x.shape)  # the quantized stream's input
    h, cross = int8_statistics.matmul_statistics([noisy], [x])
    assert cross is not None
    reference = np.linalg.lstsq(noisy, x @ w.T, rcond=None)[0].T
    np.testing.assert_allclose(int8_refit.corrected_weight(w, h, cross, damp=0.0), reference, rtol=1e-8, atol=1e-10)
