"""FP8 (E4M3) W8A8 and NVFP4 weight-only next to int8 and int4, on the example models.

The formats Jetson Thor adds (TensorRT 10.13+, Blackwell), measured by the ONNX meaning of each
graph, which is what TensorRT computes up to its kernels' accumulation order:

- EfficientNet-Lite0 (500 evaluation crops): fp32 against edgeq int8 W8A8 (TensorRT layout) and
  fp8 W8A8, both calibrated on the same samples: logit SQNR, top-1 agreement, top-5 overlap.
- all-MiniLM-L6-v2 (256 held-out sentences): fp32 against int8 W8A8, fp8 W8A8, int4 weight-only
  (RTN, block 128, the TensorRT block) and NVFP4 weight-only: mean sentence-embedding cosine.

Every graph runs in onnxruntime with graph optimizations off: onnxruntime 1.32's extended CPU
optimizations compute FLOAT8E4M3FN DequantizeLinear -> MatMul wrongly, and it has no FLOAT4E2M1
kernel at all, so NVFP4 weights are decoded by edgeq's float64 reference (the graph is otherwise
as written). No TensorRT ran: these are accuracy numbers, not Thor latencies.

    python benchmarks/fp8.py [--cache .cache/examples] [--calib-samples 128] [--eval-samples 500]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], batch: int) -> np.ndarray:
    from edgeq.graph.formats.nvfp4 import dequantized_copy
    from edgeq.graph.session import cpu_session

    if any(t.data_type == onnx.TensorProto.FLOAT4E2M1 for t in model.graph.initializer):
        model = dequantized_copy(model)
    session = cpu_session(model, purpose="benchmark", optimize=False)
    count = len(next(iter(feeds.values())))
    outs = [session.run(None, {k: v[i:i + batch] for k, v in feeds.items()})[0] for i in range(0, count, batch)]
    return np.concatenate(outs)


def _quantize(model_path: Path, config: object, calib: Path | None, samples: int) -> tuple[onnx.ModelProto, float]:
    from edgeq.data import load_data
    from edgeq.graph.io import load_model
    from edgeq.quantize import QuantizeInputs, quantize

    model = load_model(model_path)
    data = load_data(calib, model, samples=samples, batch_size=8) if calib is not None else None
    start = time.perf_counter()
    result = quantize(model, config, QuantizeInputs(data=data, progress=False), copy=False)  # type: ignore[arg-type]
    return result.model, time.perf_counter() - start


def _size(model: onnx.ModelProto, work: Path, name: str) -> int:
    path = work / f"{name}.onnx"
    onnx.save(model, str(path))
    return path.stat().st_size


def efficientnet(cache: Path, work: Path, calib_samples: int, eval_samples: int) -> list[str]:
    from edgeq import metrics
    from edgeq.graph.io import load_model
    from edgeq.quantize.config import Fp8Config, Int8Config

    path, calib = cache / "efficientnet_lite0.onnx", cache / "images_calib.npz"
    feeds = {k: v[:eval_samples] for k, v in np.load(cache / "images_eval.npz").items()}
    fp32 = load_model(path)
    reference = _run(fp32, feeds, 25)
    rows = [f"| fp32 | — | — | — | {_size(fp32, work, 'effnet_fp32') / 1e6:.2f} | — |"]
    for label, config in (("int8 W8A8 (edgeq, TensorRT layout)", Int8Config()), ("fp8 E4M3 W8A8", Fp8Config())):
        model, seconds = _quantize(path, config, calib, calib_samples)
        out = _run(model, feeds, 25)
        rows.append(f"| {label} | {metrics.sqnr_db(reference, out):.2f} | {metrics.top1_agreement(reference, out):.4f} | "
                    f"{metrics.topk_overlap(reference, out):.4f} | {_size(model, work, 'effnet_q') / 1e6:.2f} | {seconds:.0f} |")
    header = ["| EfficientNet-Lite0 | logit SQNR dB | top-1 agreement | top-5 overlap | MB | quantize s |",
              "| --- | --- | --- | --- | --- | --- |"]
    return header + rows


def minilm(cache: Path, work: Path, calib_samples: int) -> list[str]:
    from edgeq import metrics
    from edgeq.graph.io import load_model
    from edgeq.quantize.config import Fp8Config, Int8Config, NvFp4Config, WeightOnlyConfig

    path, calib = cache / "minilm.onnx", cache / "text_calib.npz"
    feeds = dict(np.load(cache / "text_eval.npz").items())
    fp32 = load_model(path)

    def embeddings(model: onnx.ModelProto) -> np.ndarray:
        return metrics.masked_mean_pool(_run(model, feeds, 32), feeds["attention_mask"])

    reference = embeddings(fp32)
    rows = [f"| fp32 | 1.00000 | — | {_size(fp32, work, 'minilm_fp32') / 1e6:.1f} | — |"]
    variants = (
        ("int8 W8A8 (edgeq, TensorRT layout)", Int8Config(op_types=("MatMul", "Gemm")), calib),
        ("fp8 E4M3 W8A8", Fp8Config(op_types=("MatMul", "Gemm")), calib),
        ("int4 weight-only, RTN, block 128 (DequantizeLinear)", WeightOnlyConfig(weights="int4", block_size=128, onnx_format="qdq",  # type: ignore[arg-type]
                                                                        embeddings=False), None),
        ("NVFP4 weight-only (E2M1, block 16, E4M3 scales)", NvFp4Config(), None),
    )
    for label, config, data in variants:
        model, seconds = _quantize(path, config, data, calib_samples)
        rows_cos = metrics.cosine_rows(reference, embeddings(model))
        rows.append(f"| {label} | {float(np.mean(rows_cos)):.5f} | {float(np.percentile(rows_cos, 5)):.5f} | "
                    f"{_size(model, work, 'minilm_q') / 1e6:.1f} | {seconds:.0f} |")
    header = ["| all-MiniLM-L6-v2 | mean embedding cosine | p5 cosine | MB | quantize s |", "| --- | --- | --- | --- | --- |"]
    return header + rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "examples")
    parser.add_argument("--calib-samples", type=int, default=128)
    parser.add_argument("--eval-samples", type=int, default=500)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for line in [*efficientnet(args.cache, work, args.calib_samples, args.eval_samples), "", *minilm(args.cache, work, args.calib_samples)]:
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
