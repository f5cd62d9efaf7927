"""Float reference vs quantized candidates: output agreement, per-layer error, size and latency.

One run answers the questions a user has after quantizing: does the model still say the same
thing (cosine, SQNR, top-1/top-5 for classifiers, embedding cosine for encoders), what did
it cost or save (file size, onnxruntime latency), and which layer hurts (the SQNR of every
quantized layer's output, worst first). Layers are matched by tensor name: edgeq's Q/DQ
graphs keep the float graph's node output names.

Everything streams batch by batch: per-layer errors are accumulated sums, never stored
activations; only the final outputs' small summaries (logits, pooled embeddings) are kept.

Accuracy is that of the graph as ONNX defines it: onnxruntime runs with graph optimizations
off, so every QuantizeLinear/DequantizeLinear is computed exactly as written. That is what TensorRT, ARM
CPUs and x86 CPUs with VNNI compute. onnxruntime's fused int8 kernels on an x86 CPU without VNNI
(AVX2, plain AVX-512) add pairs of u8 x s8 products in saturating 16-bit registers and can lose
far more than quantization did; ``edgeq quantize --layout onnxruntime --reduce-range`` writes
weights that cannot saturate there. Latency is measured with every optimization on, as deployed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from edgeq import metrics
from edgeq.errors import DataError
from edgeq.graph.ops import COMPUTE_OPS
from edgeq.graph.session import cpu_session, onnxruntime_message
from edgeq.metrics import METRIC_SHORT_LABELS
from edgeq.serialization import Serializable

if TYPE_CHECKING:
    from edgeq.evaluate.decoder import DecoderCompareResult, DecoderOptions

LATENCY_THREADS = 2
LATENCY_WARMUP = 5
LATENCY_SECONDS = 3.0
LATENCY_MAX_RUNS = 200
CONFIDENT_PROBABILITY = 0.5
# SQNR of identical tensors is infinite, which JSON cannot carry: report this ceiling instead.
SQNR_CEILING_DB = 200.0
ENERGY_REASON = (
    "no power sensor on this host: energy is measured on the board (edgeq profile on a Jetson reads its INA3221 rails)"
)


@dataclass
class VariantResult:
    name: str
    path: str
    file_bytes: int
    size_ratio: float
    metrics: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, float] | None = None
    energy_mj: float | None = None
    energy_reason: str | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CompareResult(Serializable):
    schema_type = "edgeq.CompareResult"
    schema_version = 1

    reference: str
    data: str
    samples: int
    task: str
    reference_latency_ms: dict[str, float] | None
    reference_file_bytes: int
    variants: list[VariantResult] = field(default_factory=list)

    @classmethod
    def _from_data(cls, data: dict[str, Any]) -> CompareResult:
        return cls(**with_variants(data))

    def format_text(self, max_layers: int = 8) -> str:
        """The table ``edgeq compare`` prints."""
        lines = [f"reference: {self.reference} ({_mb(self.reference_file_bytes)})  task: {self.task}  data: {self.data} ({self.samples} samples)"]
        if self.reference_latency_ms:
            lines.append(f"reference latency (onnxruntime CPU, batch 1, {LATENCY_THREADS} threads): p50 {self.reference_latency_ms['p50']:.2f} ms")
        for v in self.variants:
            lines.append("")
            lines.append(f"{v.name}: {v.path}")
            lines.append(f"  size            {_mb(v.file_bytes)} ({v.size_ratio:.3f}x of reference)")
            for key, label in METRIC_SHORT_LABELS.items():  # in edgeq.metrics.METRICS order
                if key in v.metrics:
                    lines.append(f"  {label:<15} {_format_metric(key, v.metrics[key])}")
            if v.latency_ms:
                lines.append(f"  latency p50     {v.latency_ms['p50']:.2f} ms (mean {v.latency_ms['mean']:.2f}, p90 {v.latency_ms['p90']:.2f}, p99 {v.latency_ms['p99']:.2f})")
            energy = f"{v.energy_mj:.2f} mJ" if v.energy_mj is not None else f"n/a: {v.energy_reason or ''}"
            lines.append(f"  energy          {energy}")
            if v.layers:
                lines.append(f"  worst layers (SQNR of {len(v.layers)} quantized layer outputs, worst first):")
                for layer in v.layers[:max_layers]:
                    lines.append(f"    {layer['sqnr_db']:7.2f} dB  {layer['tensor']} ({layer['op_type']})")
        return "\n".join(lines)


def with_variants(data: dict[str, Any]) -> dict[str, Any]:
    """A result's data dict with its ``variants`` rebuilt as ``VariantResult`` objects."""
    return {**data, "variants": [VariantResult(**v) for v in data.get("variants", [])]}


