"""The X^T X accumulator, its damping and GPTQ's error-feedback walk against float64 references."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.numerics.gptq import PreparedHessian, error_feedback_walk, inverse_cholesky_upper
from edgeq.numerics.hessian import GramAccumulator, add_ridge, damped_hessian


def test_gram_accumulator_against_float64_reference() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 12))
    t = x + 0.1 * rng.normal(size=x.shape)
    a, b, cross = GramAccumulator(), GramAccumulator(), GramAccumulator()
    a.add(x[:20])
    b.add(x[20:])
    a.merge(b)
    cross.add(t[:20], x[:20])
    cross.add(t[20:], x[20:])
    assert a.sum is not None and cross.sum is not None
    np.testing.assert_allclose(a.sum, x.T @ x, rtol=1e-12)
    np.testing.assert_allclose(a.mean(), x.T @ x / 50, rtol=1e-12)
    np.testing.assert_allclose(cross.sum, t.T @ x, rtol=1e-12)
    assert a.rows == 50 and cross.rows == 50


def test_gram_accumulator_sums_float32_products_in_float64() -> None:
    rows = np.random.default_rng(1).normal(size=(30, 5)).astype(np.float32)
    acc = GramAccumulator()
    acc.add(rows)
    acc.add(rows)
    assert acc.sum is not None and acc.sum.dtype == np.float64
    np.testing.assert_array_equal(acc.sum, 2 * (rows.T @ rows).astype(np.float64))


def test_gram_accumulator_batched_per_channel() -> None:
    rows = np.random.default_rng(2).normal(size=(3, 40, 9))
    acc = GramAccumulator()
    acc.add(rows[:, :25])
    acc.add(rows[:, 25:])
    assert acc.sum is not None and acc.sum.shape == (3, 9, 9) and acc.rows == 40
    for c in range(3):
        np.testing.assert_allclose(acc.sum[c], rows[c].T @ rows[c], rtol=1e-12)


def test_gram_accumulator_rejects_a_changed_width_and_is_empty_before_data() -> None:
    acc = GramAccumulator()
    assert acc.mean().shape == (0, 0)
    acc.merge(GramAccumulator())
    assert acc.sum is None and acc.rows == 0
    acc.add(np.ones((2, 3)))
    with pytest.raises(ValueError, match="channel count changed from 3 to 4"):
        acc.add(np.ones((2, 4)))


def test_damping_sets_dead_channels_to_one_then_adds_the_ridge() -> None:
    h = np.diag([4.0, 0.0, 2.0])
    damped, dead = damped_hessian(h, 0.1)
    np.testing.assert_array_equal(dead, [False, True, False])
    np.testing.assert_allclose(np.diag(damped), np.array([4.0, 1.0, 2.0]) + 0.1 * 7.0 / 3)
    np.testing.assert_array_equal(h, np.diag([4.0, 0.0, 2.0]))  # the input is left alone
    np.testing.assert_allclose(add_ridge(np.zeros((2, 2)), 0.5), 0.5 * np.eye(2))
    batched, dead_b = damped_hessian(np.stack([h, np.eye(3)]), 0.1)
    np.testing.assert_allclose(batched[0], damped)
    np.testing.assert_allclose(batched[1], 1.1 * np.eye(3))
    assert not dead_b[1].any()


def test_inverse_cholesky_upper_factors_the_inverse() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16))
    h = x.T @ x + np.eye(16)
    u = inverse_cholesky_upper(h)
    np.testing.assert_allclose(np.tril(u, -1), 0.0, atol=1e-12)  # (the walk reads only the upper part)
    np.testing.assert_allclose(u.T @ u, np.linalg.inv(h), rtol=1e-8, atol=1e-12)
    stacked = inverse_cholesky_upper(np.stack([h, 2 * h]))
    np.testing.assert_allclose(stacked[0], u, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(stacked[1], u / np.sqrt(2), rtol=1e-12, atol=1e-15)


def _obs_reference(w: np.ndarray, h: np.ndarray, step: float) -> np.ndarray:
    """GPTQ the slow way: after each column, the optimal update of the rest from the explicit
    inverse Hessian of the columns still free, then that column eliminated (Frantar et al.)."""
    w = w.copy()
    q = np.zeros_like(w)
    hinv = np.linalg.inv(h)
    for j in range(w.shape[1]):
        q[:, j] = np.round(w[:, j] / step) * step
        err = (w[:, j] - q[:, j]) / hinv[0, 0]
        w[:, j + 1 :] -= np.outer(err, hinv[0, 1:])
        hinv = hinv[1:, 1:] - np.outer(hinv[1:, 0], hinv[0, 1:]) / hinv[0, 0]
    return q


@pytest.mark.parametrize("lazy_batch", [None, 4])
def test_walk_matches_the_explicit_inverse_reference(lazy_batch: int | None) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 12)) @ (rng.normal(size=(12, 12)) + 2 * np.eye(12))
    h = x.T @ x
    w = rng.normal(size=(5, 12))
    step = 0.25

    q = np.zeros_like(w)

    def quantize(j: int, pending: np.ndarray) -> np.ndarray:
        q[:, j] = np.round(pending[:, 0] / step) * step
        return q[:, j]

    prepared = PreparedHessian.build(h, 0.0, act_order=False)
    error_feedback_walk(w.copy(), prepared.u, quantize, lazy_batch)
    np.testing.assert_allclose(q, _obs_reference(w, h, step), atol=1e-9)


def test_walk_with_one_hessian_per_row_equals_separate_walks() -> None:
    rng = np.random.default_rng(5)
    hs = []
    for _ in range(3):
        x = rng.normal(size=(100, 6)) @ (rng.normal(size=(6, 6)) + np.eye(6))
        hs.append(x.T @ x)
    w = rng.normal(size=(3, 6))
    step = 0.3
    for act_order in (False, True):
        prepared = PreparedHessian.build(np.stack(hs), 0.01, act_order)
        out = np.zeros_like(w)

        def batched(j: int, pending: np.ndarray, out: np.ndarray = out) -> np.ndarray:
            out[:, j] = np.round(pending[:, 0] / step) * step
            return out[:, j]

        error_feedback_walk(prepared.to_walk_order(w), prepared.u, batched)
        result = prepared.to_original_order(out)
        for r in range(3):
            single = PreparedHessian.build(hs[r], 0.01, act_order)
            row = np.zeros((1, 6))

            def one(j: int, pending: np.ndarray, row: np.ndarray = row) -> np.ndarray:
                row[:, j] = np.round(pending[:, 0] / step) * step
                return row[:, j]

            error_feedback_walk(single.to_walk_order(w[r : r + 1]), single.u, one)
            np.testing.assert_allclose(result[r], single.to_original_order(row)[0], atol=1e-12)
