"""Shared fixtures: the real example models and data sets, built once into a cache folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # so tests can import examples/ and benchmarks/ helpers


def examples_cache() -> Path:
    return Path(os.environ.get("EDGEQ_EXAMPLES_CACHE", ROOT / ".cache" / "examples"))


@pytest.fixture(scope="session")
def example_cache() -> Path:
    path = examples_cache()
    path.mkdir(parents=True, exist_ok=True)
    return path