def _format_metric(key: str, value: float) -> str:
    if key == "sqnr_db":
        return f"{value:.2f} dB"
    if key == "confident_samples":
        return f"{int(value)}"
    if key == "kl_divergence":
        return f"{value:.5f} nats"
    return f"{value:.4f}"


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def file_bytes(path: str | Path) -> int:
    """Model file size including its external data file."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.onnx"
    total = path.stat().st_size
    data = path.with_name(path.name + ".data")
    if data.is_file():
        total += data.stat().st_size
    return total


def detect_task(model: onnx.ModelProto) -> str:
    """classification (2-D logits with many classes), embedding (last_hidden_state + mask) or generic."""
    inputs = {i.name for i in model.graph.input}
    outputs = list(model.graph.output)
    if any(o.name == "last_hidden_state" for o in outputs) and "attention_mask" in inputs:
        return "embedding"
    if outputs:
        dims = outputs[0].type.tensor_type.shape.dim
        if len(dims) == 2 and dims[1].HasField("dim_value") and dims[1].dim_value >= 10:
            return "classification"
    return "generic"


def quantized_layer_tensors(candidate: onnx.ModelProto, reference: onnx.ModelProto) -> dict[str, str]:
    """Output tensors of the candidate's quantized compute nodes that the reference also computes."""
    produced = {o: n.op_type for n in reference.graph.node for o in n.output}
    dq_outputs = {n.output[0] for n in candidate.graph.node if n.op_type == "DequantizeLinear"}
    other_producers = {n.output[0] for n in candidate.graph.node if n.op_type in ("MatMulNBits", "MatMulBnb4", "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger")}
    found: dict[str, str] = {}
    for node in candidate.graph.node:
        quantized = node.op_type in COMPUTE_OPS and any(i in dq_outputs for i in node.input)
        if (quantized or node.output[0] in other_producers) and node.output[0] in produced:
            found[node.output[0]] = node.op_type
    return found


class AccuracySession:
    """One model's accuracy session: its outputs plus the layer tensors compared with the reference's."""

    def __init__(self, model: onnx.ModelProto, extra_outputs: list[str], label: str) -> None:
        from edgeq.calibrate.collector import expose_tensors

        self.label = label
        exposed = expose_tensors(model, extra_outputs) if extra_outputs else model
        # No Q/DQ fusion: the numbers must not depend on this host's int8 kernels (module docstring).
        self.session = cpu_session(
            exposed, purpose=f"{label} for the comparison", threads=LATENCY_THREADS, optimize=False, error=DataError
        )
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.inputs = {i.name for i in self.session.get_inputs()}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})
        except Exception as exc:
            raise DataError(f"{self.label}: onnxruntime failed on the data ({onnxruntime_message(exc)})") from None
        return dict(zip(self.outputs, values, strict=True))


def measure_latency(model_path: str | Path, feeds: dict[str, np.ndarray], seconds: float = LATENCY_SECONDS) -> dict[str, float]:
    """onnxruntime CPU latency at batch 1 with two threads, after a warm-up (short run).

    Every graph optimization is on here: latency is that of the model as it would be deployed.
    """
    from edgeq.graph.io import load_model
    from edgeq.graph.session import session_config

    config = session_config(load_model(model_path, load_external_data=False))  # as the runtime runs the bundle
    session = cpu_session(model_path, purpose=f"{model_path} to time it", threads=LATENCY_THREADS, error=DataError, config=config)
    names = {i.name for i in session.get_inputs()}
    one = {k: v[:1] for k, v in feeds.items() if k in names}
    for _ in range(LATENCY_WARMUP):
        session.run(None, one)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < LATENCY_MAX_RUNS and (time.perf_counter() - start < seconds or len(times) < 10):
        t0 = time.perf_counter()
        session.run(None, one)
        times.append((time.perf_counter() - t0) * 1000.0)
    arr = np.asarray(times)
    return {
        "p50": float(np.percentile(arr, 50)),
        "mean": float(arr.mean()),
        "p90": float(np.percentile(arr, 90)),
        "p99": float(np.percentile(arr, 99)),
    }


