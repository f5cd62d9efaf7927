"""Graph passes: each rewrite keeps the function (checked in onnxruntime) and the checker happy."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import numpy_helper
from onnx_ir.passes import common as ir_common

from edgeq.graph.passes.base import constant, ensure_node_names
from edgeq.graph.passes.equalize import CrossLayerEqualization, find_equalization_pairs, pair_weight_ranges
from edgeq.graph.passes.fold_batchnorm import FoldBatchNorm, fold_batchnorm_params
from edgeq.graph.passes.qdq import InsertQdq, WeightQuantization, plan_qdq, unify_shared_scales
from edgeq.graph.passes.recenter import RecenterActivations, find_recenter_sites
from edgeq.graph.passes.smoothquant import SmoothQuant, smoothable_tensors
from edgeq.numerics.int8 import equalize as int8_equalize
from tests.unit.int8_graphs import images, mlp_with_layernorm, mobilenet_block, run


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def test_fold_batchnorm_params_matches_float64_reference():
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    g, beta, mean, var = rng.random(4) + 0.5, rng.standard_normal(4), rng.standard_normal(4), rng.random(4) + 0.1
    fw, fb = fold_batchnorm_params(w.astype(np.float32), b.astype(np.float32), g, beta, mean, var, 1e-5)
    x = rng.standard_normal((3, 3, 3))
    conv = np.einsum("kcij,cij->k", w, x) + b
    expected = (conv - mean) / np.sqrt(var + 1e-5) * g + beta
    np.testing.assert_allclose(np.einsum("kcij,cij->k", fw, x) + fb, expected, rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_removes_bn_and_keeps_outputs():
    model = mobilenet_block()
    x = images(4)
    before = run(model, {"input": x})[0]
    folded = _copy(model)
    assert FoldBatchNorm().apply(folded)
    assert not any(n.op_type == "BatchNormalization" for n in folded.graph.node)
    onnx.checker.check_model(folded, full_check=True)
    np.testing.assert_allclose(run(folded, {"input": x})[0], before, rtol=1e-4, atol=1e-4)
    # The BN output name survives, so later tensor-by-tensor comparisons still match.
    assert any("stem_o" in n.output for n in folded.graph.node)


def test_fold_batchnorm_says_why_it_skips():
    model = mobilenet_block(batchnorm=True)
    for node in model.graph.node:
        if node.name == "stem_bn":
            node.input[0] = "input"  # BN directly on the graph input: nothing to fold into
            node.output[0] = "stem_o"
    p = FoldBatchNorm()
    assert not p.apply(model)
    assert p.skipped and "not produced by a Conv" in p.skipped[0][1]


def test_equalization_pairs_and_exactness_through_relu6():
    model = mobilenet_block(batchnorm=False)
    pairs = find_equalization_pairs(model)
    found = {(p.producer, p.consumer) for p in pairs}
    assert ("expand", "dw") in found and ("dw", "project") in found
    assert ("stem", "expand") not in found  # the stem output also feeds the residual Add
    x = images(8)
    before = run(model, {"input": x})[0]
    # Activation-aware factors from the actual per-channel maxima: exact on this data.
    stats = {}
    probe = _copy(model)
    probe.graph.output.extend([onnx.helper.make_empty_tensor_value_info(p.tensor) for p in pairs])
    values = run(probe, {"input": x})
    for pair, value in zip(pairs, values[1:], strict=True):
        stats[(pair.producer, pair.consumer)] = int8_equalize.activation_scales(
            np.abs(value).max(axis=(0, 2, 3)), alpha=1.0, clip=pair.clip
        )
    equalized = _copy(model)
    cle = CrossLayerEqualization(pairs, stats)
    assert cle.apply(equalized)
    onnx.checker.check_model(equalized, full_check=True)
    np.testing.assert_allclose(run(equalized, {"input": x})[0], before, rtol=1e-4, atol=1e-4)
    # Every channel between expand and dw now reaches the clip (or was dead).
    probe = _copy(equalized)
    assert "e6" not in {o for n in equalized.graph.node for o in n.output}  # rescaled: renamed
    probe.graph.output.append(onnx.helper.make_empty_tensor_value_info("e6_equalized"))
    maxima = np.abs(run(probe, {"input": x})[1]).max(axis=(0, 2, 3))
    assert np.all((maxima > 5.9) | (maxima < 1e-6) | np.isclose(stats[("expand", "dw")], int8_equalize.DEFAULT_MAX_SCALE))


def test_data_free_equalization_balances_weight_ranges():
    model = mobilenet_block(batchnorm=False)
    pair = next(p for p in find_equalization_pairs(model) if p.consumer == "project")
    r1, r2 = pair_weight_ranges(model, pair)
    t = int8_equalize.weight_range_scales(r1, r2)
    np.testing.assert_allclose(r1 * t, r2 / t, rtol=1e-9)


def test_recenter_is_exact_and_makes_padding_explicit():
    model = mobilenet_block(batchnorm=False)
    x = images(4)
    before = run(model, {"input": x})[0]
    shifted = _copy(model)
    sites = find_recenter_sites(shifted, {"expand", "dw", "project", "head", "fc"})
    assert {s.clip for s in sites} == {"relu6_1", "relu6_2"}
    p = RecenterActivations(sites)
    assert p.apply(shifted) and p.pads_added == 1
    onnx.checker.check_model(shifted, full_check=True)
    np.testing.assert_allclose(run(shifted, {"input": x})[0], before, rtol=1e-4, atol=1e-4)
    clip = next(n for n in ir.serde.deserialize_model(shifted).graph if n.name == "relu6_1")
    assert float(constant(clip.inputs[1])) == -3.0 and float(constant(clip.inputs[2])) == 3.0


def test_smoothquant_folds_into_layernorm_and_keeps_outputs():
    model = mlp_with_layernorm()
    x = np.random.default_rng(0).standard_normal((6, 5, 16)).astype(np.float32)
    before = run(model, {"x": x})[0]
    readers = smoothable_tensors(model, {"mm_q", "mm_k", "mm_out"})
    assert set(readers) == {"ln", "act"}
    scales = {t: np.linspace(0.5, 4.0, 16) for t in readers}
    smoothed = _copy(model)
    sq = SmoothQuant(readers, scales)
    assert sq.apply(smoothed)
    assert sq.folded_into_layernorm == ["ln"]
    assert sum(n.op_type == "Mul" for n in smoothed.graph.node) == 1  # "act" comes from a Relu: a Mul is inserted
    onnx.checker.check_model(smoothed, full_check=True)
    np.testing.assert_allclose(run(smoothed, {"x": x})[0], before, rtol=1e-4, atol=1e-4)


def test_qdq_plan_follows_tensorrt_placement():
    model = mobilenet_block(batchnorm=False)
    plan = plan_qdq(model, ["stem", "expand", "dw", "project", "head", "fc"])
    assert ("residual_add", 1) in plan.readers_of("a0")  # residual input of the Add after project
    assert ("expand", 0) in plan.readers_of("a0")
    assert ("maxpool", 0) in plan.readers_of("r")  # pooling feeding a quantized conv stays int8
    assert ("gap", 0) in plan.readers_of("hr")  # through Flatten to the Gemm
    assert "p" not in plan.activations  # never on a compute node's output
    assert plan.weight_axes == {"stem": 0, "expand": 0, "dw": 0, "project": 0, "head": 0, "fc": 0}


def test_concat_inputs_share_one_scale():
    from onnx import TensorProto, helper

    w = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["a"], ["ra"], name="ra"),
            helper.make_node("Relu", ["b"], ["rb"], name="rb"),
            helper.make_node("Concat", ["ra", "rb"], ["cat"], name="cat", axis=1),
            helper.make_node("Conv", ["cat", "w"], ["y"], name="conv"),
        ],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, 4, 4]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    plan = plan_qdq(model, ["conv"])
    assert set(plan.activations) == {"cat", "ra", "rb"}
    assert plan.shared_scale == [["cat", "ra", "rb"]]
    assert unify_shared_scales(plan, {"cat": 2.0, "ra": 1.0, "rb": 3.0}) == {"cat": 3.0, "ra": 3.0, "rb": 3.0}
    weights = {"conv": WeightQuantization(np.ones((4, 4, 1, 1), np.int8), np.full(4, 1 / 127, np.float32), 0)}
    InsertQdq(plan, {"cat": 2.0, "ra": 1.0, "rb": 3.0}, weights).apply(model)
    onnx.checker.check_model(model, full_check=True)
    from edgeq.graph.trt_lint import lint_tensorrt

    assert lint_tensorrt(model) == []


def test_topological_sort_and_node_names():
    model = mobilenet_block(batchnorm=False)
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    model.graph.node[0].name = ""
    graph = ir.serde.deserialize_model(model)
    assert ir_common.TopologicalSortPass()(graph).modified
    assert ensure_node_names(graph.graph) == 1
    model = ir.serde.serialize_model(graph)
    onnx.checker.check_model(model, full_check=True)
    assert len({n.name for n in model.graph.node}) == len(model.graph.node)


def test_pass_manager_chains():
    model = ir.serde.deserialize_model(mobilenet_block())
    result = ir.passes.PassManager([FoldBatchNorm(), FoldBatchNorm(), ir_common.RemoveUnusedOpsetsPass()])(model)
    assert result.modified and result.model is model
    assert not FoldBatchNorm()(result.model).modified


@pytest.mark.parametrize("op", ["Relu", None])
def test_equalization_pairs_with_relu_or_nothing(op):
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((6, 3, 1, 1)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((4, 6, 3, 3)).astype(np.float32), "w2"),
    ]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="c1")]
    mid = "c1"
    if op:
        nodes.append(helper.make_node(op, ["c1"], ["a1"], name="act"))
        mid = "a1"
    nodes.append(helper.make_node("Conv", [mid, "w2"], ["y"], name="c2", pads=[1, 1, 1, 1]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 5])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 5, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    pairs = find_equalization_pairs(model)
    assert len(pairs) == 1 and pairs[0].clip is None
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    before = run(model, {"x": x})[0]
    t = np.linspace(0.5, 3.0, 6)
    assert CrossLayerEqualization(pairs, {("c1", "c2"): t}).apply(model)
    np.testing.assert_allclose(run(model, {"x": x})[0], before, rtol=1e-4, atol=1e-4)


def test_shape_operands_are_never_quantized():
    """A Concat that builds a Reshape's target shape is int64 plumbing, not an activation."""
    from onnx import TensorProto, helper

    inits = [
        numpy_helper.from_array(np.ones((8, 4), np.float32), "w"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
        numpy_helper.from_array(np.array([8], np.int64), "eight"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Concat", ["minus_one", "eight"], ["shape"], name="shape_concat", axis=0),
            helper.make_node("Reshape", ["x", "shape"], ["flat"], name="reshape"),
            helper.make_node("MatMul", ["flat", "w"], ["y"], name="mm"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    plan = plan_qdq(model, ["mm"])
    assert set(plan.activations) == {"flat"}


def test_residual_between_two_convs_quantizes_the_skip_input():
    """Add(project(x), skip) where skip is itself a conv output read elsewhere: the skip gets Q/DQ."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), n) for n in ("w0", "w1", "w2")]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w0"], ["skip"], name="prev_project"),
            helper.make_node("Conv", ["skip", "w1"], ["e"], name="expand"),
            helper.make_node("Conv", ["e", "w2"], ["p"], name="project"),
            helper.make_node("Add", ["p", "skip"], ["y"], name="add"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    plan = plan_qdq(model, ["prev_project", "expand", "project"])
    assert ("add", 1) in plan.readers_of("skip")
    assert "p" not in plan.activations
