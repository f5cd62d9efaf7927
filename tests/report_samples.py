"""Realistic result dicts for the report tests, shaped exactly like the producers' ``to_dict()``.

The numbers are internally consistent (statistics computed from the trace, energy from the power
trace) so a test can check the report against an independent computation.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def benchmark_dict(
    *,
    energy: bool = True,
    iterations: int = 300,
    warmup: int = 10,
    throttle: float = 0.12,
    ops: bool = True,
    model: str = "bundles/efficientnet_lite0-int8/model.onnx",
    seed: int = 0,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    warm = 9.0 + 40.0 * np.exp(-np.arange(warmup) / 1.5)
    base = 8.2 * (1 + throttle * np.linspace(0, 1, iterations) ** 2)
    measured = base + rng.gamma(2.0, 0.12, iterations)
    measured[rng.choice(iterations, min(3, iterations), replace=False)] += 4.0  # a few scheduler hiccups
    trace = np.concatenate([warm, measured])
    batch = 1
    latency = {
        "min": float(measured.min()),
        "mean": float(measured.mean()),
        "std": float(measured.std()),
        **{f"p{q}": float(np.percentile(measured, q)) for q in (50, 90, 95, 99)},
        "max": float(measured.max()),
    }
    result: dict[str, Any] = {
        "schema": "edgeq_runtime.BenchmarkResult",
        "schema_version": 1,
        "model": model,
        "backend": "tensorrt",
        "providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
        "device": {
            "hostname": "orin-nano-01",
            "machine": "aarch64",
            "cpu": "ARMv8 Processor rev 1 (v8l)",
            "cpu_count": 6,
            "python": "3.10.12",
            "jetson_model": "NVIDIA Jetson Orin Nano Developer Kit",
            "power_mode": "15W (nvpmodel 0)",
            "clocks": {"gpu_mhz": 624.75, "gpu_max_mhz": 1020.0, "emc_mhz": 2133.0, "cpu_mhz": [1510.4] * 5 + [729.6]},
        },
        "versions": {"edgeq_runtime": "0.1.0", "onnxruntime": "1.20.0", "numpy": "1.26.4", "tensorrt": "10.3.0"},
        "batch": batch,
        "warmup": warmup,
        "iterations": iterations,
        "threads": None,
        "latency_ms": latency,
        "throughput_per_s": 1000.0 * batch / latency["mean"],
        "trace_ms": trace.tolist(),
        "warmup_iterations": warmup,
        "ops": [],
        "energy": {
            "available": False,
            "reason": "no power sensor found: not a Jetson (no ina3221 rails), no NVML GPU, RAPL not readable",
            "source": None,
            "rails": [],
            "sample_period_ms": None,
            "idle_power_w": None,
            "average_power_w": None,
            "energy_per_inference_mj": None,
            "energy_above_idle_per_inference_mj": None,
            "window_s": None,
            "window_too_short": False,
            "trace": {"t_s": [], "power_w": []},
            "measured_window_s": None,
        },
    }
    if ops:
        names = [
            ("/features/features.0/Conv", "Conv", 1.9),
            ("/features/features.1/conv/conv.0/Conv", "Conv", 1.2),
            ("/classifier/Gemm", "Gemm", 0.3),
            ("/features/features.4/conv/conv.3/Conv", "Conv", 0.9),
            ("/features/features.2/Add", "Add", 0.15),
            ("/pool/GlobalAveragePool", "GlobalAveragePool", 0.08),
            ("/features/features.3/conv/conv.1/Clip", "Clip", 0.05),
        ]
        total = sum(t for _, _, t in names)
        result["ops"] = [
            {"name": n, "op_type": t, "total_ms": ms, "count": iterations, "share": ms / total}
            for n, t, ms in names
        ]
    if energy:
        period = 0.02
        idle_s, run_s = 2.0, float(trace.sum() / 1000.0)
        t = np.arange(0, idle_s + run_s + 0.5, period)
        power = np.where(t < idle_s, 4.7, 8.4 + 0.6 * np.clip((t - idle_s) / run_s, 0, 1))
        power = power + rng.normal(0, 0.08, t.size)
        power[t > idle_s + run_s] = 4.9
        start = idle_s + float(warm.sum()) / 1000.0
        stop = idle_s + run_s
        inside = (t >= start) & (t <= stop)
        idle_power = float(power[t < idle_s].mean())
        average = float(power[inside].mean())
        window = stop - start
        result["energy"] = {
            "available": True,
            "reason": None,
            "source": "ina3221 hwmon",
            "rails": ["VDD_IN"],
            "sample_period_ms": period * 1000,
            "idle_power_w": idle_power,
            "average_power_w": average,
            "energy_per_inference_mj": average * window / iterations * 1000,
            "energy_above_idle_per_inference_mj": (average - idle_power) * window / iterations * 1000,
            "window_s": window,
            "window_too_short": False,
            "trace": {"t_s": t.tolist(), "power_w": power.tolist()},
            "measured_window_s": [start, stop],
        }
    return result


def _layers(rng: np.random.Generator, names: list[tuple[str, str]], center: float) -> list[dict[str, Any]]:
    values = sorted((center + rng.normal(0, 4), n, op) for n, op in names)
    return [{"tensor": n, "sqnr_db": float(v), "op_type": op} for v, n, op in values]


def classification_compare(seed: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    layers = [(f"/features/features.{i}/conv/conv.{j}/Conv_output_0", "Conv") for i in range(16) for j in (0, 3)]
    return {
        "_type": "edgeq.CompareResult",
        "_version": 1,
        "_data": {
            "reference": "/data/models/efficientnet_lite0.onnx",
            "data": "/data/eval/images_eval.npz",
            "samples": 256,
            "task": "classification",
            "reference_latency_ms": {"p50": 31.2, "mean": 31.9, "p90": 33.0, "p99": 36.4},
            "reference_file_bytes": 18_600_000,
            "variants": [
                {
                    "name": "int8",
                    "path": "out/demo/efficientnet_lite0-int8.onnx",
                    "file_bytes": 5_100_000,
                    "size_ratio": 5_100_000 / 18_600_000,
                    "metrics": {
                        "cosine": 0.99731,
                        "sqnr_db": 22.4,
                        "top1_agreement": 0.953,
                        "top5_overlap": 0.941,
                        "confident_top1_agreement": 0.992,
                        "confident_samples": 131,
                        "kl_divergence": 0.0213,
                    },
                    "latency_ms": {"p50": 18.4, "mean": 18.9, "p90": 19.8, "p99": 23.0},
                    "energy_mj": None,
                    "energy_reason": "no power sensor on this machine (x86 without readable RAPL)",
                    "layers": _layers(rng, layers, 31.0),
                }
            ],
        },
    }


def embedding_compare(seed: int = 2, energy: bool = False) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    layers = [
        (f"/encoder/layer.{i}/{part}/MatMul_output_0", "MatMul")
        for i in range(6)
        for part in ("attention/self/query", "attention/self/key", "intermediate/dense", "output/dense")
    ]
    ref_bytes = 90_400_000

    def variant(name: str, size: int, cos: float, p5: float, sqnr: float, p50: float | None, center: float) -> dict[str, Any]:
        return {
            "name": name,
            "path": f"out/demo/minilm-{name}.onnx",
            "file_bytes": size,
            "size_ratio": size / ref_bytes,
            "metrics": {"cosine": cos - 0.002, "sqnr_db": sqnr, "embedding_cosine_mean": cos, "embedding_cosine_p5": p5},
            "latency_ms": None if p50 is None else {"p50": p50, "mean": p50 * 1.03, "p90": p50 * 1.08, "p99": p50 * 1.2},
            "energy_mj": (p50 or 0) * 7.9 if energy else None,
            "energy_reason": None if energy else "no power sensor on this machine (x86 without readable RAPL)",
            "layers": _layers(rng, layers, center),
        }

    return {
        "_type": "edgeq.CompareResult",
        "_version": 1,
        "_data": {
            "reference": "/data/models/minilm.onnx",
            "data": "/data/eval/text_eval.npz",
            "samples": 128,
            "task": "embedding",
            "reference_latency_ms": {"p50": 42.0, "mean": 43.1, "p90": 45.0, "p99": 51.0},
            "reference_file_bytes": ref_bytes,
            "variants": [
                variant("int4", 27_300_000, 0.9952, 0.9891, 19.8, 47.5, 24.0),
                variant("int2", 20_900_000, 0.9121, 0.8317, 7.1, 46.9, 9.0),
                variant("nf4", 27_900_000, 0.9961, 0.9905, 20.6, 58.3, 25.0),
            ],
        },
    }
