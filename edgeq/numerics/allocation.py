"""Per-matrix formats under a byte budget: the allocation math, in pure numpy.

Mixed precision is a multiple-choice knapsack. Each quantizable matrix ``i`` has a few options
``j`` (int2, int4, int8, float, ...) with an exact stored size ``c_ij`` in bytes (codes + scales
+ zero points, as the ONNX format writes them) and a predicted error ``e_ij`` (the model's
output error when that matrix alone is stored that way). We pick one option per matrix to
minimise ``sum e_ij`` subject to ``sum c_ij <= budget``. Summing per-matrix errors is the usual
first-order assumption: independent small perturbations add their output mean-squared errors,
because the cross terms average out.

Two solvers, and the better answer wins:

* **exact dynamic programming** over a byte grid. Sizes of real formats share large common
  factors (rows x blocks x bytes), so after subtracting each matrix's smallest option and
  dividing by the greatest common divisor the grid is small (MiniLM at 3 bits: 192-byte
  cells, 11,003 of them) and the DP is the exact optimum. When the grid would be too large,
  each option's extra bytes are rounded *up* to a coarser cell, which keeps every answer
  within the budget, and a greedy fix-up spends the bytes the rounding left over;
* **Lagrangian relaxation** (only when the DP is not exact): for a price ``lam`` per byte each
  matrix independently takes ``argmin e + lam c``; bisection finds the smallest price whose
  choice fits. That choice is optimal for its own size (it lies on the lower convex hull) and
  the dual gives a lower bound on the optimum; the same greedy fix-up spends the leftover
  bytes on the upgrades with the best error reduction per byte.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# The DP's choice table is items x cells bytes: bound it (64 MiB).
MAX_DP_TABLE = 1 << 26


@dataclass(frozen=True)
class Option:
    """One way to store one matrix: its format name, exact bytes and predicted error."""

    format: str
    nbytes: int
    error: float


@dataclass
class Allocation:
    """The chosen option index per matrix, its total bytes and predicted error.

    ``optimal`` is True when the answer is proven optimal (exact DP or a Lagrangian choice that
    uses the whole budget's hull point); ``lower_bound`` is the Lagrangian dual bound on the
    best achievable error, so ``error - lower_bound`` bounds how far from optimal it can be.
    """

    choice: list[int]
    nbytes: int
    error: float
    solver: str
    optimal: bool
    lower_bound: float = 0.0
    notes: list[str] = field(default_factory=list)


def _matrices(options: Sequence[Sequence[Option]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Options padded to ``[items, max_options]``: costs (int64), errors (float64), validity."""
    if not options or any(len(o) == 0 for o in options):
        raise ValueError("every matrix needs at least one option")
    width = max(len(o) for o in options)
    costs = np.zeros((len(options), width), np.int64)
    errors = np.full((len(options), width), np.inf)
    valid = np.zeros((len(options), width), bool)
    for i, item in enumerate(options):
        for j, option in enumerate(item):
            if option.nbytes < 0 or not math.isfinite(option.error):
                raise ValueError(f"option {option} needs non-negative bytes and a finite error")
            costs[i, j] = option.nbytes
            errors[i, j] = option.error
            valid[i, j] = True
    # Padding never wins: infinite error, and the largest cost of its row.
    costs = np.where(valid, costs, costs.max(axis=1, keepdims=True))
    return costs, errors, valid


def minimum_bytes(options: Sequence[Sequence[Option]]) -> int:
    """The smallest total any allocation can reach: every matrix at its smallest option."""
    return int(sum(min(o.nbytes for o in item) for item in options))


def least_error_bytes(options: Sequence[Sequence[Option]]) -> int:
    """Bytes of the allocation that ignores the budget (each matrix at its lowest error)."""
    total = 0
    for item in options:
        best = min(o.error for o in item)
        total += min(o.nbytes for o in item if o.error == best)
    return total


def _totals(costs: np.ndarray, errors: np.ndarray, choice: np.ndarray) -> tuple[int, float]:
    rows = np.arange(len(choice))
    return int(costs[rows, choice].sum()), float(errors[rows, choice].sum())


def greedy_fixup(costs: np.ndarray, errors: np.ndarray, choice: np.ndarray, budget: int) -> np.ndarray:
    """Spend leftover bytes: repeatedly take the upgrade with the most error saved per byte that fits."""
    choice = choice.copy()
    rows = np.arange(len(choice))
    while True:
        spent = int(costs[rows, choice].sum())
        left = budget - spent
        extra = costs - costs[rows, choice][:, None]
        gain = errors[rows, choice][:, None] - errors
        usable = (gain > 0) & (extra <= left) & np.isfinite(errors)
        if not usable.any():
            return choice
        # Free upgrades (no extra bytes) first, then the best gain per byte.
        ratio = np.where(usable, gain / np.maximum(extra, 0.5), -np.inf)
        i, j = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        choice[i] = j


def _lagrangian_choice(costs: np.ndarray, errors: np.ndarray, lam: float) -> np.ndarray:
    """Each matrix's ``argmin e + lam c``; ties go to the smaller option."""
    score = errors + lam * costs
    best = score.min(axis=1, keepdims=True)
    tied = np.isclose(score, best, rtol=1e-12, atol=0.0) & np.isfinite(score)
    return np.where(tied, costs, np.iinfo(np.int64).max).argmin(axis=1)


def lagrangian(options: Sequence[Sequence[Option]], budget: int, iterations: int = 200) -> Allocation:
    """Bisection on the price per byte, then the greedy fix-up; also returns the dual bound."""
    costs, errors, _ = _matrices(options)
    if budget < minimum_bytes(options):
        raise ValueError(f"budget {budget} is below the minimum {minimum_bytes(options)}")
    free = _lagrangian_choice(costs, errors, 0.0)
    nbytes, error = _totals(costs, errors, free)
    if nbytes <= budget:
        return Allocation(free.tolist(), nbytes, error, "lagrangian", True, error)
    finite_err = np.where(np.isfinite(errors), errors, 0.0)
    span = float(finite_err.max() - finite_err.min()) + 1.0
    hi = span  # price at which one byte costs more than any error difference: smallest options win
    while _totals(costs, errors, _lagrangian_choice(costs, errors, hi))[0] > budget:
        hi *= 2.0
    lo = 0.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if _totals(costs, errors, _lagrangian_choice(costs, errors, mid))[0] <= budget:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-15 * hi:
            break
    fitted = _lagrangian_choice(costs, errors, hi)
    hull_bytes, _ = _totals(costs, errors, fitted)
    bound = max(dual_bound(costs, errors, budget, lo), dual_bound(costs, errors, budget, hi))
    improved = greedy_fixup(costs, errors, fitted, budget)
    nbytes, error = _totals(costs, errors, improved)
    optimal = hull_bytes == budget or error <= bound * (1 + 1e-12)
    return Allocation(improved.tolist(), nbytes, error, "lagrangian+greedy", optimal, bound)


def dual_bound(costs: np.ndarray, errors: np.ndarray, budget: int, lam: float) -> float:
    """Lagrangian dual ``sum_i min_j (e_ij + lam c_ij) - lam B``: no allocation within B does better."""
    return float((errors + lam * costs).min(axis=1).sum() - lam * budget)


def exact_dp(options: Sequence[Sequence[Option]], budget: int, max_table: int = MAX_DP_TABLE) -> Allocation:
    """Minimum total error within ``budget`` by DP over a byte grid (exact when the grid is the gcd)."""
    costs, errors, valid = _matrices(options)
    base = costs.min(axis=1, where=valid, initial=np.iinfo(np.int64).max)
    spare = budget - int(base.sum())
    if spare < 0:
        raise ValueError(f"budget {budget} is below the minimum {int(base.sum())}")
    extra = costs - base[:, None]
    # Options that cannot fit even alone are dropped (their extra exceeds the spare bytes).
    usable = valid & (extra <= spare)
    unit = int(np.gcd.reduce(extra[usable])) if (extra[usable] > 0).any() else 1
    unit = max(unit, 1)
    items = len(options)
    cells = spare // unit
    exact = True
    if items * (cells + 1) > max_table:
        # A coarser grid, rounding each option's extra bytes up: answers stay within budget.
        cells = max(1, max_table // items - 1)
        unit = -(-spare // cells)
        exact = False
    weights = np.where(usable, -(-extra // unit), cells + 1)
    capacity = spare // unit
    best = np.zeros(capacity + 1)  # best[x]: least error of the items so far within x cells
    picks = np.zeros((items, capacity + 1), np.uint8)
    for i in range(items):
        new = np.full(capacity + 1, np.inf)
        for option in np.flatnonzero(usable[i]):
            j = int(option)
            w = int(weights[i, j])
            if w > capacity:
                continue
            candidate = np.full(capacity + 1, np.inf)
            candidate[w:] = best[: capacity + 1 - w] + errors[i, j]
            better = candidate < new
            new[better] = candidate[better]
            picks[i, better] = j
        best = new
    choice = np.zeros(items, np.int64)
    x = capacity
    for i in range(items - 1, -1, -1):
        picked = int(picks[i, x])
        choice[i] = picked
        x -= int(weights[i, picked])
    if not exact:
        choice = greedy_fixup(costs, errors, choice, budget)
    nbytes, error = _totals(costs, errors, choice)
    solver = "exact DP" if exact else f"DP on a {unit}-byte grid+greedy"
    return Allocation(choice.tolist(), nbytes, error, solver, exact, error if exact else 0.0)


def allocate(options: Sequence[Sequence[Option]], budget: int, max_table: int = MAX_DP_TABLE) -> Allocation:
    """The least-error choice within ``budget``: exact DP when it fits, else the better of DP-grid and Lagrangian."""
    minimum = minimum_bytes(options)
    if budget < minimum:
        raise ValueError(f"budget {budget} is below the minimum {minimum}")
    dp = exact_dp(options, budget, max_table)
    if dp.optimal:
        return dp
    lag = lagrangian(options, budget)
    best = lag if lag.error < dp.error else dp
    best.lower_bound = lag.lower_bound
    best.optimal = best.optimal or best.error <= lag.lower_bound * (1 + 1e-12)
    return best


def budget_from_avg_bits(avg_bits: float, num_weights: int) -> int:
    """Bytes for ``avg_bits`` per weight element, everything stored (scales and zero points) included."""
    return math.floor(avg_bits * num_weights / 8.0)


def ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank (as Spearman's rho needs)."""
    x = np.asarray(values, np.float64)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    result = np.empty(len(x), np.float64)
    start = 0
    while start < len(x):
        stop = start + 1
        while stop < len(x) and sorted_x[stop] == sorted_x[start]:
            stop += 1
        result[order[start:stop]] = 0.5 * (start + stop - 1) + 1.0
        start = stop
    return result


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks (nan when a side is constant)."""
    ra, rb = ranks(a), ranks(b)
    if len(ra) != len(rb):
        raise ValueError("spearman needs two sequences of the same length")
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / den if den > 0 else float("nan")


class OutputError:
    """Relative squared error of model outputs against the float reference, over real tokens.

    ``sum |y - y_ref|^2 / sum |y_ref|^2`` per output, accumulated over batches and averaged over
    outputs. Where the model has an ``[batch, seq]`` attention mask and an output starts with
    the same two dimensions, padding positions are left out: nothing a user reads depends on them.
    """

    def __init__(self, num_outputs: int) -> None:
        self.num = np.zeros(num_outputs)
        self.den = np.zeros(num_outputs)

    def update(self, reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray], mask: np.ndarray | None) -> None:
        for k, (ref, out) in enumerate(zip(reference, outputs, strict=True)):
            r = np.asarray(ref, np.float64)
            y = np.asarray(out, np.float64)
            if mask is not None and r.ndim >= 2 and r.shape[:2] == mask.shape:
                keep = np.asarray(mask) != 0
                r, y = r[keep], y[keep]
            d = y - r
            self.num[k] += float(np.sum(d * d))
            self.den[k] += float(np.sum(r * r))

    def value(self) -> float:
        ratios = np.where(self.den > 0, self.num / np.where(self.den > 0, self.den, 1.0), 0.0)
        return float(ratios.mean()) if len(ratios) else 0.0


def format_bytes(n: float) -> str:
    """``12345678`` -> ``12.35 MB (12,345,678 B)``: decimal units, as ``--budget 12MB`` reads them."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit} ({int(n):,} B)"
    return f"{int(n):,} B"
