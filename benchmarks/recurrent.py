"""Recurrent models: silero-vad and a CRNN text recogniser, edgeq against onnxruntime's int8.

silero-vad (``silero_vad_16k_sequence.onnx`` from the ``silero-vad`` pip package: six convs,
an LSTM with ``h``/``c`` state) on speech synthesized offline with espeak-ng, mixed with white
noise at 5-30 dB SNR and padded with silence: speech/non-speech decision agreement with fp32
(threshold 0.5, every 32 ms chunk) and mean |probability difference|. A CRNN (3 convs with
BatchNorm, a 2-layer BiLSTM, linear, CTC) trained here for a minute on rendered digit strings:
character error rate of the greedy CTC decode against fp32's own decode (and against the truth).

Variants: edgeq weight-only int8 / int4 (convs per output channel, LSTM W/R blocked along the
input, all through DequantizeLinear), edgeq int8 W8A8 (``--activations int8 --data``; LSTM
weights weight-only int8 under it) in the TensorRT and onnxruntime layouts, onnxruntime
``quantize_static`` (QDQ, per-channel, MinMax) and ``quantize_dynamic`` (DynamicQuantizeLSTM,
ConvInteger). Size is the file against fp32's; latency is onnxruntime CPU, 2 threads, medians
of interleaved rounds (silero: one 32 ms chunk per call carrying the state, as in streaming).

    python benchmarks/recurrent.py [--work out/recurrent] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "unit"))  # the CRNN and the speech helpers the tests use too

from recurrent_models import CHUNK, SR, chunk_rows, synthesize  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Turn left at the second light, then keep going until you see the station.",
    "Twelve small boxes were delivered on Monday morning before nine.",
    "Could you repeat the last number slowly, I did not hear it.",
    "Edge devices run small networks with tight memory and power budgets.",
    "The meeting moved to Thursday because the room was booked.",
    "Seven wise owls sat quietly on the old oak branch at night.",
]
VOICES = ["en-us", "en", "en-us+f3", "en+m3", "en-us+f2", "en+m7"]
LATENCY_ROUNDS, LATENCY_RUNS = 5, 20


def verdict(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'FAIL'}  {text}"


# --- speech -------------------------------------------------------------------------------


def speech_streams(work: Path, count: int, seed: int) -> list[np.ndarray]:
    """``count`` streams: silence, speech (espeak-ng), a pause, more speech, silence; white noise at 5-30 dB SNR."""
    rng = np.random.default_rng(seed)
    streams = []
    for i in range(count):
        parts = [np.zeros(int(SR * rng.uniform(0.3, 1.2)), np.float32)]
        for j in range(2):
            text = SENTENCES[(i * 2 + j + seed) % len(SENTENCES)]
            voice = VOICES[(i + j + seed) % len(VOICES)]
            parts.append(synthesize(text, voice, int(rng.integers(130, 190)), work / "tts.wav") * rng.uniform(0.3, 1.0))
            parts.append(np.zeros(int(SR * rng.uniform(0.4, 1.5)), np.float32))
        stream = np.concatenate(parts)
        speech_rms = float(np.sqrt(np.mean(stream[np.abs(stream) > 1e-3] ** 2)))
        snr_db = rng.uniform(5, 30)
        stream += rng.standard_normal(len(stream)).astype(np.float32) * speech_rms * 10 ** (-snr_db / 20)
        streams.append(stream)
    return streams


def session(path: Path, fold: bool = False):  # type: ignore[no-untyped-def]
    """onnxruntime CPU, 2 threads. ``fold``: session.disable_quant_qdq, so constant DequantizeLinear
    nodes are folded to float at load (onnxruntime keeps them by default, to fuse Q/DQ pairs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if fold:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def vad_probs(path: Path, streams: list[np.ndarray]) -> np.ndarray:
    s = session(path)
    zero = np.zeros((1, 1, 128), np.float32)
    return np.concatenate([s.run(None, {"input": rows, "h": zero, "c": zero})[0].ravel() for rows in streams])


class FeedReader:
    """onnxruntime CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self.rewind()

    def rewind(self) -> None:
        self._iter = iter(self.feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)


def ort_static(model: Path, feeds: list[dict[str, np.ndarray]], out: Path) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_name(out.stem + "_pre.onnx")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        quant_pre_process(str(model), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), FeedReader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    pre.unlink(missing_ok=True)
    return out


def ort_dynamic(model: Path, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        quantize_dynamic(str(model), str(out), weight_type=QuantType.QInt8)
    return out


def interleaved_latency(paths: dict[str, Path], run_once, fold: bool = False) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Median ms of ``run_once(session)`` per model; rounds alternate models so machine load is shared."""
    sessions = {name: session(path, fold) for name, path in paths.items()}
    for s in sessions.values():
        for _ in range(3):
            run_once(s)
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(LATENCY_ROUNDS):
        for name, s in sessions.items():
            for _ in range(LATENCY_RUNS):
                t0 = time.perf_counter()
                run_once(s)
                times[name].append((time.perf_counter() - t0) * 1000)
    return {name: float(np.median(t)) for name, t in times.items()}


def edgeq_variants(model: Path, work: Path, data: Path, prefix: str, block_size: int = 32, extra: dict | None = None) -> dict[str, Path]:  # type: ignore[type-arg]
    from edgeq.quantize import Int8Config, WeightOnlyConfig, quantize_file

    configs = {
        "edgeq weight-only int8": WeightOnlyConfig(weights="int8", block_size=block_size),  # type: ignore[arg-type]
        "edgeq weight-only int4": WeightOnlyConfig(weights="int4", block_size=block_size),  # type: ignore[arg-type]
        "edgeq W8A8 tensorrt": Int8Config(),
        "edgeq W8A8 onnxruntime": Int8Config(layout="onnxruntime"),
        **(extra or {}),
    }
    out = {}
    for label, config in configs.items():
        path = work / f"{prefix}_{label.split(' ', 1)[1].replace(' ', '_')}.onnx"
        t0 = time.perf_counter()
        result = quantize_file(model, config, path, data=data if isinstance(config, Int8Config) else None, progress=False)
        left = [n for n in result.summary.left_in_float if n.op_type in ("Conv", "LSTM", "GRU", "MatMul", "Gemm")]
        print(f"{label}: {time.perf_counter() - t0:.1f} s, {len(result.summary.quantized)} nodes quantized, "
              f"{len(left)} weight nodes left float{' (' + left[0].reason + ')' if left else ''}", flush=True)
        out[label] = path
    return out


def silero(work: Path, quick: bool) -> list[str]:
    import silero_vad

    model = Path(silero_vad.__file__).parent / "data" / "silero_vad_16k_sequence.onnx"
    calib_streams = [chunk_rows(s) for s in speech_streams(work, 2 if quick else 4, seed=100)]
    eval_streams = [chunk_rows(s) for s in speech_streams(work, 3 if quick else 12, seed=0)]
    frames = sum(len(s) for s in eval_streams)
    print(f"\n== silero-vad 16k: {len(eval_streams)} synthesized streams, {frames} chunks of 32 ms ({frames * CHUNK / SR:.0f} s); "
          f"calibration {sum(len(s) for s in calib_streams)} chunks", flush=True)
    data = work / "vad_calib.npz"
    np.savez(data, input=np.concatenate(calib_streams))  # h/c left out: the state is carried chunk to chunk
    from edgeq.quantize import Int8Config

    # The STFT conv reads raw audio, whose range spans silence and speech: one int8 scale cannot hold both.
    extra = {"edgeq W8A8 tensorrt, stft float": Int8Config(exclude="^/stft/")}
    paths = {"fp32": model, **edgeq_variants(model, work, data, "vad", extra=extra)}
    zero = np.zeros((1, 1, 128), np.float32)
    paths["onnxruntime static QDQ"] = ort_static(model, [{"input": s, "h": zero, "c": zero} for s in calib_streams], work / "vad_ort_static.onnx")
    paths["onnxruntime dynamic"] = ort_dynamic(model, work / "vad_ort_dynamic.onnx")
    probs = {name: vad_probs(path, eval_streams) for name, path in paths.items()}
    one = eval_streams[0][:1]
    latency = interleaved_latency(paths, lambda s: s.run(None, {"input": one, "h": zero, "c": zero}))
    folded = interleaved_latency(paths, lambda s: s.run(None, {"input": one, "h": zero, "c": zero}), fold=True)
    ref = probs["fp32"]
    print(f"\n{'model':<32}{'agree %':>10}{'mean |dp|':>11}{'max |dp|':>10}{'size x':>9}{'ms/chunk':>10}{'x fp32':>8}{'folded ms':>11}")
    size0 = model.stat().st_size
    rows = {}
    for name, path in paths.items():
        p = probs[name]
        agree = float(np.mean((p > 0.5) == (ref > 0.5)))
        rows[name] = (agree, float(np.mean(np.abs(p - ref))), path.stat().st_size / size0)
        print(f"{name:<32}{agree * 100:>10.2f}{rows[name][1]:>11.4f}{float(np.max(np.abs(p - ref))):>10.3f}{rows[name][2]:>9.3f}"
              f"{latency[name]:>10.3f}{latency[name] / latency['fp32']:>8.2f}{folded[name]:>11.3f}")
    print(f"fp32 speech fraction: {float(np.mean(ref > 0.5)):.3f}")
    lines = []
    for name in ("edgeq weight-only int8", "edgeq W8A8 onnxruntime", "edgeq W8A8 tensorrt", "edgeq W8A8 tensorrt, stft float"):
        agree, _, size = rows[name]
        lines.append(verdict(agree >= 0.995, f"silero-vad {name}: {agree * 100:.2f} % of chunks agree with fp32 (target >= 99.5 %)"))
        lines.append(verdict(size <= 0.3, f"silero-vad {name}: file {size:.3f}x fp32 (target <= 0.3x)"))
    return lines


# --- CRNN -----------------------------------------------------------------------------------

DIGITS = "0123456789"


def render(texts: list[str], seed: int, width: int = 96, height: int = 32) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    out = np.zeros((len(texts), 1, height, width), np.float32)
    for i, text in enumerate(texts):
        font = ImageFont.load_default(size=int(rng.integers(18, 24)))
        image = Image.new("L", (width, height), 0)
        ImageDraw.Draw(image).text((int(rng.integers(1, 8)), int(rng.integers(1, 7))), text, fill=255, font=font)
        array = np.asarray(image, np.float32) / 255
        out[i, 0] = np.clip(array * rng.uniform(0.6, 1.0) + rng.normal(0, 0.08, array.shape), 0, 1)
    return out


def strings(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list(DIGITS), int(rng.integers(3, 7)))) for _ in range(n)]


