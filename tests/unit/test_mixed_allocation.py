"""The mixed-precision knapsack against brute force, and the small numeric helpers beside it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import spearmanr

from edgeq.numerics.allocation import (
    Option,
    OutputError,
    allocate,
    budget_from_avg_bits,
    exact_dp,
    lagrangian,
    least_error_bytes,
    minimum_bytes,
    ranks,
    spearman,
)


def _problem(rng: np.random.Generator, items: int, options: int, scale: int = 1) -> list[list[Option]]:
    """Random matrices with bigger options usually (not always) more accurate, like real formats."""
    problem = []
    for i in range(items):
        sizes = np.sort(rng.integers(1, 1000, options)) * scale
        errors = np.sort(rng.exponential(1.0, options))[::-1] * rng.uniform(0.1, 10)
        if rng.random() < 0.3:
            errors = rng.permutation(errors)  # a dominated option now and then
        problem.append([Option(f"m{i}f{j}", int(s), float(e)) for j, (s, e) in enumerate(zip(sizes, errors, strict=True))])
    return problem


def _brute_force(problem: list[list[Option]], budget: int) -> float:
    best = np.inf
    for combo in itertools.product(*problem):
        if sum(o.nbytes for o in combo) <= budget:
            best = min(best, sum(o.error for o in combo))
    return float(best)


def _check(problem: list[list[Option]], budget: int, nbytes: int, error: float, choice: list[int]) -> None:
    assert nbytes <= budget
    assert nbytes == sum(problem[i][j].nbytes for i, j in enumerate(choice))
    assert error == pytest.approx(sum(problem[i][j].error for i, j in enumerate(choice)), rel=1e-12)


@pytest.mark.parametrize("seed", range(40))
def test_exact_dp_finds_the_brute_force_optimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    problem = _problem(rng, int(rng.integers(2, 7)), int(rng.integers(2, 5)), scale=int(rng.choice([1, 96, 4608])))
    low, high = minimum_bytes(problem), sum(max(o.nbytes for o in item) for item in problem)
    budget = int(rng.integers(low, high + 1))
    result = allocate(problem, budget)
    _check(problem, budget, result.nbytes, result.error, result.choice)
    assert result.optimal and result.solver == "exact DP"
    assert result.error == pytest.approx(_brute_force(problem, budget), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("seed", range(30))
def test_lagrangian_is_feasible_and_its_dual_bound_holds(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    problem = _problem(rng, int(rng.integers(2, 7)), 3)
    low, high = minimum_bytes(problem), sum(max(o.nbytes for o in item) for item in problem)
    budget = int(rng.integers(low, high + 1))
    result = lagrangian(problem, budget)
    _check(problem, budget, result.nbytes, result.error, result.choice)
    optimum = _brute_force(problem, budget)
    assert result.error >= optimum - 1e-12
    assert result.lower_bound <= optimum + 1e-9
    if result.optimal:
        assert result.error == pytest.approx(optimum, rel=1e-12)


def test_lagrangian_choice_is_optimal_for_its_own_size() -> None:
    """Hull points: with no leftover bytes to spend, the relaxation's answer is exactly optimal."""
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(50):
        problem = _problem(rng, 5, 3)
        budget = int(rng.integers(minimum_bytes(problem), sum(max(o.nbytes for o in i) for i in problem) + 1))
        result = lagrangian(problem, budget)
        if result.solver == "lagrangian" or result.nbytes == budget:
            hits += 1
            assert result.error == pytest.approx(_brute_force(problem, result.nbytes), rel=1e-12)
    assert hits > 0


@pytest.mark.parametrize("seed", range(20))
def test_coarse_grid_stays_within_budget_and_near_optimal(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    problem = _problem(rng, 6, 3)
    budget = int(rng.integers(minimum_bytes(problem), sum(max(o.nbytes for o in i) for i in problem) + 1))
    coarse = exact_dp(problem, budget, max_table=6 * 20)  # 20 cells: forced to round sizes up
    _check(problem, budget, coarse.nbytes, coarse.error, coarse.choice)
    optimum = _brute_force(problem, budget)
    assert coarse.error >= optimum - 1e-12
    best = allocate(problem, budget, max_table=6 * 20)
    _check(problem, budget, best.nbytes, best.error, best.choice)
    assert best.error <= coarse.error + 1e-15
    assert best.lower_bound <= optimum + 1e-9


def test_budget_below_the_minimum_is_refused() -> None:
    problem = [[Option("a", 10, 1.0), Option("b", 20, 0.1)], [Option("a", 5, 2.0), Option("b", 9, 0.0)]]
    assert minimum_bytes(problem) == 15
    with pytest.raises(ValueError, match="below the minimum 15"):
        allocate(problem, 14)
    result = allocate(problem, 15)
    assert result.choice == [0, 0] and result.nbytes == 15


def test_a_generous_budget_takes_every_most_accurate_option() -> None:
    problem = [
        [Option("int2", 10, 1.0), Option("int4", 20, 0.1), Option("int8", 40, 0.001)],
        [Option("int2", 10, 5.0), Option("int4", 20, 0.5), Option("int8", 40, 0.5)],  # int8 no better: int4 wins the tie
    ]
    assert least_error_bytes(problem) == 60
    for solver in (allocate, lagrangian):
        result = solver(problem, 10_000)
        assert result.choice == [2, 1]
        assert result.nbytes == 60


def test_sensitive_matrix_gets_the_bytes() -> None:
    """Same sizes, one matrix far more sensitive: the spare bytes go to it."""
    problem = [[Option("int2", 10, 0.01), Option("int4", 20, 0.001)] for _ in range(4)]
    problem[2] = [Option("int2", 10, 3.0), Option("int4", 20, 0.2)]
    result = allocate(problem, 50)
    assert result.choice == [0, 0, 1, 0]


def test_budget_from_avg_bits_counts_every_stored_byte() -> None:
    assert budget_from_avg_bits(3.0, 1000) == 375
    assert budget_from_avg_bits(4.25, 384 * 384) == 384 * 384 * 4.25 / 8


def test_ranks_and_spearman_match_scipy() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.integers(0, 6, 15).astype(float)  # plenty of ties
        b = a + rng.normal(0, 2, 15)
        assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_output_error_against_a_float64_reference() -> None:
    rng = np.random.default_rng(5)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    acc = OutputError(2)
    num = np.zeros(2)
    den = np.zeros(2)
    for _ in range(3):
        hidden = rng.normal(size=(2, 4, 8)).astype(np.float32)
        pooled = rng.normal(size=(2, 8)).astype(np.float32)
        noisy = [hidden + rng.normal(0, 0.1, hidden.shape).astype(np.float32), pooled * 1.1]
        acc.update([hidden, pooled], noisy, mask)
        keep = mask.astype(bool)
        h64 = hidden.astype(np.float64)[keep]
        num[0] += np.sum((noisy[0].astype(np.float64)[keep] - h64) ** 2)
        den[0] += np.sum(h64**2)
        num[1] += np.sum((noisy[1].astype(np.float64) - pooled) ** 2)
        den[1] += np.sum(pooled.astype(np.float64) ** 2)
    assert acc.value() == pytest.approx(np.mean(num / den), rel=1e-12)
    # Padding positions do not count: garbage there changes nothing.
    clean = OutputError(1)
    table = rng.normal(size=(2, 4, 8))
    broken = table.copy()
    broken[~mask.astype(bool)] = 1e6
    clean.update([table], [broken], mask)
    assert clean.value() == 0.0
