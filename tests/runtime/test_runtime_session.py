"""Session: ONNX files and bundles, checksum verification, input checks with one-line messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
from edgeq_runtime.backends.ort import aggregate_node_events
from edgeq_runtime.backends.tensorrt import TENSORRT_MISSING, build_settings, engine_cache_path
from edgeq_runtime.errors import BundleError
from edgeq_runtime.inputs import parse_shape_overrides, resolve_shapes, synthesize_inputs
from edgeq_runtime.manifest import TensorSpec
from edgeq_runtime.session import Session
from rt_helpers import dense_model, dense_reference, make_bundle, text_model


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


def test_onnx_file_runs_and_matches_numpy(tmp_path):
    model = dense_model(tmp_path / "dense.onnx")
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    with Session(model) as session:
        assert session.backend_name == "ort"
        assert session.providers[-1] == "CPUExecutionProvider"
        assert [s.name for s in session.inputs] == ["x"] and session.inputs[0].shape == ["batch", 8]
        out = session.run({"x": x})
    np.testing.assert_allclose(out["y"], dense_reference(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "feeds,expected",
    [
        ({"x": np.zeros((2, 8))}, "input 'x' has dtype float64, model expects float32"),
        ({"x": np.zeros((2, 8), np.float32), "z": np.zeros(1)}, "unknown input 'z' (model inputs: x)"),
        ({}, "missing input 'x' (model inputs: x)"),
        ({"x": np.zeros((8,), np.float32)}, "input 'x' has rank 1 [8], model expects rank 2 [batch, 8]"),
        ({"x": np.zeros((2, 7), np.float32)}, "input 'x' has shape [2, 7] but dim 1 must be 8"),
        ({"x": [[0.0] * 8]}, "input 'x' must be a numpy array, got list"),
    ],
)
def test_bad_inputs_are_rejected_with_one_line(tmp_path, feeds, expected):
    with Session(dense_model(tmp_path / "dense.onnx")) as session, pytest.raises(BundleError) as info:
        session.run(feeds)
    assert expected in _one_line(info)


def test_bundle_runs_and_uses_manifest_specs(tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    x = np.ones((3, 8), np.float32)
    with Session(bundle) as session:
        assert session.manifest is not None and session.model_name == "bundle"
        np.testing.assert_allclose(session.run({"x": x})["y"], dense_reference(x), rtol=1e-5, atol=1e-6)
    with Session(bundle / "manifest.json") as session:  # the manifest path works too
        assert session.model_path == bundle / "model.onnx"


def test_bundle_checksum_mismatch_is_detected_before_loading(tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    other = dense_model(tmp_path / "other.onnx")
    data = bytearray(other.read_bytes())
    data[-1] ^= 0x01  # same size, one bit different
    (bundle / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError) as info:
        Session(bundle)
    message = _one_line(info)
    assert "bundle is damaged: model.onnx: sha256" in message and "does not match manifest.json" in message


def test_bundle_missing_model(tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    (bundle / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx: listed in manifest\.json but missing"):
        Session(bundle)


def test_manifest_that_disagrees_with_the_model_is_refused(tmp_path):
    bundle = make_bundle(tmp_path / "names", inputs=[TensorSpec("pixels", "float32", ["batch", 8])])
    with pytest.raises(BundleError) as info:
        Session(bundle)
    assert "the model's inputs (x) differ from manifest.json (pixels)" in _one_line(info)
    bundle = make_bundle(tmp_path / "dtype", inputs=[TensorSpec("x", "float16", ["batch", 8])])
    with pytest.raises(BundleError) as info:
        Session(bundle)
    assert "input 'x' is float32 rank 2 in the model but float16 rank 2 in manifest.json" in _one_line(info)


def test_bundle_inputs_checked_against_manifest(tmp_path):
    # The manifest may be stricter than the ONNX (a fixed batch): the manifest is the contract.
    bundle = make_bundle(tmp_path / "bundle", inputs=[TensorSpec("x", "float32", [1, 8])])
    with Session(bundle) as session:
        session.run({"x": np.zeros((1, 8), np.float32)})
        with pytest.raises(BundleError, match=r"dim 0 must be 1"):
            session.run({"x": np.zeros((2, 8), np.float32)})


def test_paths_that_are_not_models(tmp_path):
    with pytest.raises(BundleError, match="no such bundle folder or model file"):
        Session(tmp_path / "nope.onnx")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BundleError, match="expected a bundle folder"):
        Session(tmp_path / "notes.txt")
    (tmp_path / "broken.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(BundleError) as info:
        Session(tmp_path / "broken.onnx")
    assert "broken.onnx: onnxruntime cannot load the model" in _one_line(info)
    with pytest.raises(BundleError, match="no bundle manifest here"):
        Session(tmp_path)


def test_tensorrt_backend_without_tensorrt_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)  # make `import tensorrt` fail here
    model = dense_model(tmp_path / "dense.onnx")
    with pytest.raises(BundleError) as info:
        Session(model, backend="tensorrt")
    assert _one_line(info) == TENSORRT_MISSING
    assert TENSORRT_MISSING.startswith("TensorRT backend needs the tensorrt Python package (JetPack ships it)")
    # a bundle exported for TensorRT still runs (with onnxruntime) where TensorRT is absent
    bundle = make_bundle(tmp_path / "trt", target={"name": "jetson-orin-nano", "backend": "tensorrt", "fp16": True})
    with Session(bundle) as session:
        assert session.backend_name == "ort"
    (tmp_path / "model.engine").write_bytes(b"engine")
    with pytest.raises(BundleError, match="TensorRT backend needs the tensorrt Python package"):
        Session(tmp_path / "model.engine")


def test_unknown_backend_and_provider(tmp_path):
    model = dense_model(tmp_path / "dense.onnx")
    with pytest.raises(BundleError, match="--backend 'openvino' is not one of auto, ort, tensorrt"):
        Session(model, backend="openvino")
    with pytest.raises(BundleError) as info:
        Session(model, providers=["NoSuchExecutionProvider"])
    assert "execution provider NoSuchExecutionProvider is not available" in _one_line(info)
    assert "CPUExecutionProvider" in str(info.value)


def test_threads_setting_reaches_the_session(tmp_path):
    with Session(dense_model(tmp_path / "dense.onnx"), threads=1) as session:
        assert session.threads == 1
        session.run({"x": np.zeros((1, 8), np.float32)})
    with pytest.raises(BundleError, match="--threads must be at least 1"):
        Session(tmp_path / "dense.onnx", threads=0)


def test_closed_session_refuses_to_run(tmp_path):
    session = Session(dense_model(tmp_path / "dense.onnx"))
    session.close()
    with pytest.raises(BundleError, match="session is closed"):
        session.run({"x": np.zeros((1, 8), np.float32)})


def test_synthesised_text_inputs_are_valid_ids_and_masks(tmp_path):
    with Session(text_model(tmp_path / "text.onnx")) as session:
        shapes = resolve_shapes(session.inputs, batch=2)
        assert shapes == {"input_ids": [2, 128], "attention_mask": [2, 128]}
        feeds = synthesize_inputs(session.inputs, shapes)
        assert feeds["input_ids"].dtype == np.int64 and (feeds["attention_mask"] == 1).all()
        out = session.run(feeds)["hidden"]
    # ids are all 1 and the mask keeps everything: every position is embedding row 1
    np.testing.assert_allclose(out, np.broadcast_to(np.arange(4, 8, dtype=np.float32) / 10.0, (2, 128, 4)), rtol=1e-6)


def test_shape_overrides():
    specs = [TensorSpec("input_ids", "int64", ["batch", "seq"]), TensorSpec("pixels", "float32", [1, 3, 8, 8])]
    assert parse_shape_overrides(["input_ids:4x32"]) == {"input_ids": [4, 32]}
    shapes = resolve_shapes(specs, overrides=parse_shape_overrides(["input_ids:4x32"]))
    assert shapes == {"input_ids": [4, 32], "pixels": [1, 3, 8, 8]}
    with pytest.raises(BundleError, match="must look like NAME:1x128"):
        parse_shape_overrides(["input_ids=4,32"])
    with pytest.raises(BundleError, match="--shape names unknown input nope"):
        resolve_shapes(specs, overrides={"nope": [1]})
    with pytest.raises(BundleError, match="--shape pixels has shape \\[1, 3, 9, 8\\] but dim 2 must be 8"):
        resolve_shapes(specs, overrides={"pixels": [1, 3, 9, 8]})
    with pytest.raises(BundleError, match="fixed batch dimension of 1; --batch 4 is not possible"):
        resolve_shapes(specs[1:], batch=4)
    position = synthesize_inputs([TensorSpec("position_ids", "int64", ["b", "s"])], {"position_ids": [2, 5]})
    assert position["position_ids"].tolist() == [[0, 1, 2, 3, 4]] * 2


def test_profile_ops_counts_every_profiled_run(tmp_path):
    feeds = {"input_ids": np.ones((2, 16), np.int64), "attention_mask": np.ones((2, 16), np.int64)}
    with Session(text_model(tmp_path / "text.onnx")) as session:
        ops = session.backend.profile_ops(feeds, runs=5)
    assert ops is not None  # these four nodes survive onnxruntime's graph fusions
    assert sorted((op.name, op.op_type) for op in ops) == [
        ("embed", "Gather"), ("mask_cast", "Cast"), ("mask_mul", "Mul"), ("mask_unsqueeze", "Unsqueeze")
    ]
    assert all(op.count == 5 for op in ops)  # the extra first run is dropped as warm-up
    assert abs(sum(op.share for op in ops) - 1.0) < 1e-9
    assert [op.total_ms for op in ops] == sorted((op.total_ms for op in ops), reverse=True)


def test_aggregate_node_events_by_hand():
    events = [
        {"cat": "Session", "name": "model_run", "dur": 999},
        {"cat": "Node", "name": "a_kernel_time", "dur": 500, "args": {"op_name": "Conv"}},  # first run: dropped
        {"cat": "Node", "name": "a_fence_before", "dur": 7, "args": {"op_name": "Conv"}},
        {"cat": "Node", "name": "b_kernel_time", "dur": 100, "args": {"op_name": "Relu"}},  # first run: dropped
        {"cat": "Node", "name": "a_kernel_time", "dur": 300, "args": {"op_name": "Conv"}},
        {"cat": "Node", "name": "b_kernel_time", "dur": 100, "args": {"op_name": "Relu"}},
        {"cat": "Node", "name": "a_kernel_time", "dur": 300, "args": {"op_name": "Conv"}},
    ]
    ops = aggregate_node_events(json.loads(json.dumps(events)))
    assert [(o.name, o.op_type, o.total_ms, o.count) for o in ops] == [("a", "Conv", 0.6, 2), ("b", "Relu", 0.1, 1)]
    assert ops[0].share == pytest.approx(0.6 / 0.7)


def test_engine_cache_key_separates_gpus_versions_models_and_settings(tmp_path):
    settings = build_settings({"fp16": True, "strongly_typed": False}, {"x": [1, 8]})
    base = engine_cache_path(tmp_path, "Orin (nvgpu)", "8.7", "10.3.0", "a" * 64, settings)
    assert base == engine_cache_path(tmp_path, "Orin (nvgpu)", "8.7", "10.3.0", "a" * 64, dict(settings))
    assert base.name.startswith("Orin-nvgpu-sm87-trt10.3.0-") and base.suffix == ".engine"
    others = {
        engine_cache_path(tmp_path, "Xavier", "7.2", "10.3.0", "a" * 64, settings),
        engine_cache_path(tmp_path, "Orin (nvgpu)", "8.7", "8.6.2", "a" * 64, settings),
        engine_cache_path(tmp_path, "Orin (nvgpu)", "8.7", "10.3.0", "b" * 64, settings),
        engine_cache_path(tmp_path, "Orin (nvgpu)", "8.7", "10.3.0", "a" * 64, build_settings({"fp16": False}, {"x": [1, 8]})),
        engine_cache_path(tmp_path, "Orin (nvgpu)", "8.7", "10.3.0", "a" * 64, build_settings({"fp16": True}, {"x": [4, 8]})),
    }
    assert base not in others and len(others) == 5
