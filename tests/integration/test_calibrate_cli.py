"""``edgeq calibrate`` end to end: outputs, --json, one-line errors, nothing written on failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgeq.calibrate
from edgeq.calibrate.table import CalibrationTable
from edgeq.cli import main
from edgeq.graph.io import model_sha256


def _model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
            helper.make_node("Gemm", ["f", "F"], ["y"], name="fc"),
        ],
        "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [
            numpy_helper.from_array(rng.normal(size=(4, 2, 3, 3)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.normal(size=(64, 3)).astype(np.float32), "F"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    model = _model(tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(1).normal(size=(20, 2, 4, 4)).astype(np.float32))
    return model, tmp_path / "d.npz"


def test_table_and_trt_cache(setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, data = setup
    out, cache = tmp_path / "calib.json", tmp_path / "calib.cache"
    code = main(["calibrate", str(model), "--data", str(data), "--method", "minmax", "--batch-size", "6",
                 "-o", str(out), "--trt-cache", str(cache), "--quiet"])
    assert code == 0, capsys.readouterr().err
    table = CalibrationTable.load(out)
    assert table.samples == 20 and table.method == "minmax" and table.model_sha256 == model_sha256(model)
    assert sorted(table.tensors) == ["c", "f", "r", "x", "y"]  # --trt-cache observes every activation
    header, *lines = cache.read_text().splitlines()
    assert header == "TRT-8502-EntropyCalibration2" and len(lines) == 5
    scales = CalibrationTable.read_trt_cache(cache)
    for name, item in table.tensors.items():
        assert item.amax == max(-item.min, item.max)
        assert scales[name] == pytest.approx(item.amax / 127, rel=1e-7)
    assert f"wrote {out} and {cache}" in capsys.readouterr().out


def test_default_tensors_nodes_and_json(setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, data = setup
    assert main(["calibrate", str(model), "--data", str(data), "-o", str(tmp_path / "a.json"), "--quiet"]) == 0
    assert sorted(CalibrationTable.load(tmp_path / "a.json").tensors) == ["f", "x"]  # inputs of Conv and Gemm
    capsys.readouterr()
    assert main(["calibrate", str(model), "--data", str(data), "-o", str(tmp_path / "b.json"), "--nodes", "^fc$",
                 "--method", "percentile", "--percentile", "99", "--samples", "8", "--json", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["_type"] == "edgeq.CalibrationTable" and list(printed["_data"]["tensors"]) == ["f"]
    assert printed["_data"]["samples"] == 8 and printed["_data"]["percentile"] == 99.0
    assert "channel_absmax" not in printed["_data"]["tensors"]["f"]  # no longer written: nothing read it


def test_summary_and_progress(setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, data = setup
    assert main(["calibrate", str(model), "--data", str(data), "-o", str(tmp_path / "a.json")]) == 0
    captured = capsys.readouterr()
    assert "calibration: entropy, 20 samples, 2 tensors" in captured.out
    assert "samples/s" in captured.err and "20/20" in captured.err


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--method", "kl"], "--method: unknown value 'kl'"),
        (["--percentile", "0"], "--percentile"),
        (["--nodes", "("], "--nodes"),
        (["--samples", "0"], "--samples"),
        (["--trt-algorithm", "Best"], "--trt-algorithm"),
    ],
)
def test_option_errors_write_nothing(setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     extra: list[str], fragment: str) -> None:
    model, data = setup
    out = tmp_path / "out" / "calib.json"
    assert main(["calibrate", str(model), "--data", str(data), "-o", str(out), "--quiet", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0]
    assert not out.exists()


def test_bad_data_is_one_line(setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = setup
    bad = np.zeros((5, 2, 4, 4), np.float32)
    bad[3, 1, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=bad)
    np.savez(tmp_path / "wrong.npz", image=bad)
    for data, fragment in ((tmp_path / "nan.npz", "input 'x' sample 3 contains NaN"),
                           (tmp_path / "wrong.npz", "'image' is not an input of the model")):
        assert main(["calibrate", str(model), "--data", str(data), "-o", str(tmp_path / "c.json")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], err
    assert not (tmp_path / "c.json").exists()


def test_interrupt_leaves_existing_outputs_untouched(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, data = setup
    out, cache = tmp_path / "calib.json", tmp_path / "calib.cache"
    out.write_text("previous table")
    seen = []

    def interrupted(*args: object, **kwargs: object) -> int:
        seen.append(True)
        raise KeyboardInterrupt

    monkeypatch.setattr(edgeq.calibrate, "collect", interrupted)
    code = main(["calibrate", str(model), "--data", str(data), "-o", str(out), "--trt-cache", str(cache), "--quiet"])
    assert seen and code == 130
    assert "interrupted" in capsys.readouterr().err
    assert out.read_text() == "previous table" and not cache.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.json", "d.npz", "m.onnx"]  # no temp files left
