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


# The real example models and data sets (examples/models.py, examples/datasets.py). Each fixture
# builds into examples_cache() on first use and reuses fresh files after that, so only tests
# that need an artefact pay for it. The builds are offline and deterministic.


@pytest.fixture(scope="session")
def efficientnet_model(example_cache: Path) -> Path:
    from examples.models import build_efficientnet_lite0

    return build_efficientnet_lite0(example_cache)


@pytest.fixture(scope="session")
def minilm_model(example_cache: Path) -> Path:
    from examples.models import build_minilm

    return build_minilm(example_cache)


@pytest.fixture(scope="session")
def smollm2_model(example_cache: Path) -> Path:
    """smollm2.onnx (KV-cache decoder), with smollm2.tokenizer.json and smollm2.json next to it."""
    from examples.smollm2 import build_smollm2

    return build_smollm2(example_cache)


@pytest.fixture(scope="session")
def image_sets(example_cache: Path) -> tuple[Path, Path]:
    """(calibration, evaluation) npz paths, key "input" float32 [N,3,224,224]."""
    from examples.datasets import build_image_sets

    return build_image_sets(example_cache)


@pytest.fixture(scope="session")
def text_sets(example_cache: Path) -> tuple[Path, Path]:
    """(calibration, evaluation) npz paths, keys input_ids/attention_mask/token_type_ids int64 [N,128]."""
    from examples.datasets import build_text_sets

    return build_text_sets(example_cache)


@pytest.fixture(scope="session")
def builder_decoder(example_cache: Path) -> Path:
    """model.onnx from onnxruntime-genai's builder (tiny random Llama, fp32 CPU), genai_config.json
    beside it and the Hugging Face folder in hf/; skipped when the peers extra is missing."""
    import importlib.util

    for package in ("transformers", "onnxruntime_genai"):  # found, not imported: the builder runs apart
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed (pip install 'edgeq[peers]')")
    from examples.builder_decoder import build_builder_decoder

    return build_builder_decoder(example_cache)
