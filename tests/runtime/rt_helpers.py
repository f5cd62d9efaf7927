"""Small ONNX models and bundles for the runtime tests (built with onnx here; the runtime never needs onnx)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from edgeq_runtime.manifest import Manifest, TensorSpec
from onnx import TensorProto, helper, numpy_helper

# IR 8 / opset 17: loadable by onnxruntime releases back to 1.14, like the ones on JetPack 5 boards.
IR_VERSION = 8
OPSET = 17

WEIGHT = np.linspace(-1.0, 1.0, 24, dtype=np.float32).reshape(8, 3)
BIAS = np.array([0.5, -0.25, 0.125], dtype=np.float32)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def dense_model(path: Path) -> Path:
    """y = relu(x @ W + b); x float32 [batch, 8] → y [batch, 3]."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"], name="dense/matmul"),
            helper.make_node("Add", ["xw", "b"], ["pre"], name="dense/add"),
            helper.make_node("Relu", ["pre"], ["y"], name="dense/relu"),
        ],
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(WEIGHT, "W"), numpy_helper.from_array(BIAS, "b")],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


def dense_reference(x: np.ndarray) -> np.ndarray:
    return np.maximum(x.astype(np.float64) @ WEIGHT.astype(np.float64) + BIAS, 0.0)


VOCAB = 16
EMBED = np.arange(VOCAB * 4, dtype=np.float32).reshape(VOCAB, 4) / 10.0


def text_model(path: Path) -> Path:
    """Embedding lookup masked by attention_mask: int64 input_ids/attention_mask [batch, seq] → [batch, seq, 4]."""
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["E", "input_ids"], ["emb"], name="embed"),
            helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT, name="mask_cast"),
            helper.make_node("Unsqueeze", ["maskf", "axis"], ["mask3"], name="mask_unsqueeze"),
            helper.make_node("Mul", ["emb", "mask3"], ["hidden"], name="mask_mul"),
        ],
        "text",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq", 4])],
        [numpy_helper.from_array(EMBED, "E"), numpy_helper.from_array(np.array([-1], dtype=np.int64), "axis")],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


def make_bundle(folder: Path, model_builder=dense_model, inputs=None, outputs=None, target=None) -> Path:
    """A bundle folder as the toolkit's exporter writes it: model.onnx + manifest.json with checksums."""
    folder.mkdir(parents=True, exist_ok=True)
    model_builder(folder / "model.onnx")
    manifest = Manifest(
        model="model.onnx",
        files=Manifest.describe_files(folder, ["model.onnx"]),
        inputs=inputs or [TensorSpec("x", "float32", ["batch", 8])],
        outputs=outputs or [TensorSpec("y", "float32", ["batch", 3])],
        precision={"scheme": "float"},
        target=target or {"name": "x86-cpu", "backend": "ort"},
        tool_versions={"onnx": onnx.__version__},
        created="2025-01-01T00:00:00+00:00",
    )
    manifest.write(folder)
    return folder
