"""Real recurrent models: a torch-exported CRNN (LSTM/GRU, bi/uni) and silero-vad's shipped ONNX files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from dq_reference import reference_model, run
from recurrent_models import SR, chunk_rows, crnn_onnx, silero_path, synthesize

from edgeq.data import load_data
from edgeq.quantize.api import QuantizeInputs, quantize
from edgeq.quantize.config import Int8Config, WeightOnlyConfig

pytest.importorskip("torch")


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 1, 32, 48)).astype(np.float32)


def _weight_nodes(summary: object) -> dict[str, object]:
    return {n.name: n for n in summary.nodes if n.op_type in ("Conv", "LSTM", "GRU", "MatMul", "Gemm")}  # type: ignore[attr-defined]


@pytest.mark.parametrize(("rnn", "bidirectional"), [("lstm", True), ("gru", True), ("lstm", False)])
def test_crnn_weight_only_int8_compresses_every_weight(tmp_path: Path, rnn: str, bidirectional: bool) -> None:
    source = tmp_path / "crnn.onnx"
    model = crnn_onnx(source, rnn, bidirectional)
    result = quantize(model, WeightOnlyConfig(weights="int8", block_size=128))
    rows = _weight_nodes(result.summary)
    assert len(rows) == 6 and all(r.quantized for r in rows.values())  # type: ignore[attr-defined]
    assert sum(r.op_type == rnn.upper() for r in rows.values()) == 2  # type: ignore[attr-defined]
    out = tmp_path / "int8.onnx"
    onnx.save(result.model, str(out))
    onnx.checker.check_model(str(out), full_check=True)
    ratio = out.stat().st_size / source.stat().st_size
    assert ratio <= 0.27, ratio
    reference, _ = reference_model(result.model)
    images = _images(3)
    got, expected, fp32 = run(result.model, {"image": images})[0], run(reference, {"image": images})[0], run(model, {"image": images})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert (got.argmax(-1) == fp32.argmax(-1)).mean() > 0.95


def test_crnn_int8_w8a8_with_recurrent_weights(tmp_path: Path) -> None:
    model = crnn_onnx(tmp_path / "crnn.onnx")
    data = load_data({"image": _images(16)}, model, batch_size=8)
    result = quantize(model, Int8Config(), QuantizeInputs(data=data, progress=False))
    onnx.checker.check_model(result.model, full_check=True)
    rows = _weight_nodes(result.summary)
    assert all(r.quantized for r in rows.values())  # type: ignore[attr-defined]
    lstm = [r for r in rows.values() if r.op_type == "LSTM"]  # type: ignore[attr-defined]
    assert len(lstm) == 2 and all("weight-only int8" in r.scheme and "activations float" in r.scheme for r in lstm)  # type: ignore[attr-defined]
    images = _images(2, seed=1)
    got, fp32 = run(result.model, {"image": images})[0], run(model, {"image": images})[0]
    assert (got.argmax(-1) == fp32.argmax(-1)).mean() > 0.9


@pytest.mark.parametrize("name", ["silero_vad_16k_op15.onnx", "silero_vad_16k_sequence.onnx"])
def test_silero_vad_weights_in_if_branches(name: str, tmp_path: Path) -> None:
    path = silero_path(name)
    if path is None:
        pytest.skip("silero-vad is not installed (pip install --no-deps silero-vad==6.2.3; make installs it)")
    model = onnx.load(str(path))
    result = quantize(model, WeightOnlyConfig(weights="int8"))
    lstm = [n for n in result.summary.nodes if n.op_type == "LSTM"]
    assert lstm and all(n.quantized for n in lstm)
    if name.endswith("op15.onnx"):  # the LSTM lives in both branches of an If, its weights outside
        assert {n.subgraph for n in lstm} == {"/model/decoder/If_1.then_branch", "/model/decoder/If_1.else_branch"}
        assert all("read through" in n.scheme for n in lstm)
    out = tmp_path / "q.onnx"
    onnx.save(result.model, str(out))
    onnx.checker.check_model(str(out), full_check=True)
    assert out.stat().st_size <= 0.31 * path.stat().st_size
    rng = np.random.default_rng(0)
    if name.endswith("op15.onnx"):
        feeds = {"input": (rng.standard_normal((2, 512)) * 0.05).astype(np.float32), "state": np.zeros((2, 2, 128), np.float32),
                 "sr": np.array(16000, np.int64)}
    else:
        feeds = {"input": (rng.standard_normal((4, 576)) * 0.05).astype(np.float32), "h": np.zeros((1, 1, 128), np.float32),
                 "c": np.zeros((1, 1, 128), np.float32)}
    reference, folded = reference_model(result.model)
    assert folded >= 7
    for a, b in zip(run(result.model, feeds), run(reference, feeds), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_silero_vad_int8_on_synthesized_speech(tmp_path: Path) -> None:
    """Weight-only int8 silero-vad on espeak-ng speech in noise: its speech decisions are fp32's."""
    import shutil

    path = silero_path("silero_vad_16k_sequence.onnx")
    if path is None:
        pytest.skip("silero-vad is not installed (pip install silero-vad==6.2.3; make installs it)")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make espeak-ng)")
    speech = synthesize("Turn left at the second light, then keep going until you see the station.", "en-us", 160, tmp_path / "s.wav")
    rng = np.random.default_rng(0)
    stream = np.concatenate([np.zeros(SR // 2, np.float32), speech * 0.5, np.zeros(SR, np.float32)])
    stream += rng.standard_normal(len(stream)).astype(np.float32) * 0.01
    rows = chunk_rows(stream)
    quantized = quantize(onnx.load(str(path)), WeightOnlyConfig(weights="int8")).model
    zero = np.zeros((1, 1, 128), np.float32)
    fp32 = run(onnx.load(str(path)), {"input": rows, "h": zero, "c": zero})[0].ravel()
    int8 = run(quantized, {"input": rows, "h": zero, "c": zero})[0].ravel()
    assert 0.2 < float(np.mean(fp32 > 0.5)) < 0.9  # speech and silence both present
    assert float(np.mean((fp32 > 0.5) == (int8 > 0.5))) >= 0.98
    assert float(np.mean(np.abs(fp32 - int8))) < 0.02
