"""The checker fallback: a graph onnxruntime runs is saved, checked as far as onnx can, and the
part the checker could not cover is said once."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from kv_graphs import gqa_decoder, kv_feeds
from onnx import TensorProto, helper, numpy_helper

from edgeq.graph.check import check_model_file
from edgeq.graph.io import save_model


def _rms_norm_model(extra_node: onnx.NodeProto | None = None) -> onnx.ModelProto:
    """SimplifiedLayerNormalization in the default domain at opset 22, as onnxruntime-genai writes it."""
    weight = np.linspace(0.5, 1.5, 16, dtype=np.float32)
    nodes = [helper.make_node("SimplifiedLayerNormalization", ["x", "w"], ["n"], name="rms", epsilon=1e-6, axis=-1,
                              stash_type=1),
             helper.make_node("MatMul", ["n", "W"], ["y"], name="proj")]
    inits = [numpy_helper.from_array(weight, "w"),
             numpy_helper.from_array(np.eye(16, 8, dtype=np.float32) * 2, "W")]
    if extra_node is not None:
        nodes.append(extra_node)
    graph = helper.make_graph(nodes, "rms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)], ir_version=10)


def test_checker_alone_refuses_the_op_onnxruntime_runs(tmp_path):
    # The premise: without the fallback this graph could not be saved.
    with pytest.raises(onnx.checker.ValidationError, match="SimplifiedLayerNormalization"):
        onnx.checker.check_model(_rms_norm_model(), full_check=True)


def test_saved_run_and_said_once(tmp_path):
    notes: list[str] = []
    path = save_model(_rms_norm_model(), tmp_path / "rms.onnx", notes=notes)
    save_model(_rms_norm_model(), tmp_path / "again.onnx", notes=notes)  # same fact, same list: once
    assert len(notes) == 1
    assert "SimplifiedLayerNormalization (1 node, default domain opset 22)" in notes[0]
    assert "onnxruntime defines" in notes[0] and "the rest passed it" in notes[0]
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    x64 = x.astype(np.float64)
    want = x64 / np.sqrt((x64**2).mean(-1, keepdims=True) + 1e-6) * np.linspace(0.5, 1.5, 16) @ (np.eye(16, 8) * 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.onnx", "rms.onnx"]  # no side copy left


def test_without_a_notes_list_one_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="edgeq.graph"):
        save_model(_rms_norm_model(), tmp_path / "rms.onnx")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("rms.onnx: onnx.checker has no schema for SimplifiedLayerNormalization")


def test_a_complete_check_says_nothing(tmp_path):
    model = _rms_norm_model()
    model.graph.node[0].CopyFrom(helper.make_node("RMSNormalization", ["x", "w"], ["n"], epsilon=1e-6, axis=-1))
    model.opset_import[0].version = 23
    notes: list[str] = []
    save_model(model, tmp_path / "rms23.onnx", notes=notes)
    assert notes == [] and check_model_file(tmp_path / "rms23.onnx").complete


def test_an_op_nobody_defines_still_fails(tmp_path):
    model = _rms_norm_model(helper.make_node("NoSuchOp", ["y"], ["z"]))
    with pytest.raises(onnx.checker.ValidationError, match="NoSuchOp"):
        save_model(model, tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_the_rest_of_the_graph_is_still_checked(tmp_path):
    # onnx's shape inference reports nothing after the first node it has no schema for (custom
    # domains included), so the broken branch comes first in node order.
    model = _rms_norm_model()
    model.graph.node.insert(0, helper.make_node("MatMul", ["x", "W8"], ["side"], name="side_proj"))
    model.graph.initializer.append(numpy_helper.from_array(np.ones((8, 8), np.float32), "W8"))  # x is [batch, 16]
    model.graph.output.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, ["batch", 8]))
    with pytest.raises(onnx.shape_inference.InferenceError, match="side_proj"):
        save_model(model, tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_value_info_that_shape_inference_contradicts_is_said(tmp_path):
    # The builder annotates a [1] constant as a scalar; onnxruntime ignores it, strict inference does not.
    model = _rms_norm_model()
    one = numpy_helper.from_array(np.array([1], np.int64))
    model.graph.node.insert(0, helper.make_node("Constant", [], ["one"], name="one", value=one))
    model.graph.value_info.append(helper.make_tensor_value_info("one", TensorProto.INT64, []))
    notes: list[str] = []
    save_model(model, tmp_path / "vi.onnx", notes=notes)
    assert len(notes) == 1 and "value_info" in notes[0] and "differ in rank" in notes[0]
    report = check_model_file(tmp_path / "vi.onnx")
    assert report.unchecked == {"SimplifiedLayerNormalization": 1} and report.value_info is not None


def test_builder_style_decoder_saved_with_external_data(tmp_path):
    notes: list[str] = []
    path = save_model(gqa_decoder(), tmp_path / "dec.onnx", external_data=True, notes=notes)
    assert len(notes) == 1 and "SimplifiedLayerNormalization" in notes[0]
    assert "GroupQueryAttention" not in notes[0]  # com.microsoft ops: the checker leaves custom domains alone
    model = onnx.load(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], kv_feeds(model, np.array([[1, 5, 7]], np.int64), head_size=16))[0]
    assert logits.shape == (1, 3, 32) and np.isfinite(logits).all()