def train_crnn(path: Path, steps: int) -> None:
    """Train (or go on training: ``<path>.pt`` keeps the weights and the steps done) and export to ``path``."""
    import torch
    from recurrent_models import crnn_module, export_crnn

    torch.set_num_threads(2)
    module = crnn_module(classes=len(DIGITS) + 1, hidden=128)
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    checkpoint = path.with_suffix(".pt")
    done = 0
    if checkpoint.exists():
        state = torch.load(checkpoint)
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        done = int(state["steps"])
    ctc = torch.nn.CTCLoss(blank=len(DIGITS), zero_infinity=True)
    t0 = time.perf_counter()
    batch = 16
    module.train()
    for step in range(done, steps):
        texts = strings(batch, seed=10_000 + step)
        images = torch.from_numpy(render(texts, seed=step))
        targets = torch.tensor([DIGITS.index(c) for t in texts for c in t])
        log_probs = module(images)
        loss = ctc(log_probs, targets, torch.full((batch,), log_probs.shape[0]), torch.tensor([len(t) for t in texts]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 0:
            print(f"  step {step}: CTC loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    torch.save({"model": module.state_dict(), "optimizer": optimizer.state_dict(), "steps": max(done, steps)}, checkpoint)
    export_crnn(module, path)


def untrained_crnn(path: Path) -> None:
    """Random weights; the linear layer scaled x16 and unbiased, so the argmax follows the features
    frame by frame (at PyTorch's default init every frame decodes to the same class)."""
    import torch
    from recurrent_models import crnn_module, export_crnn

    module = crnn_module(classes=len(DIGITS) + 1, hidden=128)
    with torch.no_grad():
        module.fc.weight.mul_(16.0)
        module.fc.bias.zero_()
    export_crnn(module, path)


def greedy_decode(log_probs: np.ndarray) -> list[str]:
    best = log_probs.argmax(-1).T  # [N, T]
    out = []
    for row in best:
        chars, previous = [], -1
        for k in row:
            if k != previous and k != len(DIGITS):
                chars.append(DIGITS[k])
            previous = k
        out.append("".join(chars))
    return out


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def cer(hyps: list[str], refs: list[str]) -> float:
    return sum(edit_distance(h, r) for h, r in zip(hyps, refs, strict=True)) / max(1, sum(len(r) for r in refs))


def crnn(work: Path, quick: bool, steps: int = 0, untrained: bool = False) -> list[str]:
    model = work / ("crnn_untrained.onnx" if untrained else "crnn_fp32.onnx")
    if untrained:
        print("\n== CRNN: untrained (random weights, logits scaled so frames differ): CER measures fidelity to fp32's own decode only",
              flush=True)
        untrained_crnn(model)
    elif not model.exists() or steps:
        print("\n== CRNN: training on rendered digit strings", flush=True)
        train_crnn(model, steps or (60 if quick else 400))  # ~1 s a step on 2 idle cores
    truth = strings(100 if quick else 400, seed=1)
    images = render(truth, seed=999)
    calib = work / "crnn_calib.npz"
    np.savez(calib, image=render(strings(64, seed=2), seed=998))
    print(f"\n== CRNN (BiLSTM x2, hidden 128): {len(truth)} evaluation images, 64 calibration images", flush=True)
    paths = {"fp32": model, **edgeq_variants(model, work, calib, "crnn", block_size=128)}
    calib_feeds = [{"image": x} for x in np.split(np.load(calib)["image"], 8)]
    paths["onnxruntime static QDQ"] = ort_static(model, calib_feeds, work / "crnn_ort_static.onnx")
    paths["onnxruntime dynamic"] = ort_dynamic(model, work / "crnn_ort_dynamic.onnx")
    decoded, frames = {}, {}
    for name, path in paths.items():
        s = session(path)
        logits = [s.run(None, {"image": images[i : i + 50]})[0] for i in range(0, len(images), 50)]
        decoded[name] = [t for part in logits for t in greedy_decode(part)]
        frames[name] = np.concatenate([part.argmax(-1).T for part in logits])
    one = images[:1]
    latency = interleaved_latency(paths, lambda s: s.run(None, {"image": one}))
    folded = interleaved_latency(paths, lambda s: s.run(None, {"image": one}), fold=True)
    ref = decoded["fp32"]
    size0 = model.stat().st_size
    print(f"\n{'model':<28}{'CER vs fp32':>12}{'CER truth':>11}{'frames %':>10}{'size x':>9}{'ms':>9}{'x fp32':>8}{'folded ms':>11}")
    rows = {}
    for name, path in paths.items():
        rows[name] = (cer(decoded[name], ref), path.stat().st_size / size0, latency[name])
        agree = float(np.mean(frames[name] == frames["fp32"])) * 100
        print(f"{name:<28}{rows[name][0]:>12.4f}{cer(decoded[name], truth):>11.4f}{agree:>10.2f}{rows[name][1]:>9.3f}{latency[name]:>9.3f}"
              f"{latency[name] / latency['fp32']:>8.2f}{folded[name]:>11.3f}")
    ort_cer, _, ort_ms = rows["onnxruntime static QDQ"]
    lines = []
    for name in ("edgeq weight-only int8", "edgeq W8A8 tensorrt", "edgeq W8A8 onnxruntime"):
        error, size, ms = rows[name]
        lines += [
            verdict(size <= 0.27, f"CRNN {name}: file {size:.3f}x fp32 (target <= 0.27x)"),
            verdict(error <= ort_cer, f"CRNN {name}: CER vs fp32 {error:.4f} vs onnxruntime static {ort_cer:.4f}"),
            verdict(ms <= ort_ms * 1.1, f"CRNN {name}: {ms:.3f} ms vs onnxruntime static {ort_ms:.3f} ms x 1.1 (ratio {ms / ort_ms:.2f})"),
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="Keep the models here (default: a temporary folder).")
    parser.add_argument("--quick", action="store_true", help="Fewer streams, images and training steps.")
    parser.add_argument("--only", choices=("silero", "crnn"), default=None, help="Run one of the two models.")
    parser.add_argument("--train-steps", type=int, default=0, help="Train the CRNN to this many steps (resumes from --work).")
    parser.add_argument("--untrained", action="store_true", help="Measure the CRNN with random weights (no training).")
    args = parser.parse_args()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.only == "crnn":
            pass
        elif shutil.which("espeak-ng") is None:
            lines.append("SKIP  silero-vad: espeak-ng is not installed (make espeak-ng)")
        else:
            try:
                lines += silero(work, args.quick)
            except ImportError:
                lines.append("SKIP  silero-vad: the silero-vad package is not installed (pip install silero-vad==6.2.3)")
        if args.only != "silero":
            lines += crnn(work, args.quick, args.train_steps, args.untrained)
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
