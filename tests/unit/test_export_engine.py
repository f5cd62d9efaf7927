"""Engine build through the tensorrt Python API: a one-line error where it is missing, a real build
where it is installed (a Jetson with JetPack, or a GPU machine with the `trt` extra)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeq.cli import main
from edgeq.errors import MissingDependencyError
from edgeq.export.engine import build_engine
from edgeq.targets import check_plan

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
