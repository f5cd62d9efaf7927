"""Choosing the next token from one row of logits: greedy, or temperature / top-k / top-p sampling.

numpy only, in float64, with the caller's ``numpy.random.Generator``, so a seed reproduces a
sampled continuation exactly on any machine with the same logits. ``temperature == 0`` is greedy
(argmax, ties to the lowest id, as ``numpy.argmax`` and the toolkit's reference decode break them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from edgeq_runtime.errors import BundleError


@dataclass(frozen=True)
class SamplingConfig:
    """How tokens are picked; validated on construction (each bad value named as its option)."""

    temperature: float = 0.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0  # 1: no nucleus cut
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and np.isfinite(self.temperature)):
            raise BundleError("--temperature must be 0 (greedy) or a positive number, got " + repr(self.temperature))
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise BundleError("--top-k must be 0 (off) or a positive integer, got " + repr(self.top_k))
        if not 0 < self.top_p <= 1:
            raise BundleError("--top-p must be in (0, 1], got " + repr(self.top_p))
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise BundleError("--seed must be a non-negative integer, got " + repr(self.seed))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class Sampler:
    """Picks token ids from logit rows under one ``SamplingConfig`` with its own random stream."""

    def __init__(self, config: SamplingConfig) -> None:
        self.config = config
        self._rng = np.random.default_rng(config.seed)

    def pick(self, logits: np.ndarray) -> int:
        """The next token for ``logits`` [vocab]."""
        if self.config.greedy:
            return int(np.argmax(logits))
        return int(sample(np.asarray(logits, np.float64), self.config, self._rng))


def filtered_probabilities(logits: np.ndarray, config: SamplingConfig) -> np.ndarray:
    """Softmax of ``logits / temperature`` over the top-k, top-p tokens (zero elsewhere), summing to 1."""
    scaled = np.asarray(logits, np.float64) / config.temperature
    keep = np.isfinite(scaled)
    if config.top_k and config.top_k < scaled.size:
        cut = np.partition(scaled, scaled.size - config.top_k)[scaled.size - config.top_k]
        keep &= scaled >= cut
    scaled = np.where(keep, scaled, -np.inf)
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if config.top_p < 1:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        # the smallest prefix whose mass reaches top_p (the token that crosses it is kept)
        last = int(np.searchsorted(cumulative, config.top_p, side="left"))
        mask = np.zeros_like(probs, dtype=bool)
        mask[order[: last + 1]] = True
        probs = np.where(mask, probs, 0.0)
        probs /= probs.sum()
    return probs


def sample(logits: np.ndarray, config: SamplingConfig, rng: np.random.Generator) -> int:
    """One draw from ``filtered_probabilities`` with ``rng`` (one uniform number per token)."""
    probs = filtered_probabilities(logits, config)
    index = int(np.searchsorted(np.cumsum(probs), rng.random(), side="right"))
    return min(index, int(np.flatnonzero(probs)[-1]))
