"""edgeq-run: the table, --json, one-line errors with exit 2, python -m edgeq_runtime."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import sysfs_boards as boards
from edgeq_runtime.bench import BenchmarkResult
from edgeq_runtime.cli import main
from rt_helpers import dense_model, make_bundle, text_model


def test_bench_bundle_prints_table_and_writes_json(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "bundle")
    boards.orin_nano(tmp_path / "board")
    out = tmp_path / "out" / "result.json"
    code = main(["bench", str(bundle), "--warmup", "2", "--iterations", "15", "--batch", "3", "--idle", "0.05",
                 "--power-root", str(tmp_path / "board"), "--json", str(out), "--top-ops", "3"])
    assert code == 0
    text = capsys.readouterr().out
    assert "model      bundle  [ort: CPUExecutionProvider]" in text
    assert "runs       batch 3, 2 warm-up + 15 measured" in text
    assert "energy     ina3221-hwmon: VDD_IN" in text and "mJ/inference above idle" in text
    assert "window shorter than 10 sensor periods" in text
    assert "top ops" in text
    result = BenchmarkResult.from_json(out.read_text())
    assert result.batch == 3 and result.iterations == 15 and len(result.trace_ms) == 17
    assert result.energy.average_power_w == pytest.approx(5.024 * 0.944)


def test_bench_text_model_with_shape_and_feeds(tmp_path, capsys):
    model = text_model(tmp_path / "text.onnx")
    assert main(["bench", str(model), "--iterations", "3", "--warmup", "0", "--energy", "none", "--shape",
                 "input_ids:2x16", "--shape", "attention_mask:2x16", "--json", str(tmp_path / "a.json"), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert json.loads((tmp_path / "a.json").read_text())["batch"] == 2
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, input_ids=np.zeros((4, 8), np.int64), attention_mask=np.ones((4, 8), np.int64))
    assert main(["bench", str(model), "--iterations", "3", "--energy", "none", "--feeds", str(feeds),
                 "--json", str(tmp_path / "b.json"), "--quiet"]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["batch"] == 4


@pytest.mark.parametrize(
    "args,expected",
    [
        (["bench", "{tmp}/missing"], "{tmp}/missing: no such bundle folder or model file"),
        (["bench", "{model}", "--iterations", "0"], "--iterations must be at least 1, got 0"),
        (["bench", "{model}", "--shape", "x=1,8"], "--shape 'x=1,8' must look like NAME:1x128"),
        (["bench", "{model}", "--shape", "x:1x9"], "--shape x has shape [1, 9] but dim 1 must be 8"),
        (["bench", "{model}", "--feeds", "{tmp}/none.npz"], "{tmp}/none.npz: feeds file does not exist"),
        (["bench", "{model}", "--batch", "0"], "--batch must be at least 1, got 0"),
        (["bench", "{model}", "--backend", "tensorrt"], "TensorRT backend needs the tensorrt Python package"),
    ],
)
def test_user_errors_are_one_line_exit_2(tmp_path, capsys, monkeypatch, args, expected):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    model = dense_model(tmp_path / "dense.onnx")
    argv = [a.format(tmp=tmp_path, model=model) for a in args] + ["--energy", "none"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert expected.format(tmp=tmp_path) in err[0]


def test_feeds_with_wrong_dtype(tmp_path, capsys):
    model = dense_model(tmp_path / "dense.onnx")
    np.savez(tmp_path / "f.npz", x=np.zeros((2, 8), np.float64))
    assert main(["bench", str(model), "--feeds", str(tmp_path / "f.npz"), "--energy", "none"]) == 2
    assert "input 'x' has dtype float64, model expects float32" in capsys.readouterr().err


def test_python_dash_m_and_help(tmp_path):
    help_text = subprocess.run([sys.executable, "-m", "edgeq_runtime", "bench", "--help"], capture_output=True, text=True,
                               check=True).stdout
    for option in ("--warmup", "--iterations", "--duration", "--batch", "--energy", "--idle", "--json", "--top-ops"):
        assert option in help_text
    model = dense_model(tmp_path / "dense.onnx")
    done = subprocess.run([sys.executable, "-m", "edgeq_runtime", "bench", str(model), "--iterations", "5",
                           "--energy", "none", "--top-ops", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "latency ms min" in done.stdout and "top ops" not in done.stdout
    version = subprocess.run([sys.executable, "-m", "edgeq_runtime", "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == "edgeq-runtime 0.1.0"


@pytest.mark.parametrize("argv", [["nosuch"], ["bench"], ["bench", "m.onnx", "--iterations", "abc"], ["bench", "m.onnx", "--no-such"]])
def test_usage_errors_are_one_line_and_exit_2(argv, capsys):
    from edgeq_runtime.cli import main as run_main

    with pytest.raises(SystemExit) as exit_info:
        run_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error: edgeq-run"), err
