"""INT8 W8A8 (TensorRT-style Q/DQ): edgeq against onnxruntime's quantize_static, one run.

EfficientNet-Lite0 on the example image sets: edgeq's int8 model and onnxruntime's best static
QDQ configuration (per-channel weights; best of MinMax / Entropy / Percentile calibration on the
same calibration samples) are compared with fp32 on the evaluation crops: logit SQNR, cosine,
top-1 agreement (all crops and confident ones, fp32 max probability >= 0.5), top-5 overlap,
KL divergence, file size, and onnxruntime CPU latency (batch 1, 2 threads, measured
interleaved so machine load hits every model alike). MiniLM: int8 MatMul Q/DQ with and
without SmoothQuant, mean sentence-embedding cosine vs fp32.

Every line that is a target prints PASS or FAIL with the measured numbers.

    python benchmarks/int8.py [--cache .cache/examples] [--calib-samples 256] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LATENCY_ROUNDS = 7
LATENCY_RUNS_PER_ROUND = 20


class _NpzReader:
    """onnxruntime CalibrationDataReader over the same samples edgeq calibrates on."""

    def __init__(self, arrays: dict[str, np.ndarray], batch: int = 8) -> None:
        self.arrays = arrays
        self.batch = batch
        self.rewind()

    def rewind(self) -> None:
        count = len(next(iter(self.arrays.values())))
        self._iter = iter(
            [{k: v[i : i + self.batch] for k, v in self.arrays.items()} for i in range(0, count, self.batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)


def ort_quantize_static(model: Path, calib: dict[str, np.ndarray], method: str, out: Path, op_types: list[str] | None = None) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_name(out.stem + "_pre.onnx")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        quant_pre_process(str(model), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(out), _NpzReader(calib),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, method),
            op_types_to_quantize=op_types,
        )
    pre.unlink(missing_ok=True)
    return out


def interleaved_latency(paths: dict[str, Path], feeds: dict[str, np.ndarray]) -> dict[str, float]:
    """Median ms per model at batch 1, 2 threads; rounds alternate models so load is shared."""
    import onnxruntime as ort

    sessions = {}
    for name, path in paths.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    one = {k: v[:1] for k, v in feeds.items()}
    times: dict[str, list[float]] = {n: [] for n in paths}
    for session in sessions.values():
        for _ in range(5):
            session.run(None, one)
    for _ in range(LATENCY_ROUNDS):
        for name, session in sessions.items():
            for _ in range(LATENCY_RUNS_PER_ROUND):
                t0 = time.perf_counter()
                session.run(None, one)
                times[name].append((time.perf_counter() - t0) * 1000)
    return {n: float(np.median(t)) for n, t in times.items()}


def verdict(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'FAIL'}  {text}"


def efficientnet(cache: Path, work: Path, calib_samples: int, methods: list[str]) -> list[str]:
    from edgeq.evaluate import compare_models
    from edgeq.quantize import Int8Config, quantize_file

    model = cache / "efficientnet_lite0.onnx"
    calib_npz, eval_npz = cache / "images_calib.npz", cache / "images_eval.npz"
    calib = {"input": np.load(calib_npz)["input"][:calib_samples]}
    print(f"\n== EfficientNet-Lite0: {calib_samples} calibration crops, evaluation on {eval_npz.name}", flush=True)

    t0 = time.perf_counter()
    ours = work / "efficientnet_edgeq_int8.onnx"
    result = quantize_file(model, Int8Config(), ours, data=calib_npz, samples=calib_samples, batch_size=16, progress=False)
    edgeq_seconds = time.perf_counter() - t0
    print(f"edgeq quantize: {edgeq_seconds:.0f} s; {len(result.summary.quantized)} nodes int8", flush=True)
    for note in result.summary.notes[:6]:
        print(f"  note: {note}")

    ort_paths: dict[str, Path] = {}
    ort_seconds: dict[str, float] = {}
    for method in methods:
        t0 = time.perf_counter()
        try:
            ort_paths[method] = ort_quantize_static(model, calib, method, work / f"efficientnet_ort_{method.lower()}.onnx")
        except Exception as exc:  # report and go on with the other methods
            print(f"onnxruntime {method}: failed ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        ort_seconds[method] = time.perf_counter() - t0
        print(f"onnxruntime quantize_static {method}: {ort_seconds[method]:.0f} s", flush=True)

    compared = compare_models(model, [ours, *ort_paths.values()], eval_npz, batch_size=25, latency=False)
    ort_variants = compared.variants[1:]
    best = max(ort_variants, key=lambda v: (v.metrics["top1_agreement"], v.metrics["sqnr_db"]))
    mine = compared.variants[0]
    latency = interleaved_latency({"fp32": model, "edgeq": ours, "ort": Path(best.path)}, calib)

    keys = ["sqnr_db", "cosine", "top1_agreement", "confident_top1_agreement", "top5_overlap", "kl_divergence"]
    header = f"{'model':<34}" + "".join(f"{k:>14}" for k in ["SQNR dB", "cosine", "top1", "top1 p>=.5", "top5", "KL", "MB", "ms p50"])
    print("\n" + header)
    rows = [("edgeq int8 (TensorRT QDQ)", mine)] + [(f"onnxruntime QDQ {m}", v) for m, v in zip(ort_paths, ort_variants, strict=True)]
    for label, v in rows:
        lat = latency["edgeq"] if v is mine else (latency["ort"] if v is best else float("nan"))
        cells = "".join(f"{v.metrics[k]:>14.4f}" for k in keys)
        print(f"{label:<34}{cells}{v.file_bytes / 1e6:>14.2f}{lat:>14.2f}")
    print(f"{'fp32':<34}{'':>84}{compared.reference_file_bytes / 1e6:>14.2f}{latency['fp32']:>14.2f}")
    print(f"confident samples: {int(mine.metrics['confident_samples'])} of {compared.samples}")
    print("worst edgeq layers: " + ", ".join(f"{row['tensor']} {row['sqnr_db']:.1f} dB" for row in mine.layers[:5]))

    m, o = mine.metrics, best.metrics
    gap_ort = 1.0 - o["top1_agreement"]
    closed = (m["top1_agreement"] - o["top1_agreement"]) / gap_ort if gap_ort > 0 else float("nan")
    best_name = Path(best.path).stem.rsplit("_", 1)[-1]
    lines = [
        verdict(m["sqnr_db"] > o["sqnr_db"], f"logit SQNR: edgeq {m['sqnr_db']:.2f} dB vs onnxruntime best ({best_name}) {o['sqnr_db']:.2f} dB (+{m['sqnr_db'] - o['sqnr_db']:.2f} dB)"),
        verdict(m["top1_agreement"] > o["top1_agreement"], f"top-1 agreement: edgeq {m['top1_agreement']:.4f} vs onnxruntime {o['top1_agreement']:.4f} ({m['top1_agreement'] - o['top1_agreement']:+.4f})"),
        verdict(closed >= 0.5, f"closes {closed:.2f} of onnxruntime's top-1 gap to fp32 (needs >= 0.50)"),
        verdict(m["top1_agreement"] > 0.93, f"top-1 agreement {m['top1_agreement']:.4f} > 0.93 (lead's target)"),
        verdict(m["sqnr_db"] > 22.0, f"logit SQNR {m['sqnr_db']:.2f} dB > 22 dB (lead's target)"),
        verdict(
            latency["edgeq"] <= latency["ort"] * 1.0,
            f"CPU latency (onnxruntime, batch 1, 2 threads): edgeq {latency['edgeq']:.2f} ms vs onnxruntime int8 {latency['ort']:.2f} ms "
            f"(ratio {latency['edgeq'] / latency['ort']:.3f}; fp32 {latency['fp32']:.2f} ms)",
        ),
    ]
    from edgeq.export import lint_tensorrt

    violations = lint_tensorrt(onnx.load(str(ours)))
    ort_violations = lint_tensorrt(onnx.load(best.path))
    lines.append(verdict(not violations, f"TensorRT lint: edgeq model {len(violations)} violations (onnxruntime's model: {len(ort_violations)})"))
    return lines


def minilm(cache: Path, work: Path, calib_samples: int) -> list[str]:
    from edgeq.evaluate import compare_models
    from edgeq.quantize import Int8Config, quantize_file

    model = cache / "minilm.onnx"
    calib_npz, eval_npz = cache / "text_calib.npz", cache / "text_eval.npz"
    print(f"\n== MiniLM: int8 MatMul Q/DQ, {calib_samples} calibration sentences, evaluation on {eval_npz.name}", flush=True)
    paths = {}
    for label, alpha in (("plain", None), ("smoothquant 0.5", 0.5), ("smoothquant 0.8", 0.8)):
        out = work / f"minilm_int8_{label.replace(' ', '_')}.onnx"
        config = Int8Config(op_types=("MatMul", "Gemm"), smoothquant_alpha=alpha)
        t0 = time.perf_counter()
        quantize_file(model, config, out, data=calib_npz, samples=calib_samples, batch_size=16, progress=False)
        print(f"edgeq quantize ({label}): {time.perf_counter() - t0:.0f} s", flush=True)
        paths[label] = out
    compared = compare_models(model, list(paths.values()), eval_npz, batch_size=16, latency=False, layers=False)
    print(f"\n{'configuration':<20}{'emb. cosine':>14}{'p5':>10}{'SQNR dB':>10}")
    for label, v in zip(paths, compared.variants, strict=True):
        print(f"{label:<20}{v.metrics['embedding_cosine_mean']:>14.5f}{v.metrics['embedding_cosine_p5']:>10.5f}{v.metrics['sqnr_db']:>10.2f}")
    plain = compared.variants[0].metrics["embedding_cosine_mean"]
    best_sq = max(v.metrics["embedding_cosine_mean"] for v in compared.variants[1:])
    return [
        f"INFO  MiniLM int8 MatMul Q/DQ mean embedding cosine vs fp32: {plain:.5f}",
        f"INFO  SmoothQuant {'helps' if best_sq > plain else 'does not help'}: best {best_sq:.5f} vs plain {plain:.5f} ({best_sq - plain:+.5f})",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "examples")
    parser.add_argument("--calib-samples", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="MinMax only for onnxruntime; skip MiniLM")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    from examples.models import ensure_all

    ensure_all(args.cache)
    methods = ["MinMax"] if args.quick else ["MinMax", "Entropy", "Percentile"]
    with tempfile.TemporaryDirectory(prefix="edgeq-int8-bench-") as tmp:
        work = Path(tmp)
        lines = efficientnet(args.cache, work, args.calib_samples, methods)
        if not args.quick:
            lines += minilm(args.cache, work, min(args.calib_samples, 256))
    print("\n== verdicts")
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
