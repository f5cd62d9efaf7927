"""ONNX graphs: loading, saving, inspecting and rewriting."""

from edgeq.graph.io import load_model, model_sha256, save_model

__all__ = ["load_model", "model_sha256", "save_model"]
