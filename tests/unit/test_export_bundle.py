"""export_bundle on small models: what goes in the folder, what the manifest says, what is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from edgeq_runtime.manifest import Manifest, verify_bundle
from onnx import TensorProto, helper, numpy_helper

from edgeq.calibrate.trt_cache import read_cache
from edgeq.cli import main
from edgeq.errors import ConfigError, UnsupportedError
from edgeq.export import export_bundle
from edgeq.export.detect import model_formats
from edgeq.metrics import cosine

RNG = np.random.default_rng(7)
K, H, N = 256, 256, 64


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _mlp(path: Path) -> Path:
    w1 = numpy_helper.from_array(RNG.normal(size=(K, H)).astype(np.float32) * 0.05, "w1")
    w2 = numpy_helper.from_array(RNG.normal(size=(H, N)).astype(np.float32) * 0.05, "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", N])], [w1, w2])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _convnet(path: Path) -> Path:
    w = numpy_helper.from_array(RNG.normal(size=(8, 3, 3, 3)).astype(np.float32) * 0.2, "w")
    b = numpy_helper.from_array(RNG.normal(size=8).astype(np.float32) * 0.1, "b")
    w2 = numpy_helper.from_array(RNG.normal(size=(8, 8, 3, 3)).astype(np.float32) * 0.2, "w2")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
         helper.make_node("Relu", ["c"], ["r"], name="relu1"),
         helper.make_node("Conv", ["r", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
         helper.make_node("GlobalAveragePool", ["c2"], ["y"], name="pool")], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 1, 1])], [w, b, w2])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _images(path: Path) -> Path:
    np.savez(path, x=RNG.normal(size=(16, 3, 16, 16)).astype(np.float32))
    return path


def _weight_only_dq(path: Path, kind: str, negative: bool = False) -> Path:
    """A hand-made weight-only model: MatMul weights behind blocked DequantizeLinear."""
    block = 128
    inits, nodes = [], []
    for name, rows, cols, src in (("w1", K, H, "x"), ("w2", H, N, "r")):
        if kind == "int4":
            codes, dtype, opset = RNG.integers(-7, 8, size=(rows, cols)), ml_dtypes.int4, 21
        else:
            codes, dtype, opset = RNG.integers(-2, 2, size=(rows, cols)), ml_dtypes.int2, 25
        scale = RNG.random((rows // block, cols)).astype(np.float32) * 0.01 + 1e-3
        if negative:
            scale = -scale
        inits += [numpy_helper.from_array(codes.astype(np.int8).astype(dtype), f"{name}_q"),
                  numpy_helper.from_array(scale, f"{name}_s")]
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s"], [f"{name}_d"], axis=0,
                                      block_size=block, name=f"{name}_dq"))
        out = "h" if name == "w1" else "y"
        nodes.append(helper.make_node("MatMul", [src, f"{name}_d"], [out], name=f"{name}_mm"))
        if name == "w1":
            nodes.append(helper.make_node("Relu", ["h"], ["r"], name="relu"))
    graph = helper.make_graph(nodes, "wo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", N])], inits)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)


def _bnb4(path: Path) -> Path:
    block = 64
    inits = [numpy_helper.from_array(RNG.integers(0, 256, size=((N * K + 1) // 2,)).astype(np.uint8), "wb"),
             numpy_helper.from_array(RNG.random((N * K + block - 1) // block).astype(np.float32) * 0.05, "am")]
    node = helper.make_node("MatMulBnb4", ["x", "wb", "am"], ["y"], domain="com.microsoft", K=K, N=N,
                            block_size=block, quant_type=1, name="nf4_mm")
    graph = helper.make_graph([node], "nf4", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", N])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    onnx.save(model, str(path))
    return path


def _ort(model_path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"]).run(None, feeds)


def _manifest(bundle: Path) -> Manifest:
    manifest = Manifest.read(bundle)
    assert verify_bundle(bundle) == []
    return manifest


# -- CPU target -----------------------------------------------------------------------------------


def test_cpu_int4_bundle_matches_the_quantized_model(tmp_path: Path):
    from edgeq.quantize.api import quantize
    from edgeq.quantize.config import WeightOnlyConfig

    model = _mlp(tmp_path / "mlp.onnx")
    bundle = tmp_path / "bundle"
    result = export_bundle(model, "x86-cpu", weights="int4", output=bundle, progress=False)
    assert sorted(p.name for p in bundle.iterdir()) == ["README.md", "manifest.json", "model.onnx"]
    manifest = _manifest(bundle)
    assert manifest.target["backend"] == "ort" and manifest.target["name"] == "x86-cpu"
    assert manifest.precision["onnx_format"] == "matmulnbits" and manifest.precision["block_size"] == 32
    assert [(t.name, t.dtype, t.shape) for t in manifest.inputs] == [("x", "float32", ["batch", K])]
    assert set(manifest.tool_versions) >= {"edgeq", "onnx", "onnxruntime"}
    # Independently: the quantizer's own output on the same input.
    expected = quantize(onnx.load(str(model)), WeightOnlyConfig(weights="int4", block_size=32, onnx_format="matmulnbits"))
    feeds = {"x": RNG.normal(size=(2, K)).astype(np.float32)}
    reference = ort.InferenceSession(expected.model.SerializeToString()).run(None, feeds)[0]
    np.testing.assert_allclose(_ort(bundle / "model.onnx", feeds)[0], reference, rtol=1e-5, atol=1e-5)
    assert result.verification["outputs"]["y"]["cosine"] > 0.9999
    exported = onnx.load(str(bundle / "model.onnx"))
    assert "MatMulNBits" in {n.op_type for n in exported.graph.node}
    # onnxruntime 1.19 (JetPack 5, Python 3.8) reads IR <= 10; opset 21 needs exactly 10.
    assert exported.ir_version == onnx.helper.find_min_ir_version_for(list(exported.opset_import), ignore_unknown=True)
    assert exported.ir_version <= 10


# -- TensorRT targets -------------------------------------------------------------------------------


def test_orin_int8_bundle_is_strongly_typed_qdq(tmp_path: Path):
    model = _convnet(tmp_path / "conv.onnx")
    bundle = tmp_path / "b"
    result = export_bundle(model, "jetson-orin-nano", weights="int8", activations="int8",
                           data=_images(tmp_path / "d.npz"), output=bundle, progress=False)
    assert result.lint == "passed"
    script = bundle / "build.sh"
    assert os.access(script, os.X_OK) and "--stronglyTyped" in script.read_text()
    assert "--int8" not in script.read_text() and not (bundle / "calibration.cache").exists()
    manifest = _manifest(bundle)
    target = manifest.target
    assert target["backend"] == "tensorrt" and target["tensorrt_version"] == "10.3.0" and target["jetpack"] == "6.2"
    assert target["strongly_typed"] and not target["fp16"] and not target["int8"] and target["int8_mode"] is None
    assert target["quantization"] == "strongly_typed"
    assert target["workspace_mib"] == 1024 and target["dla_core"] is None
    assert {f.path for f in manifest.files} == {"model.onnx", "build.sh", "README.md"}
    exported = onnx.load(str(bundle / "model.onnx"))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in exported.graph.node}
    assert exported.ir_version <= 10
    readme = (bundle / "README.md").read_text()
    assert "JetPack 6.2" in readme and "./build.sh" in readme


def test_tensorrt8_board_gets_int8_flags(tmp_path: Path):
    model = _convnet(tmp_path / "conv.onnx")
    bundle = tmp_path / "b"
    export_bundle(model, "jetson-xavier-nx", weights="int8", activations="int8",
                  data=_images(tmp_path / "d.npz"), output=bundle, progress=False)
    script = (bundle / "build.sh").read_text()
    assert "--fp16" in script and "--int8" in script and "--stronglyTyped" not in script
    target = _manifest(bundle).target
    assert target["fp16"] and target["int8"] and not target["strongly_typed"]
    # The INT8 flag is for the Q/DQ network: the runtime must not ask for a calibration cache.
    assert target["int8_mode"] == "explicit" and target["calibration_cache"] is None
    assert target["quantization"] == "explicit"
    from edgeq_runtime.engine_build import build_settings

    assert build_settings(target, {})["int8_mode"] == "explicit"
    # Float parts are not rewritten for a weakly typed build: --fp16 does that on the board.
    exported = onnx.load(str(bundle / "model.onnx"))
    assert all(t.data_type != TensorProto.FLOAT16 for t in exported.graph.initializer)


def test_int4_weight_only_model_exports_in_fp16_for_orin(tmp_path: Path):
    model = _weight_only_dq(tmp_path / "wo.onnx", "int4")
    bundle = tmp_path / "b"
    result = export_bundle(model, "jetson-orin-nano", output=bundle, progress=False)
    assert result.plan.weights == "int4" and result.plan.block_size == 128 and result.lint == "passed"
    assert result.fp16 is not None and "fp16: " in result.fp16
    exported = onnx.load(str(bundle / "model.onnx"))
    assert {v.type.tensor_type.elem_type for v in [*exported.graph.input, *exported.graph.output]} == {TensorProto.FLOAT}
    scales = [t for t in exported.graph.initializer if t.name.endswith("_s")]
    assert scales and all(t.data_type == TensorProto.FLOAT16 for t in scales)
    feeds = {"x": RNG.normal(size=(1, K)).astype(np.float32)}
    out, ref = _ort(bundle / "model.onnx", feeds)[0], _ort(model, feeds)[0]
    assert cosine(ref.astype(np.float64), out.astype(np.float64)) > 0.999
    assert "--minShapes=x:1x256" in (bundle / "build.sh").read_text()


def test_negative_scales_fail_the_tensorrt_lint(tmp_path: Path):
    model = _weight_only_dq(tmp_path / "neg.onnx", "int4", negative=True)
    with pytest.raises(UnsupportedError, match="invalid-scale"):
        export_bundle(model, "jetson-orin-nano", output=tmp_path / "b", progress=False)
    assert not (tmp_path / "b").exists()


def test_int2_needs_allow_widen_and_then_becomes_int4(tmp_path: Path):
    model = _weight_only_dq(tmp_path / "int2.onnx", "int2")
    assert model_formats(onnx.load(str(model))).weights() == "int2"
    with pytest.raises(UnsupportedError, match="--allow-widen"):
        export_bundle(model, "jetson-orin-nano", output=tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()
    bundle = tmp_path / "b"
    result = export_bundle(model, "jetson-orin-nano", allow_widen=True, output=bundle, progress=False)
    assert result.widening is not None and result.widening["containers"] == ["int4"]
    assert result.widening["weight_bytes_after"] > result.widening["weight_bytes_before"]
    exported = onnx.load(str(bundle / "model.onnx"))
    assert {t.data_type for t in exported.graph.initializer} >= {TensorProto.INT4}
    assert TensorProto.INT2 not in {t.data_type for t in exported.graph.initializer}
    assert [o.version for o in exported.opset_import if o.domain == ""] == [21]
    precision = _manifest(bundle).precision
    assert precision["widening"]["text"].startswith("widened 2 weights (int2 DequantizeLinear) to int4")
    assert "memory of int4" in " ".join(precision["notes"])
    assert "widening:" in result.format_text()


def test_nf4_widens_to_fp16_for_tensorrt(tmp_path: Path):
    model = _bnb4(tmp_path / "nf4.onnx")
    with pytest.raises(UnsupportedError, match="TensorRT has no nf4"):
        export_bundle(model, "jetson-orin-nano", output=tmp_path / "x", progress=False)
    bundle = tmp_path / "b"
    result = export_bundle(model, "jetson-xavier-nx", allow_widen=True, output=bundle, progress=False)
    assert result.plan.widening is not None and result.plan.widening.container == "fp16"
    assert result.widening is not None and result.widening["weight_bytes_after"] == K * N * 2
    exported = onnx.load(str(bundle / "model.onnx"))
    assert all(n.domain in ("", "ai.onnx") for n in exported.graph.node)
    # The same model runs as is on a CPU target.
    cpu = export_bundle(model, "x86-cpu", output=tmp_path / "cpu", progress=False)
    assert cpu.widening is None and cpu.plan.onnx_format == "bnb4"


def test_dla_int8_gets_a_calibration_cache_and_a_float_model(tmp_path: Path):
    model = _convnet(tmp_path / "conv.onnx")
    bundle = tmp_path / "b"
    result = export_bundle(model, "jetson-agx-orin", weights="int8", activations="int8", dla=True, dla_core=1,
                           data=_images(tmp_path / "d.npz"), output=bundle, progress=False)
    assert result.plan.quantization == "implicit"
    version, algorithm, scales = read_cache(bundle / "calibration.cache")
    assert (version, algorithm) == ("100300", "EntropyCalibration2")
    assert {"x", "r"} <= set(scales) and all(s > 0 for s in scales.values())
    script = (bundle / "build.sh").read_text()
    for flag in ("--int8", "--fp16", "--calib=calibration.cache", "--useDLACore=1", "--allowGPUFallback"):
        assert flag in script
    exported = onnx.load(str(bundle / "model.onnx"))
    assert not {"QuantizeLinear", "DequantizeLinear"} & {n.op_type for n in exported.graph.node}
    target = _manifest(bundle).target
    assert target["dla_core"] == 1 and target["int8"] and target["calibration_cache"] == "calibration.cache"
    assert target["int8_mode"] == "implicit" and target["quantization"] == "implicit"


def test_dla_from_a_qdq_model_moves_its_scales_to_the_cache(tmp_path: Path):
    model = _convnet(tmp_path / "conv.onnx")
    qdq = tmp_path / "b_gpu"
    export_bundle(model, "jetson-xavier-nx", weights="int8", activations="int8",
                  data=_images(tmp_path / "d.npz"), output=qdq, progress=False)
    quantized = onnx.load(str(qdq / "model.onnx"))
    q_scales = {}
    weights = {t.name for t in quantized.graph.initializer}
    for node in quantized.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in weights:
            scale = next(t for t in quantized.graph.initializer if t.name == node.input[1])
            q_scales[node.input[0]] = float(np.ravel(numpy_helper.to_array(scale))[0])
    bundle = tmp_path / "dla"
    export_bundle(qdq / "model.onnx", "jetson-xavier-nx", dla=True, output=bundle, progress=False)
    _, _, scales = read_cache(bundle / "calibration.cache")
    assert q_scales and set(q_scales) <= set(scales)
    for name, scale in q_scales.items():
        assert scales[name] == pytest.approx(scale, rel=1e-6)


# -- refusals and atomicity -----------------------------------------------------------------------


def test_refusals_name_target_precision_and_alternative(tmp_path: Path):
    model = _mlp(tmp_path / "mlp.onnx")
    with pytest.raises(UnsupportedError) as info:
        export_bundle(model, "jetson-nano", weights="int8", activations="int8", output=tmp_path / "b")
    assert "jetson-nano" in str(info.value) and "int8" in str(info.value) and "fp16" in str(info.value)
    with pytest.raises(UnsupportedError, match="no DLA"):
        export_bundle(model, "jetson-orin-nano", dla=True, output=tmp_path / "b")
    quantized = _weight_only_dq(tmp_path / "q.onnx", "int4")
    with pytest.raises(ConfigError, match="already quantized"):
        export_bundle(quantized, "x86-cpu", weights="int4", output=tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_output_folder_is_replaced_atomically_and_never_clobbers_other_data(tmp_path: Path):
    model = _mlp(tmp_path / "mlp.onnx")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(ConfigError, match="not an edgeq bundle"):
        export_bundle(model, "x86-cpu", output=precious)
    assert (precious / "thesis.tex").read_text() == "do not delete"

    bundle = tmp_path / "b"
    export_bundle(model, "x86-cpu", weights="int4", output=bundle, progress=False)
    before = (bundle / "manifest.json").read_text()
    with pytest.raises(UnsupportedError):  # a refused re-export leaves the old bundle as it was
        export_bundle(model, "jetson-nano", weights="int8", activations="int8", output=bundle)
    assert (bundle / "manifest.json").read_text() == before
    export_bundle(model, "x86-cpu", output=bundle, progress=False)  # a good one replaces it
    assert json.loads((bundle / "manifest.json").read_text())["precision"]["weights"] == "fp32"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- CLI ---------------------------------------------------------------------------------------------


def test_cli_export_and_inspect_catch_a_modified_file(tmp_path: Path, capsys):
    model = _mlp(tmp_path / "mlp.onnx")
    bundle = tmp_path / "b"
    assert main(["export", str(model), "--target", "x86-cpu", "--weights", "int4", "-o", str(bundle), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "target: x86-cpu" in out and "checksums: all files match" in out and "x: float32 [batch, 256]" in out
    with open(bundle / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    assert main(["inspect", str(bundle)]) == 2
    captured = capsys.readouterr()
    assert "model.onnx  " in captured.out and "MISMATCH" in captured.out
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and "model.onnx" in errors[0]


def test_cli_refusal_is_one_line(tmp_path: Path, capsys):
    model = _mlp(tmp_path / "mlp.onnx")
    code = main(["export", str(model), "--target", "jetson-nano", "--weights", "int8", "--activations", "int8",
                 "-o", str(tmp_path / "b")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "jetson-nano" in err[0] and "int8" in err[0]
    assert main(["export", str(model), "--target", "x86-cpu", "--shape", "x:banana", "-o", str(tmp_path / "b")]) == 2
    assert "--shape" in capsys.readouterr().err


def test_cli_targets(capsys, tmp_path: Path):
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    for name in ("jetson-nano", "jetson-orin-nano", "jetson-thor", "x86-cpu", "arm64-cpu"):
        assert name in out
    assert main(["targets", "jetson-orin-nano"]) == 0
    out = capsys.readouterr().out
    assert "not on JetPack 5.1: int4 weight-only" in out and "VDD_IN" in out
    assert main(["targets", "jetson-nano", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["precisions"] == ["fp16"] and data["tensorrt"] == "8.2.1"
    bad = tmp_path / "bad.toml"
    bad.write_text("schema_version = 1\n")
    assert main(["targets", str(bad)]) == 2
    assert "bad.toml" in capsys.readouterr().err
