"""FP8 (E4M3) W8A8 and NVFP4 weight-only: codecs against independent decoders, graphs executed.

References: ml_dtypes' float8_e4m3fn / float4_e2m1fn casts (an independent implementation of the
OCP types), onnxruntime's FLOAT8E4M3FN QuantizeLinear/DequantizeLinear CPU kernels, and onnx's
own reference evaluator for the FLOAT4E2M1 DequantizeLinear-23 that onnxruntime 1.32 does not
implement (it reports NOT_IMPLEMENTED), all checked against float64 numpy arithmetic.
"""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgeq.data import load_data
from edgeq.errors import ConfigError, UnsupportedError
from edgeq.export import export_bundle
from edgeq.export.detect import model_formats
from edgeq.graph.formats.nvfp4 import dequantized_copy
from edgeq.graph.trt_lint import tensorrt_violations
from edgeq.numerics.codecs.minifloat import E2M1, E4M3, fp8_quantize, fp8_scale, nvfp4_quantize
from edgeq.quantize import QuantizeInputs, quantize
from edgeq.quantize.config import Fp8Config, NvFp4Config
from edgeq.targets import check_plan

RNG = np.random.default_rng(11)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    """Graph optimizations off, as edgeq's export verification runs: onnxruntime 1.32's extended
    CPU optimizations compute FLOAT8E4M3FN DQ -> MatMul wrongly (measured: outputs off by ~1 on
    the MLP below, where every node run as written matches the float64 reference to 1e-6)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(("codec", "dtype"), [(E4M3, ml_dtypes.float8_e4m3fn), (E2M1, ml_dtypes.float4_e2m1fn)])
def test_every_code_round_trips_and_rounding_matches_ml_dtypes(codec, dtype) -> None:
    codes = np.arange(1 << codec.bits, dtype=np.uint8)
    values = codec.decode(codes)
    finite = ~np.isnan(values) & (values != 0)
    np.testing.assert_array_equal(codec.encode(values[finite]), codes[finite])  # exact round trip
    theirs = codes.view(dtype).astype(np.float64) if codec.bits == 8 else codes.astype(np.uint8).view(dtype).astype(np.float64)
    np.testing.assert_array_equal(np.isnan(values), np.isnan(theirs))
    np.testing.assert_array_equal(values[~np.isnan(values)], theirs[~np.isnan(theirs)])
    x = np.clip(RNG.normal(size=20000) * codec.max / 3, -codec.max, codec.max)
    x[:8] = [codec.max * 2, -codec.max * 3, 0.0, -0.0, 1e-9, 0.75, 2.5, -5.0]  # saturation, ties
    np.testing.assert_array_equal(codec.decode(codec.encode(x)), np.clip(x, -codec.max, codec.max).astype(dtype).astype(np.float64))
    assert codec.max == (448.0 if codec.bits == 8 else 6.0)


def test_fp8_quantize_matches_onnxruntime_quantizelinear() -> None:
    x = (RNG.normal(size=(4, 64)) * 50).astype(np.float32)
    x[0, :3] = [1e5, -1e5, 0.0]  # past 448 * scale: saturates
    scale = np.float32(0.37)
    q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])
    dq = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])
    graph = helper.make_graph([q, dq], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 64])],
                              [numpy_helper.from_array(np.array(scale), "s"), helper.make_tensor("z", TensorProto.FLOAT8E4M3FN, [], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.checker.check_model(model, full_check=True)
    got = _session(model).run(None, {"x": x})[0]
    ours = E4M3.decode(fp8_quantize(x, scale)) * np.float64(scale)
    np.testing.assert_allclose(got, ours, rtol=1e-7, atol=0)
    assert float(fp8_scale(448.0 * 2)) == 2.0


def _nvfp4_dq_chain(q) -> onnx.ModelProto:
    from edgeq.graph.formats.nvfp4 import e2m1_tensor, e4m3_tensor

    k, n = q.codes.shape[1], q.codes.shape[0]
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["bs", "s2"], ["block"]),
         helper.make_node("DequantizeLinear", ["w", "block"], ["y"], axis=0, block_size=16)],
        "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [k, n])],
        [e2m1_tensor(np.ascontiguousarray(q.codes.T), "w"), e4m3_tensor(np.ascontiguousarray(q.block_scales.T), "bs"),
         numpy_helper.from_array(np.array(q.scale2, np.float32), "s2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_nvfp4_two_level_dq_chain_is_what_the_codec_says() -> None:
    w = RNG.normal(size=(24, 64)) * np.linspace(0.01, 3, 64)  # [N, K]: blocks of 16 along K
    w[3, 16:32] = 0.0  # an all-zero block keeps a positive scale and zero codes
    q = nvfp4_quantize(w)
    assert q.codes.shape == (24, 64) and q.block_scales.shape == (24, 4) and np.all(E4M3.decode(q.block_scales) > 0)
    expected = q.dequantize()
    # By hand in float64: E2M1 level x E4M3 block scale x float32 tensor scale.
    by_hand = np.array([[E2M1.magnitudes[c & 7] * (-1 if c & 8 else 1) for c in row] for row in q.codes])
    by_hand *= np.repeat(E4M3.decode(q.block_scales), 16, axis=1) * np.float64(np.float32(q.scale2))
    np.testing.assert_array_equal(expected, by_hand)
    assert np.all(expected[3, 16:32] == 0)
    # onnx's reference evaluator decodes the stored FLOAT4E2M1/FLOAT8E4M3FN chain the same way.
    model = _nvfp4_dq_chain(q)
    np.testing.assert_allclose(ReferenceEvaluator(model).run(None, {})[0], expected.T, rtol=1e-6, atol=1e-7)
    with pytest.raises(Exception, match=r"NOT_IMPLEMENTED|Could not find an implementation"):
        _session(model)  # onnxruntime 1.32 has no FLOAT4E2M1 DequantizeLinear kernel: checked, not assumed
    err = np.linalg.norm(expected - w) / np.linalg.norm(w)
    assert err < 0.12  # E2M1 has 1 mantissa bit: ~10 % relative error on normal weights


def _mlp(opset: int = 17) -> onnx.ModelProto:
    w1 = numpy_helper.from_array((RNG.normal(size=(64, 48)) * 0.1).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((RNG.normal(size=(48, 16)) * 0.1).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_fp8_w8a8_graph_runs_in_onnxruntime_as_the_float64_reference_computes() -> None:
    model = _mlp()
    x = RNG.normal(size=(32, 64)).astype(np.float32)
    result = quantize(model, Fp8Config(), QuantizeInputs(data=load_data({"x": x}, model, batch_size=8), progress=False))
    q = result.model
    onnx.checker.check_model(q, full_check=True)
    assert q.opset_import[0].version >= 19 and not tensorrt_violations(q)
    kinds = {t.name: t.data_type for t in q.graph.initializer}
    assert TensorProto.FLOAT8E4M3FN in kinds.values() and TensorProto.INT8 not in kinds.values()
    got = _session(q).run(None, {"x": x[:4]})[0]
    # float64 reference of the same arithmetic: amax = max |activation| over the data, scale = amax/448.
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    w1, w2 = (numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer)

    def fake(t, s, axis=None):
        return E4M3.decode(fp8_quantize(t, s, axis)) * (np.asarray(s, np.float64) if axis is None else np.asarray(s, np.float64)[None, :])

    s_x = fp8_scale(np.abs(x).max())
    s_w1, s_w2 = fp8_scale(np.abs(w1).max(axis=0)), fp8_scale(np.abs(w2).max(axis=0))
    h = np.maximum(fake(x[:4].astype(np.float64), s_x) @ fake(w1, s_w1, 1), 0)
    relu_all = np.maximum(x.astype(np.float64) @ w1, 0)  # the calibration saw the float model
    s_r = fp8_scale(relu_all.max())
    expected = fake(h, s_r) @ fake(w2, s_w2, 1)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)
    assert np.allclose(sorted(float(v) for k, v in inits.items() if k.endswith("_scale") and v.ndim == 0),
                       sorted([float(s_x), float(s_r)]), rtol=1e-6)


def test_nvfp4_weight_only_graph_passes_the_checker_and_the_reference_evaluator() -> None:
    model = _mlp()
    result = quantize(model, NvFp4Config())
    q = result.model
    onnx.checker.check_model(q, full_check=True)
    assert q.opset_import[0].version == 23 and not tensorrt_violations(q)
    assert [d.name for d in result.summary.quantized] == ["fc1", "fc2"]
    x = RNG.normal(size=(3, 64)).astype(np.float32)
    reference = ReferenceEvaluator(q).run(None, {"x": x})[0]
    w1, w2 = (numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer)
    d1, d2 = nvfp4_quantize(w1.T).dequantize().T, nvfp4_quantize(w2.T).dequantize().T
    expected = np.maximum(x.astype(np.float64) @ d1, 0) @ d2
    np.testing.assert_allclose(reference, expected, rtol=1e-5, atol=1e-6)
    # The same graph with the chains decoded by edgeq's reference runs in onnxruntime.
    np.testing.assert_allclose(_session(dequantized_copy(q)).run(None, {"x": x})[0], expected, rtol=1e-5, atol=1e-6)


def test_plans_allow_fp8_and_nvfp4_on_thor_only_with_the_reason() -> None:
    thor = check_plan("jetson-thor", "fp8", "fp8")
    assert thor.quantization == "explicit" and thor.strongly_typed and thor.stored_weights == "fp8"
    assert check_plan("jetson-thor", "nvfp4").block_size == 16
    with pytest.raises(UnsupportedError, match=r"FP8 tensor cores \(compute capability >= 8.9\).*sm 8.7.*jetson-thor"):
        check_plan("jetson-orin-nano", "fp8", "fp8")
    with pytest.raises(UnsupportedError, match=r"FP4 tensor cores.*Volta GPU is sm 7.2"):
        check_plan("jetson-xavier-nx", "nvfp4")
    with pytest.raises(UnsupportedError, match="not supported on this board"):
        check_plan("x86-cpu", "nvfp4")
    with pytest.raises(ConfigError, match="W8A8 needs --weights fp8"):
        check_plan("jetson-thor", "int8", "fp8")
    with pytest.raises(ConfigError, match="add --activations fp8"):
        check_plan("jetson-thor", "fp8")
    assert check_plan("jetson-thor", "fp4", allow_widen=True).widening is not None  # bitsandbytes FP4 is not NVFP4


def test_thor_bundles_for_fp8_and_nvfp4(tmp_path: Path) -> None:
    path = tmp_path / "mlp.onnx"
    onnx.save(_mlp(), str(path))
    np.savez(tmp_path / "x.npz", x=RNG.normal(size=(16, 64)).astype(np.float32))
    fp8 = export_bundle(path, "jetson-thor", "fp8", "fp8", data=tmp_path / "x.npz", output=tmp_path / "fp8", progress=False)
    assert fp8.lint == "passed" and fp8.verification["executed_by"] == "onnxruntime"
    nv = export_bundle(path, "jetson-thor", "nvfp4", output=tmp_path / "nv", progress=False)
    assert "float64 reference" in nv.verification["executed_by"]
    bundle = onnx.load(str(tmp_path / "nv" / "model.onnx"))
    assert bundle.opset_import[0].version == 23 and any(t.data_type == TensorProto.FLOAT4E2M1 for t in bundle.graph.initializer)
    assert "--stronglyTyped" in (tmp_path / "nv" / "build.sh").read_text()
    assert model_formats(bundle).describe() == "2 nvfp4 DequantizeLinear weights"
    # An NVFP4 model from edgeq quantize exports as it is: the plan is read from its nodes.
    onnx.save(quantize(_mlp(), NvFp4Config()).model, str(tmp_path / "nv.onnx"))
    again = export_bundle(tmp_path / "nv.onnx", "jetson-thor", output=tmp_path / "nv2", progress=False)
    assert again.plan.weights == "nvfp4" and again.plan.quantization == "explicit"
    with pytest.raises(UnsupportedError, match="FP4 tensor cores"):
        export_bundle(tmp_path / "nv.onnx", "jetson-orin-nano", output=tmp_path / "nv3", progress=False)
    with pytest.raises(UnsupportedError, match="FP8 tensor cores"):
        export_bundle(path, "jetson-agx-orin", "fp8", "fp8", data=tmp_path / "x.npz", output=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_the_lint_holds_fp8_and_fp4_to_tensorrt_rules() -> None:
    q = quantize(_mlp(), NvFp4Config()).model
    dq = next(n for n in q.graph.node if n.op_type == "DequantizeLinear" and any(a.name == "block_size" for a in n.attribute))
    next(a for a in dq.attribute if a.name == "block_size").i = 32
    assert "nvfp4-block" in {v.rule for v in tensorrt_violations(q)}
    # An FP4 weight whose block scales are a plain float32 initializer is not the form TensorRT parses.
    q = quantize(_mlp(), NvFp4Config()).model
    dq = next(n for n in q.graph.node if n.op_type == "DequantizeLinear" and any(a.name == "block_size" for a in n.attribute))
    q.graph.initializer.append(numpy_helper.from_array(np.ones((4, 48), np.float32), "plain_scale"))
    dq.input[1] = "plain_scale"
    assert "nvfp4-scale" in {v.rule for v in tensorrt_violations(q)}
    # FP8 Q/DQ: the int8 rules (zero point 0, one scale per activation tensor).
    x = RNG.normal(size=(16, 64)).astype(np.float32)
    model = _mlp()
    q = quantize(model, Fp8Config(), QuantizeInputs(data=load_data({"x": x}, model, batch_size=8), progress=False)).model
    zp = next(t for t in q.graph.initializer if t.name == "x_zero_point")
    zp.CopyFrom(helper.make_tensor("x_zero_point", TensorProto.FLOAT8E4M3FN, [], [1.0]))
    assert "asymmetric-zero-point" in {v.rule for v in tensorrt_violations(q)}
