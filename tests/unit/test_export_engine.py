"""Engine build through the tensorrt Python API: a one-line error where it is missing, a real build
where it is installed (a Jetson with JetPack, or a GPU machine with the `trt` extra).

The build is the runtime's (``edgeq_runtime.engine_build``; its TensorRT calls are tested with a
stand-in in tests/runtime/test_runtime_tensorrt_flow.py). Here: what edgeq hands it for a plan,
with the builder itself replaced by a recorder, so nothing below claims TensorRT built anything.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeq.cli import main
from edgeq.errors import MissingDependencyError, UnsupportedError
from edgeq.export.engine import build_engine, engine_settings
from edgeq.export.manifest import target_section
from edgeq.targets import TRT_WORKSPACE_POOL_MIN, check_plan, load_target, parse_version

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def _model(path: Path) -> Path:
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here: the missing-dependency path cannot run")
def test_without_tensorrt_the_error_names_the_extra_and_jetpack(tmp_path: Path):
    plan = check_plan("jetson-orin-nano")
    with pytest.raises(MissingDependencyError) as info:
        build_engine(_model(tmp_path / "m.onnx"), plan, 1024, tmp_path / "m.engine")
    message = str(info.value)
    assert "edgeq[trt]" in message and "JetPack" in message and "\n" not in message
    assert not (tmp_path / "m.engine").exists()


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here: the missing-dependency path cannot run")
def test_export_build_engine_fails_before_writing_anything(tmp_path: Path, capsys):
    model = _model(tmp_path / "m.onnx")
    code = main(["export", str(model), "--target", "jetson-orin-nano", "--build-engine", "-o", str(tmp_path / "b")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "edgeq[trt]" in err[0]
    assert not (tmp_path / "b").exists()


def test_cpu_target_has_no_engine_to_build(tmp_path: Path, capsys):
    model = _model(tmp_path / "m.onnx")
    assert main(["export", str(model), "--target", "x86-cpu", "--build-engine", "-o", str(tmp_path / "b")]) == 2
    assert "no engine to build" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_TENSORRT, reason="needs the tensorrt package (JetPack on a Jetson, or pip install 'edgeq[trt]' with a GPU)")
def test_real_engine_build(tmp_path: Path):  # pragma: no cover - runs only where TensorRT is
    import tensorrt as trt

    from edgeq.export.bundle import export_bundle

    version = trt.__version__.split(".")[0]
    target = "jetson-orin-nano" if version == "10" else "jetson-xavier-nx"
    bundle = tmp_path / "b"
    result = export_bundle(_model(tmp_path / "m.onnx"), target, output=bundle, build_engine=True, progress=False)
    assert result.engine == "model.engine"
    assert (bundle / "model.engine").stat().st_size > 0 and (bundle / "timing.cache").is_file()


def test_runtime_builder_uses_the_same_tensorrt_fact_as_targets():
    from edgeq_runtime.engine_build import WORKSPACE_POOL_MIN, version_tuple

    assert WORKSPACE_POOL_MIN == TRT_WORKSPACE_POOL_MIN
    assert version_tuple("10.3.0.26") == parse_version("10.3.0")


@pytest.mark.parametrize(("target", "kwargs"), [
    ("jetson-orin-nano", {}),
    ("jetson-orin-nano", {"weights": "int8", "activations": "int8"}),
    ("jetson-xavier-nx", {"weights": "int8", "activations": "int8"}),
    ("jetson-agx-orin", {"weights": "int8", "activations": "int8", "dla": True, "dla_core": 1}),
    ("jetson-agx-orin", {"dla": True}),
])
def test_engine_settings_agree_with_what_the_manifest_tells_the_board(target, kwargs):
    """edgeq's build and the board's build from manifest.json get the same effective settings."""
    profile = load_target(target)
    plan = check_plan(profile, **kwargs)
    assert plan.tensorrt is not None
    ours = engine_settings(plan, profile.memory.workspace_mib, {"x": [1, 8]}, parse_version(plan.tensorrt))
    board = target_section(profile, plan, 17, {"x": [1, 8]})
    assert ours["strongly_typed"] == board["strongly_typed"]
    assert ours["dla_core"] == board["dla_core"] and ours["workspace_mib"] == board["workspace_mib"]
    if not ours["strongly_typed"]:  # precision flags only exist without strong typing
        assert (ours["fp16"], ours["int8"]) == (board["fp16"], board["int8"])
    if plan.dla_core is not None:
        assert board["gpu_fallback"] is True  # the builder always allows GPU fallback on DLA


@pytest.fixture()
def recorded_build(monkeypatch) -> list[dict]:
    """A stand-in ``tensorrt`` module (only a version) and a recorder in place of the runtime builder."""
    calls: list[dict] = []
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))

    def build(trt, model_path, settings, logger=None, calibration_cache=None, implicit_int8=None, timing_cache=None):
        calls.append({"settings": settings, "calibration_cache": calibration_cache, "implicit_int8": implicit_int8,
                      "timing_cache": timing_cache})
        return b"not an engine"

    monkeypatch.setattr("edgeq_runtime.engine_build.build_serialized_engine", build)
    return calls


def test_dla_plan_asks_the_builder_for_its_core_and_implicit_int8(tmp_path: Path, recorded_build):
    plan = check_plan("jetson-agx-orin", "int8", "int8", dla=True, dla_core=1)
    cache = tmp_path / "calibration.cache"
    cache.write_text("TRT-100300-EntropyCalibration2\n")
    built = build_engine(_model(tmp_path / "m.onnx"), plan, 1024, tmp_path / "m.engine", calibration_cache=cache)
    (call,) = recorded_build
    assert call["settings"]["dla_core"] == 1 and call["settings"]["int8"] and not call["settings"]["strongly_typed"]
    assert call["implicit_int8"] is True and call["calibration_cache"] == cache
    assert call["timing_cache"] == tmp_path / "timing.cache" == built.timing_cache
    assert (tmp_path / "m.engine").read_bytes() == b"not an engine" and built.bytes == len(b"not an engine")


def test_explicit_int8_plan_is_strongly_typed_without_calibration(tmp_path: Path, recorded_build):
    plan = check_plan("jetson-orin-nano", "int8", "int8")
    build_engine(_model(tmp_path / "m.onnx"), plan, 1024, tmp_path / "m.engine")
    (call,) = recorded_build
    assert call["settings"]["strongly_typed"] and call["implicit_int8"] is False and call["settings"]["dla_core"] is None


def test_builder_errors_become_one_line_unsupported_errors(tmp_path: Path, monkeypatch):
    from edgeq_runtime.errors import BundleError

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))

    def refuse(*args, **kwargs):
        raise BundleError("m.onnx: TensorRT 10.3.0 cannot parse the ONNX model (\nbad node)")

    monkeypatch.setattr("edgeq_runtime.engine_build.build_serialized_engine", refuse)
    with pytest.raises(UnsupportedError) as info:
        build_engine(_model(tmp_path / "m.onnx"), check_plan("jetson-orin-nano"), 1024, tmp_path / "m.engine")
    assert str(info.value) == "m.onnx: TensorRT 10.3.0 cannot parse the ONNX model ( bad node)"
    assert not (tmp_path / "m.engine").exists()


def test_tensorrt_of_another_major_version_is_refused_before_building(tmp_path: Path, recorded_build, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.2"))
    with pytest.raises(UnsupportedError, match="right --jetpack"):
        build_engine(_model(tmp_path / "m.onnx"), check_plan("jetson-orin-nano"), 1024, tmp_path / "m.engine")
    assert recorded_build == []
