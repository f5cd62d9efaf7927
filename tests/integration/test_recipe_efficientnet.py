"""The shipped EfficientNet-Lite recipe feeds the example model what it was trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgeq.data import load_data
from edgeq.graph.io import load_model

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_recipe_matches_the_model_preprocessing(efficientnet_model: Path, tmp_path: Path, monkeypatch) -> None:
    from skimage import data as photos
    from skimage import io as image_io

    from examples.models import preprocess_image

    chelsea = photos.chelsea()
    image_io.imsave(tmp_path / "chelsea.png", chelsea)
    monkeypatch.setenv("EDGEQ_CALIB_IMAGES", str(tmp_path))
    model = load_model(efficientnet_model)
    batch = next(iter(load_data(ROOT / "calibration" / "efficientnet-lite-224.toml", model, batch_size=1)))
    got = batch["input"]
    want = preprocess_image(chelsea)[None]
    assert got.shape == want.shape == (1, 3, 224, 224) and got.dtype == np.float32
    # Two resamplers, same transform: pixels agree to a few grey levels (1/128 per level).
    assert np.mean(np.abs(got - want)) < 2 / 128
    logits = ort.InferenceSession(str(efficientnet_model), providers=["CPUExecutionProvider"]).run(None, {"input": got})[0]
    assert 281 <= int(logits.argmax()) <= 285  # a cat class