class _OutputAccumulator:
    """Output metrics for one candidate, accumulated batch by batch."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.signal = 0.0
        self.noise = 0.0
        self.cosines: list[np.ndarray] = []
        self.ref_logits: list[np.ndarray] = []
        self.cand_logits: list[np.ndarray] = []
        self.embedding_cosines: list[np.ndarray] = []

    def add(self, ref: np.ndarray, cand: np.ndarray, feeds: dict[str, np.ndarray]) -> None:
        if ref.shape != cand.shape:
            raise DataError(f"candidate output shape {cand.shape} differs from the reference's {ref.shape}")
        r = ref.astype(np.float64)
        err = r - cand.astype(np.float64)
        self.signal += float(np.sum(r * r))
        self.noise += float(np.sum(err * err))
        batch = ref.shape[0] if ref.ndim > 1 else 1
        self.cosines.append(metrics.cosine_rows(ref.reshape(batch, -1), cand.reshape(batch, -1)))
        if self.task == "classification":
            self.ref_logits.append(ref.reshape(batch, -1))
            self.cand_logits.append(cand.reshape(batch, -1))
        elif self.task == "embedding":
            mask = feeds["attention_mask"]
            self.embedding_cosines.append(
                metrics.cosine_rows(metrics.masked_mean_pool(ref, mask), metrics.masked_mean_pool(cand, mask))
            )

    def result(self) -> dict[str, float]:
        out = {
            "cosine": float(np.mean(np.concatenate(self.cosines))),
            "sqnr_db": sqnr_from_sums(self.signal, self.noise),
        }
        if self.task == "classification":
            ref = np.concatenate(self.ref_logits)
            cand = np.concatenate(self.cand_logits)
            confident, count = metrics.confident_top1_agreement(ref, cand, CONFIDENT_PROBABILITY)
            out.update(
                top1_agreement=metrics.top1_agreement(ref, cand),
                top5_overlap=metrics.topk_overlap(ref, cand, 5),
                confident_samples=float(count),
                kl_divergence=metrics.kl_divergence(ref, cand),
            )
            if count:  # no confident sample: no agreement to report (NaN is not JSON)
                out["confident_top1_agreement"] = confident
        elif self.task == "embedding":
            cos = np.concatenate(self.embedding_cosines)
            out.update(embedding_cosine_mean=float(cos.mean()), embedding_cosine_p5=float(np.percentile(cos, 5)))
        return out


def sqnr_from_sums(signal: float, noise: float) -> float:
    if noise <= 0:
        return SQNR_CEILING_DB
    return float(min(10 * np.log10(max(signal, 1e-300) / noise), SQNR_CEILING_DB))


class LayerErrors:
    """The SQNR of each quantized layer's output against the reference's, accumulated run by run.

    Only two sums per tensor are kept, never the activations, so any amount of data fits.
    """

    def __init__(self, tensors: dict[str, str]) -> None:
        self.tensors = tensors  # tensor name -> op type of the node computing it
        self.sums = {t: [0.0, 0.0] for t in tensors}

    def add(self, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> None:
        for tensor, pair in self.sums.items():
            r = reference[tensor].astype(np.float64)
            e = r - candidate[tensor].astype(np.float64)
            pair[0] += float(np.sum(r * r))
            pair[1] += float(np.sum(e * e))

    def rows(self) -> list[dict[str, Any]]:
        """One row per layer, worst (lowest SQNR) first."""
        rows: list[dict[str, Any]] = [
            {"tensor": t, "sqnr_db": sqnr_from_sums(s, n), "op_type": self.tensors[t]} for t, (s, n) in self.sums.items()
        ]
        rows.sort(key=lambda row: float(row["sqnr_db"]))
        return rows


def unique_names(paths: list[Path]) -> list[str]:
    names: list[str] = []
    for path in paths:
        base = path.stem if path.suffix == ".onnx" else path.name
        name, k = base, 2
        while name in names:
            name = f"{base}_{k}"
            k += 1
        names.append(name)
    return names


def compare_models(
    reference: str | Path,
    candidates: list[str | Path],
    data: Any,
    samples: int | None = None,
    batch_size: int = 8,
    layers: bool = True,
    latency: bool = True,
    decoder: DecoderOptions | None = None,
) -> CompareResult | DecoderCompareResult:
    """Compare each candidate with ``reference`` on ``data`` (a ``--data`` spec or a DataSource).

    A reference that is a KV-cache decoder (``input_ids`` + ``past_key_values.N.*`` in,
    ``logits`` + ``present.N.*`` out) is compared as a language model instead, on token data:
    perplexity, next-token and greedy-generation agreement (``edgeq.evaluate.decoder``, tuned
    by ``decoder``); the result is then a ``DecoderCompareResult``.
    """
    from edgeq.calibrate.streaming import StreamingSource, open_data
    from edgeq.evaluate.kv_cache import kv_layout
    from edgeq.frontends.resolve import load_model_spec

    if not candidates:
        raise DataError("compare needs at least one candidate model besides the reference")
    ref_path = Path(reference)
    ref_model = load_model_spec(ref_path)
    cand_paths = [Path(c) for c in candidates]
    cand_models = [load_model_spec(p) for p in cand_paths]
    if kv_layout(ref_model) is not None:
        from edgeq.evaluate.decoder import DecoderOptions, compare_decoders

        return compare_decoders(
            ref_path, ref_model, cand_paths, cand_models, data,
            samples=samples, layers=layers, options=decoder or DecoderOptions(),
        )
    source = open_data(data, ref_model, ref_path, samples=samples, batch_size=batch_size)
    task = detect_task(ref_model)
    ref_outputs = [o.name for o in ref_model.graph.output]
    for path, model in zip(cand_paths, cand_models, strict=True):
        missing = [o for o in ref_outputs[:1] if o not in {x.name for x in model.graph.output}]
        if missing:
            raise DataError(f"{path}: has no output {missing[0]!r} (the reference's first output); compare models of the same network")
    layer_maps = [quantized_layer_tensors(m, ref_model) if layers else {} for m in cand_models]
    all_layers = sorted({t for lm in layer_maps for t in lm})
    ref_session = AccuracySession(ref_model, all_layers, str(ref_path))
    cand_sessions = [AccuracySession(m, list(lm), str(p)) for m, lm, p in zip(cand_models, layer_maps, cand_paths, strict=True)]
    del cand_models
    accumulators = [_OutputAccumulator(task) for _ in cand_paths]
    layer_errors = [LayerErrors(lm) for lm in layer_maps]
    first_feeds: dict[str, np.ndarray] | None = None
    seen = 0
    main_output = ref_outputs[0]
    # A streaming model (state inputs the data leaves out): each model carries its own state.
    carriers = [source.carrier() for _ in range(len(cand_sessions) + 1)] if isinstance(source, StreamingSource) else None
    for chunk in source.chunks() if isinstance(source, StreamingSource) else source:
        count = source.batch_samples(chunk)
        feeds = carriers[0].feeds(chunk, count) if carriers else chunk
        if first_feeds is None:
            first_feeds = feeds
        ref_values = ref_session.run(feeds)
        for index, (acc, session, errors) in enumerate(zip(accumulators, cand_sessions, layer_errors, strict=True)):
            values = session.run(carriers[index + 1].feeds(chunk, count) if carriers else feeds)
            acc.add(ref_values[main_output], values[main_output], feeds)
            errors.add(ref_values, values)
            if carriers:
                carriers[index + 1].update(values)
        if carriers:
            carriers[0].update(ref_values)
        seen += count
    if first_feeds is None:
        raise DataError(f"{source.origin}: no samples to compare on")
    ref_latency = measure_latency(ref_path, first_feeds) if latency else None
    ref_bytes = file_bytes(ref_path)
    result = CompareResult(
        reference=str(ref_path), data=str(source.origin), samples=seen, task=task,
        reference_latency_ms=ref_latency, reference_file_bytes=ref_bytes,
    )
    for name, path, acc, errors in zip(unique_names(cand_paths), cand_paths, accumulators, layer_errors, strict=True):
        size = file_bytes(path)
        result.variants.append(
            VariantResult(
                name=name, path=str(path), file_bytes=size, size_ratio=size / ref_bytes if ref_bytes else 0.0,
                metrics=acc.result(),
                latency_ms=measure_latency(path, first_feeds) if latency else None,
                energy_mj=None, energy_reason=ENERGY_REASON,
                layers=errors.rows(),
            )
        )
    return result
