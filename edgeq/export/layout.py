"""The names of the files in a bundle folder: one list the writer, manifest and README agree on."""

from __future__ import annotations

MODEL_NAME = "model.onnx"
CACHE_NAME = "calibration.cache"
BUILD_NAME = "build.sh"
README_NAME = "README.md"
ENGINE_NAME = "model.engine"
