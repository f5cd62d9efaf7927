"""The opset a bundle is written at follows the TensorRT version asked for, not the board.

TensorRT 8.2's parser (JetPack 4.6) reads up to opset 13: a graph exported at 17 is lowered node
by node against the ONNX schemas (onnxruntime computes the same outputs before and after), or
the export is refused in one line naming the node, its op and the opset it needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeq.errors import UnsupportedError
from edgeq.export import export_bundle
from edgeq.graph.passes.lower_opset import lower_opset
from edgeq.targets.facts import PARSER_MAX_OPSET, parsed_above_ceiling, parser_max_opset

RNG = np.random.default_rng(3)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _model(nodes, inits, opset, x_shape, y_shape) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _conv_bn_model(opset: int = 17) -> onnx.ModelProto:
    """Conv -> BatchNormalization (schema 15 at opset 17) -> ReduceMean(axes input, opset 18 form when 18)
    -> Reshape(allowzero=0): every node changed schema between 13 and 18, none in a way this graph uses."""
    c = 4
    inits = [
        numpy_helper.from_array(RNG.normal(size=(c, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(RNG.random(c).astype(np.float32) + 0.5, "scale"),
        numpy_helper.from_array(RNG.normal(size=c).astype(np.float32), "bias"),
        numpy_helper.from_array(RNG.normal(size=c).astype(np.float32), "mean"),
        numpy_helper.from_array(RNG.random(c).astype(np.float32) + 0.5, "var"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "shape"),
    ]
    reduce_inputs = ["b"]
    reduce_attrs: dict = {"keepdims": 0}
    if opset >= 18:
        inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes"))
        reduce_inputs.append("axes")
    else:
        reduce_attrs["axes"] = [2, 3]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"], name="bn"),
        helper.make_node("ReduceMean", reduce_inputs, ["m"], name="mean_hw", **reduce_attrs),
        helper.make_node("Reshape", ["m", "shape"], ["y"], name="flat", allowzero=0),
    ]
    return _model(nodes, inits, opset, [1, 3, 8, 8], [1, 4])


@pytest.mark.parametrize("opset", [17, 18])
def test_a_graph_lowers_to_13_and_computes_the_same(opset: int) -> None:
    model = _conv_bn_model(opset)
    x = RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)
    before = _run(model, {"x": x})[0]
    report = lower_opset(model, 13)
    assert (report.before, report.after, report.blockers) == (opset, 13, [])
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 13
    np.testing.assert_array_equal(_run(model, {"x": x})[0], before)
    assert "axes" not in {t.name for t in model.graph.initializer}  # ReduceMean's axes input became the attribute


def _layernorm_model() -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.ones(8, np.float32), "g"), numpy_helper.from_array(np.zeros(8, np.float32), "b")]
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], name="ln", axis=-1)]
    return _model(nodes, inits, 17, [2, 8], [2, 8])


def test_an_op_with_no_older_form_is_a_blocker_and_the_graph_keeps_its_opset() -> None:
    model = _layernorm_model()
    report = lower_opset(model, 13)
    assert report.after == 17 and model.opset_import[0].version == 17
    assert [(b.node, b.op_type, b.needs) for b in report.blockers] == [("ln", "LayerNormalization", 17)]
    assert "first exists in opset 17" in report.blockers[0].reason


def test_a_new_attribute_set_away_from_its_default_blocks() -> None:
    shape = numpy_helper.from_array(np.array([2, 8], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="r", allowzero=1)]
    report = lower_opset(_model(nodes, [shape], 17, [2, 8], [2, 8]), 13)
    assert report.after == 14 and report.blockers[0].reason == "attribute allowzero is new in opset 14"


def test_softmax_is_never_relabelled_across_its_change_of_meaning() -> None:
    nodes = [helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=1)]
    report = lower_opset(_model(nodes, [], 17, [2, 3, 4], [2, 3, 4]), 11)
    assert report.after == 13 and "changed meaning in opset 13" in report.blockers[0].reason


def test_parser_opsets_follow_the_operators_md_of_each_release() -> None:
    assert [parser_max_opset(v) for v in [(8, 2, 1), (8, 5, 2), (8, 6, 2), (10, 3, 0), (10, 16, 0)]] == [13, 17, 17, 20, 24]
    assert all(source.startswith("onnx-tensorrt release/") for _, _, source in PARSER_MAX_OPSET)
    assert parsed_above_ceiling("DequantizeLinear", (8, 5, 2)) == 17  # no INT4 blocks before TensorRT 10
    assert parsed_above_ceiling("DequantizeLinear", (10, 3, 0)) == 21
    assert parsed_above_ceiling("DequantizeLinear", (10, 13, 0)) == 23  # FP4 (E2M1) from 10.8
    assert parsed_above_ceiling("MatMul", (10, 3, 0)) == 20


def test_export_for_jetpack_46_writes_opset_13_and_verifies_it(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(_conv_bn_model(17), str(path))
    result = export_bundle(path, "jetson-xavier-nx", jetpack="4.6", output=tmp_path / "b", progress=False)
    bundle = onnx.load(str(tmp_path / "b" / "model.onnx"))
    assert bundle.opset_import[0].version == 13
    assert any("lowered to 13" in n for n in result.notes)
    x = RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(bundle, {"x": x})[0], _run(onnx.load(str(path)), {"x": x})[0], rtol=1e-6)
    # The same board on JetPack 5.1 (TensorRT 8.5 reads 17) keeps the profile's preferred 17.
    export_bundle(path, "jetson-xavier-nx", jetpack="5.1", output=tmp_path / "b51", progress=False)
    assert onnx.load(str(tmp_path / "b51" / "model.onnx")).opset_import[0].version == 17


def test_export_refuses_an_op_the_parser_cannot_read_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "ln.onnx"
    onnx.save(_layernorm_model(), str(path))
    with pytest.raises(UnsupportedError) as info:
        export_bundle(path, "jetson-xavier-nx", jetpack="4.6", output=tmp_path / "b", progress=False)
    message = str(info.value)
    assert "node 'ln' (LayerNormalization) needs opset 17" in message and "TensorRT 8.2" in message
    assert "up to opset 13" in message and "--jetpack 5.1" in message and "\n" not in message
    assert not (tmp_path / "b").exists()
