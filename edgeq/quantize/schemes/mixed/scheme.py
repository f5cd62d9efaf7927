"""Mixed precision under a byte budget: measure each matrix, choose its format, write the mix.

``edgeq quantize MODEL --budget 12MB`` (or ``--avg-bits 3``) runs three steps:

1. **sensitivity**: every quantizable matrix is quantized with every candidate format, and the
   dequantized weight is put back into the float model *alone*; the model's output error on a
   few calibration samples (relative squared error over real tokens) is the matrix's cost of
   that format. One onnxruntime session serves every measurement: the weights are turned into
   graph inputs, so swapping one matrix is a different feed, not a new session. This is the
   default because it sees what a layer-local proxy cannot, how much of a layer's error
   survives the rest of the network (``benchmarks/mixed.py`` prints how well the Hessian proxy
   ``trace(E H E^T)`` ranks layers against it on MiniLM);
2. **allocation**: the multiple-choice knapsack in :mod:`edgeq.numerics.allocation` with each
   option's exact stored bytes (codes, scales and zero points as the ONNX format writes them,
   computed by the very emitters that write the file);
3. **rewrite**: each matrix is quantized again with its chosen format (the algorithms are
   deterministic, so it is the same weight that was measured) and spliced in by the weight-only
   rewriter; the plan goes to the summary and to the model's ``metadata_props``.

The budget counts the weights of the quantizable matrices only (what this scheme can change);
biases, norms and the graph itself are extra and the summary states the whole file's size.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeq.errors import ConfigError, UnsupportedError
from edgeq.graph.formats import Emitted, bnb4, gather, matmulnbits
from edgeq.graph.passes.weight_only import (
    LeftInFloat,
    WeightOnlyRewriter,
    WeightTarget,
    plan_targets,
    read_weight,
    weight_bytes,
)
from edgeq.graph.proto import GraphIndex, NameMaker, remove_unused_initializers
from edgeq.metrics import sqnr_db
from edgeq.numerics import weight_only as algorithms
from edgeq.numerics.allocation import (
    Allocation,
    Option,
    OutputError,
    allocate,
    budget_from_avg_bits,
    format_bytes,
    least_error_bytes,
    minimum_bytes,
)
from edgeq.numerics.codecs import BlockQuantized, get_codec, num_blocks
from edgeq.numerics.weight_only import AlgorithmResult, LayerStats, weighted_error
from edgeq.progress import progress_bar
from edgeq.quantize.api import QuantizeInputs, QuantizeResult, register
from edgeq.quantize.config import Method, MixedPrecisionConfig
from edgeq.quantize.schemes.weight_only.scheme import is_sequence_model, mask_input
from edgeq.quantize.summary import NodeDecision, QuantizationSummary

FLOAT = "float"  # the candidate that leaves a matrix as it is
FORMATS = ("int2", "int4", "int8", "nf4", "fp4", FLOAT)
ALIASES = {"fp32": FLOAT, "float32": FLOAT, "fp16": None, "float16": None}
DATA_DRIVEN = (Method.GPTQ, Method.AWQ)
METADATA_KEY = "edgeq.mixed_precision"
# Calibration samples the sensitivity runs use: (targets x candidates) forward passes over them.
# On MiniLM the per-format ranking of the 39 matrices from 16 samples has Spearman rho >= 0.996
# against 64 samples (8 samples: >= 0.988), at a quarter of the time.
SENSITIVITY_SAMPLES = 16
# Activations kept from the reference run so one-matrix measurements run only downstream nodes.
CUT_CACHE_BYTES = 512 << 20


# -- configuration ------------------------------------------------------------------------------


def resolve_candidates(config: MixedPrecisionConfig) -> list[str]:
    """The candidate formats, validated, in the user's order without repeats."""
    names: list[str] = []
    for raw in config.candidates:
        name = str(getattr(raw, "value", raw)).strip().lower()
        if name in ALIASES:
            alias = ALIASES[name]
            if alias is None:
                raise ConfigError(
                    f"--candidates: {name} is not a stored format here; use 'float' to allow keeping a matrix as it is"
                )
            name = alias
        if name not in FORMATS:
            raise ConfigError(f"--candidates: unknown format {raw!r}; expected some of {', '.join(FORMATS)}")
        if name not in names:
            names.append(name)
    if not names:
        raise ConfigError("--candidates: give at least one format, e.g. int2,int4,int8")
    return names


def check_config(config: MixedPrecisionConfig) -> Method:
    """One-line refusals for the options, before anything is measured; returns the method."""
    try:
        method = Method(getattr(config.method, "value", config.method))
    except ValueError:
        raise ConfigError(f"--method: unknown value {config.method!r}; expected one of {', '.join(m.value for m in Method)}") from None
    if (config.budget_bytes is None) == (config.avg_bits is None):
        raise ConfigError("mixed precision needs exactly one of --budget (bytes) or --avg-bits")
    if config.budget_bytes is not None and config.budget_bytes <= 0:
        raise ConfigError(f"--budget: {config.budget_bytes} bytes is not a positive size")
    if config.avg_bits is not None and not (math.isfinite(config.avg_bits) and config.avg_bits > 0):
        raise ConfigError(f"--avg-bits: {config.avg_bits} is not a positive number of bits")
    if config.block_size < 16 or config.block_size & (config.block_size - 1):
        raise ConfigError(f"--block-size: {config.block_size} is not a power of two >= 16")
    if config.exclude:
        try:
            re.compile(config.exclude)
        except re.error as exc:
            raise ConfigError(f"--exclude: {config.exclude!r} is not a valid regular expression ({exc})") from None
    resolve_candidates(config)
    return method


# -- one matrix in one format -----------------------------------------------------------------


@dataclass
class Fitted:
    """A matrix quantized in one candidate format, ready to measure or emit."""

    result: AlgorithmResult
    method: Method
    note: str
    flat: bool  # bnb4 layout with blocks across rows: the weight was fitted as one flat row

    def effective(self, shape: tuple[int, int]) -> np.ndarray:
        return self.result.effective_weight().reshape(shape)


def _unavailable(target: WeightTarget, fmt: str) -> str | None:
    """Why ``fmt`` cannot hold this matrix in a format onnxruntime runs, or None."""
    if fmt == FLOAT:
        return None
    codec = get_codec(fmt, True)
    if target.is_embedding:
        probe = BlockQuantized(codec, 16, np.zeros((1, target.cols), np.uint8), np.zeros((1, 1), np.float32))
        return gather.check_table(probe)
    return None


def fit(w: np.ndarray, target: WeightTarget, fmt: str, block_size: int, method: Method, stats: dict[str, LayerStats]) -> Fitted:
    """Quantize one ``[rows, cols]`` weight with the weight-only algorithms, as the weight-only scheme does."""
    codec = get_codec(fmt, True)
    note = ""
    layer_stats = stats.get(target.activation)
    if target.is_embedding and method in DATA_DRIVEN:
        method, note = Method.HQQ, "hqq for the table: a lookup has no activations"
    elif method in DATA_DRIVEN and (layer_stats is None or layer_stats.hessian is None):
        method, note = Method.HQQ, "no calibration activations reached this node; hqq instead"
    flat = not codec.is_integer and not target.is_embedding and bnb4.flat_layout(target.rows, target.cols, block_size)
    if flat and method in DATA_DRIVEN:
        method, note = Method.HQQ, f"K={target.cols} is not a multiple of block {block_size}: bnb4 blocks straddle rows, hqq instead"
    result = algorithms.run(method.value, codec, w.reshape(1, -1) if flat else w, block_size, layer_stats)
    return Fitted(result, method, note, flat)


def _weight_nodes(target: WeightTarget, q: BlockQuantized, activation: str, product: str, prefix: str) -> Emitted:
    """The format's node(s) for the weight itself: GatherBlockQuantized, MatMulNBits or MatMulBnb4."""
    if target.is_embedding:
        return gather.emit(q, activation, target.output, prefix, target.dtype)
    if q.codec.is_integer:
        return matmulnbits.emit(q, activation, product, prefix, target.dtype)
    return bnb4.emit(q, target.rows, target.cols, activation, product, prefix, target.dtype)


def _extra_bytes(target: WeightTarget, result: AlgorithmResult) -> int:
    """AWQ's input scale and GPTQ/AWQ's bias correction, each one vector in the weight's dtype."""
    itemsize = np.dtype(target.dtype).itemsize
    total = 0 if result.input_scale is None else int(result.input_scale.size) * itemsize
    if result.bias is not None and not target.is_embedding:
        total += int(result.bias.size) * itemsize
    return total


def stored_bytes(target: WeightTarget, result: AlgorithmResult) -> int:
    """Bytes the written model holds for this matrix: the emitters' initializers, plus its extra vectors."""
    emitted = _weight_nodes(target, result.quantized, "x", "y", "edgeq_size")
    return emitted.nbytes() + _extra_bytes(target, result)


def float_bytes(target: WeightTarget) -> int:
    return target.rows * target.cols * np.dtype(target.dtype).itemsize


def planned_bytes(target: WeightTarget, fmt: str, block_size: int) -> int:
    """Bytes of ``fmt`` from the shapes alone (what every algorithm writes, AWQ's input scale aside)."""
    if fmt == FLOAT:
        return float_bytes(target)
    codec = get_codec(fmt, True)
    rows, cols = target.rows, target.cols
    if not codec.is_integer and not target.is_embedding and bnb4.flat_layout(rows, cols, block_size):
        rows, cols = 1, rows * cols
    q = BlockQuantized(
        codec, block_size, np.zeros((rows, cols), np.uint8), np.zeros((rows, num_blocks(cols, block_size)), np.float32)
    )
    return _weight_nodes(target, q, "x", "y", "edgeq_size").nbytes()


# -- measuring the output error ------------------------------------------------------------------


def sensitivity_batches(model: onnx.ModelProto, data: Any, samples: int) -> tuple[list[dict[str, np.ndarray]], str | None, int]:
    """The first ``samples`` calibration samples as batches, padding trimmed for sequence models.

    Sequence models get their samples sorted by length before batching, so a batch carries
    little padding: the measurement runs (targets x candidates) times over these batches.
    """
    taken: list[dict[str, np.ndarray]] = []
    count = 0
    for feeds in data.batches():
        n = int(data.batch_samples(feeds))
        taken.append(feeds)
        count += n
        if count >= samples:
            break
    mask_name = mask_input(model)
    if mask_name is None or not is_sequence_model(model) or not taken or mask_name not in taken[0]:
        return taken, mask_name, count
    joined = {name: np.concatenate([f[name] for f in taken])[:samples] for name in taken[0]}
    count = len(joined[mask_name])
    lengths = (np.asarray(joined[mask_name]) != 0).sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    size = max(1, int(getattr(data, "batch_size", 8)))
    batches = []
    for start in range(0, count, size):
        rows = order[start : start + size]
        feeds = {name: value[rows] for name, value in joined.items()}
        columns = np.flatnonzero(np.asarray(feeds[mask_name]).any(axis=0))
        width = int(columns[-1]) + 1 if columns.size else 1
        batches.append({name: np.ascontiguousarray(value[:, :width]) for name, value in feeds.items()})
    return batches, mask_name, count


def _session(model: onnx.ModelProto) -> Any:
    import onnxruntime as ort

    from edgeq.calibrate.collector import INTRA_OP_THREADS

    options = ort.SessionOptions()
    options.intra_op_num_threads = INTRA_OP_THREADS
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        if model.ByteSize() < (1 << 31) - (1 << 26):
            return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        from edgeq.graph.io import temporary_model_file

        with temporary_model_file(model) as path:
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedError(f"onnxruntime cannot load the model to measure sensitivities: {message}") from None


class WeightProbe:
    """The float model with every target weight fed as a graph input: one session, any substitution.

    Each target node reads its own new input, so a weight shared by two nodes is still
    substituted for one node only. ``error(overrides)`` runs the calibration batches with some
    weights replaced (``{target index: effective [rows, cols] weight}``) and returns the
    relative output error against the float reference.

    A single substituted matrix changes nothing upstream of its node, so the reference run also
    keeps every tensor that crosses into some target's downstream part, and a one-matrix
    measurement runs only the nodes downstream of it (about half the model on average for a
    stack of layers). Models with control flow, or whose cached crossings would exceed
    ``CUT_CACHE_BYTES``, run whole.

    With ``with_bias`` every MatMul/Gemm output also gets an ``Add`` of a fed vector (zeros by
    default), for the bias corrections GPTQ and AWQ return along with the weight.
    """

    def __init__(
        self, model: onnx.ModelProto, targets: Sequence[WeightTarget], batches: list[dict[str, np.ndarray]],
        mask_name: str | None, downstream_only: bool = True, with_bias: bool = False,
    ) -> None:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        index = GraphIndex(model.graph)
        names = NameMaker(probe.graph)
        self.targets = list(targets)
        self.inputs: list[str] = []
        self.stored: list[np.ndarray] = []
        for target in self.targets:
            node = probe.graph.node[target.node_index]
            position = 0 if target.is_embedding else 1
            if node.input[position] != target.weight:
                raise ValueError(f"{target.name}: input {position} is not the weight {target.weight}")
            value = index.constant(target.weight)
            if value is None:
                raise ValueError(f"{target.weight} is not a constant")
            name = names(f"edgeq_probe_{target.weight}")
            node.input[position] = name
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(target.dtype))
            probe.graph.input.append(helper.make_tensor_value_info(name, elem, list(value.shape)))
            self.inputs.append(name)
            self.stored.append(np.ascontiguousarray(value.astype(target.dtype)))
        self.node_index = [t.node_index for t in self.targets]
        self.bias_inputs: dict[int, str] = {}
        if with_bias:
            self._add_bias_inputs(probe, names)
        remove_unused_initializers(probe.graph)
        self.probe = probe
        self.session = _session(probe)
        self.output_names = [o.name for o in self.session.get_outputs() if "float" in o.type]
        if not self.output_names:
            raise UnsupportedError("the model has no float output to measure quantization error on")
        self.batches = batches
        self.mask_name = mask_name
        self.runs = 0
        self.cuts: list[list[str] | None] = [None] * len(self.targets)
        self.cached: list[dict[str, np.ndarray]] = [{} for _ in batches]
        self._sub: tuple[int, Any, list[str]] | None = None
        self._exposed: Any = None
        crossings = self._plan_cuts() if downstream_only else []
        self.reference = [self._reference(b, crossings) for b in range(len(batches))]

    def _add_bias_inputs(self, probe: onnx.ModelProto, names: NameMaker) -> None:
        """``output = product + bias_i`` after every MatMul/Gemm target, ``bias_i`` a graph input."""
        after: dict[int, int] = {}
        for i, target in enumerate(self.targets):
            if not target.is_embedding:
                after[target.node_index] = i
        nodes: list[onnx.NodeProto] = []
        for index, node in enumerate(probe.graph.node):
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            nodes.append(copy)
            i = after.get(index, -1)
            if i < 0:
                continue
            target = self.targets[i]
            self.node_index[i] = len(nodes) - 1
            product, bias = names(f"{target.output}_edgeq_product"), names(f"edgeq_probe_bias_{target.weight}")
            copy.output[0] = product
            nodes.append(helper.make_node("Add", [product, bias], [target.output], name=names(f"{target.name}_edgeq_bias")))
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(target.dtype))
            probe.graph.input.append(helper.make_tensor_value_info(bias, elem, [target.rows]))
            self.bias_inputs[i] = bias
        del probe.graph.node[:]
        probe.graph.node.extend(nodes)

    # -- downstream parts ---------------------------------------------------------------------

    def _plan_cuts(self) -> list[str]:
        """Per target: the activations its downstream nodes read from upstream. Returns their union."""
        graph = self.probe.graph
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
            return []
        feeds = {i.name for i in graph.input} | {t.name for t in graph.initializer}
        union: dict[str, None] = {}
        for i, start in enumerate(self.node_index):
            produced: set[str] = set(graph.node[start].output)
            reads: dict[str, None] = {}
            for node in list(graph.node)[start + 1 :]:
                if any(x in produced for x in node.input if x):
                    produced.update(node.output)
                    reads.update(dict.fromkeys(x for x in node.input if x and x not in produced))
            reads.update(dict.fromkeys(x for x in graph.node[start].input if x))
            cut = [x for x in reads if x not in feeds and x not in produced]
            self.cuts[i] = cut
            union.update(dict.fromkeys(cut))
        return list(union)

    def _reference(self, b: int, crossings: list[str]) -> list[np.ndarray]:
        feeds = self._feeds(self.batches[b], {})
        if not crossings:
            return list(self.session.run(self.output_names, feeds))
        if b == 0:
            from edgeq.calibrate.collector import expose_tensors

            self._exposed = _session(expose_tensors(self.probe, crossings))
        values = self._exposed.run([*self.output_names, *crossings], feeds)
        cached = dict(zip(crossings, values[len(self.output_names) :], strict=True))
        size = sum(v.nbytes for v in cached.values())
        if b == 0 and size * len(self.batches) > CUT_CACHE_BYTES:
            self.cuts = [None] * len(self.targets)  # too much to keep: run whole models instead
            crossings.clear()
            self._exposed = None
        else:
            self.cached[b] = cached
        if b == len(self.batches) - 1:
            self._exposed = None
        return list(values[: len(self.output_names)])

    def _sub_session(self, i: int) -> tuple[Any, list[str]] | None:
        """The session of target ``i``'s downstream nodes (built once, kept for its candidates)."""
        cut = self.cuts[i]
        if cut is None:
            return None
        if self._sub is not None and self._sub[0] == i:
            return self._sub[1], self._sub[2]
        graph = self.probe.graph
        start = self.node_index[i]
        produced = set(graph.node[start].output)
        nodes = [graph.node[start]]
        for node in list(graph.node)[start + 1 :]:
            if any(x in produced for x in node.input if x):
                produced.update(node.output)
                nodes.append(node)
        outputs = [o for o in graph.output if o.name in produced and o.name in self.output_names]
        if not outputs:
            return None
        read = {x for n in nodes for x in n.input if x}
        sample = self.cached[0]
        inputs = [v for v in graph.input if v.name in read]
        inputs += [helper.make_tensor_value_info(x, helper.np_dtype_to_tensor_dtype(sample[x].dtype), None) for x in cut]
        sub = helper.make_graph(nodes, "downstream", inputs, outputs, [t for t in graph.initializer if t.name in read])
        model = helper.make_model(
            sub, opset_imports=list(self.probe.opset_import), ir_version=self.probe.ir_version, functions=list(self.probe.functions)
        )
        session = _session(model)
        fetched = [o.name for o in outputs]
        self._sub = (i, session, fetched)
        return session, fetched

    # -- runs ------------------------------------------------------------------------------------

    def stored_layout(self, i: int, effective: np.ndarray) -> np.ndarray:
        """An effective ``[rows, cols]`` weight back in the stored layout and dtype of target ``i``."""
        target = self.targets[i]
        w = np.asarray(effective, np.float64)
        if target.alpha != 1.0:
            w = w / target.alpha
        if target.transpose:
            w = w.T
        return np.ascontiguousarray(w.reshape(self.stored[i].shape).astype(target.dtype))

    def _feeds(
        self, feeds: dict[str, np.ndarray], overrides: dict[int, np.ndarray], biases: dict[int, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        full = dict(feeds)
        for i, name in enumerate(self.inputs):
            full[name] = overrides.get(i, self.stored[i])
        for i, name in self.bias_inputs.items():
            bias = (biases or {}).get(i)
            dtype = self.targets[i].dtype
            full[name] = np.zeros(self.targets[i].rows, dtype) if bias is None else np.asarray(bias).astype(dtype)
        return full

    def error(
        self, overrides: dict[int, np.ndarray], biases: dict[int, np.ndarray] | None = None, downstream_only: bool = True
    ) -> float:
        """Output error with ``overrides`` (effective ``[rows, cols]`` weights) and their bias corrections."""
        if biases and any(i not in self.bias_inputs for i in biases):
            raise ValueError("bias corrections need a probe built with_bias, for MatMul/Gemm targets")
        stored = {i: self.stored_layout(i, w) for i, w in overrides.items()}
        sub = self._sub_session(next(iter(stored))) if downstream_only and len(stored) == 1 else None
        accumulator = OutputError(len(self.output_names))
        for b, (feeds, reference) in enumerate(zip(self.batches, self.reference, strict=True)):
            full = self._feeds(feeds, stored, biases)
            if sub is None:
                outputs = list(self.session.run(self.output_names, full))
            else:
                session, fetched = sub
                wanted = {i.name for i in session.get_inputs()}
                values = {k: v for k, v in {**full, **self.cached[b]}.items() if k in wanted}
                got = dict(zip(fetched, session.run(fetched, values), strict=True))
                outputs = [got.get(name, ref) for name, ref in zip(self.output_names, reference, strict=True)]
            mask = feeds.get(self.mask_name) if self.mask_name else None
            accumulator.update(reference, outputs, mask)
        self.runs += 1
        return accumulator.value()

    def model_error(self, model: onnx.ModelProto) -> float:
        """The same error for a whole (quantized) model fed the same batches."""
        session = _session(model)
        accumulator = OutputError(len(self.output_names))
        for feeds, reference in zip(self.batches, self.reference, strict=True):
            outputs = session.run(self.output_names, feeds)
            mask = feeds.get(self.mask_name) if self.mask_name else None
            accumulator.update(reference, outputs, mask)
        return accumulator.value()


@dataclass
class CandidateFit:
    """One matrix in one format: exact stored bytes, measured output error, and the proxy."""

    format: str
    nbytes: int
    error: float  # relative output error with this matrix alone quantized so
    proxy: float | None = None  # trace(E H E^T) / trace(W H W^T); relative weight MSE for tables
    weight_sqnr_db: float = float("inf")
    method: str = ""
    note: str = ""


@dataclass
class MatrixSensitivity:
    target: WeightTarget
    fits: list[CandidateFit]
    unavailable: dict[str, str] = field(default_factory=dict)  # format -> why onnxruntime cannot run it

    def option(self, fmt: str) -> CandidateFit | None:
        return next((f for f in self.fits if f.format == fmt), None)


@dataclass
class SensitivityTable:
    """Everything the allocation needs, and what the summary reports about the measurement."""

    matrices: list[MatrixSensitivity]
    left: list[LeftInFloat]
    samples: int
    seconds: float
    probe: WeightProbe | None = None

    def options(self, measure: str = "error") -> list[list[Option]]:
        """The knapsack's options, priced by the measured ``error`` or by the Hessian ``proxy``."""
        return [[Option(f.format, f.nbytes, float(getattr(f, measure) or 0.0)) for f in m.fits] for m in self.matrices]

    @property
    def num_weights(self) -> int:
        return sum(m.target.rows * m.target.cols for m in self.matrices)

    @property
    def float_bytes(self) -> int:
        return sum(float_bytes(m.target) for m in self.matrices)




def plan_matrices(model: onnx.ModelProto, config: MixedPrecisionConfig) -> tuple[list[WeightTarget], list[LeftInFloat], dict[int, dict[str, str]]]:
    """The matrices in the budget, the nodes left out (with reasons) and unavailable formats per matrix."""
    candidates = resolve_candidates(config)
    targets, left = plan_targets(model, config.embeddings, config.exclude)
    kept: list[WeightTarget] = []
    unavailable: dict[int, dict[str, str]] = {}
    for target in targets:
        reasons = {fmt: r for fmt in candidates if (r := _unavailable(target, fmt)) is not None}
        if len(reasons) == len(candidates):
            why = "; ".join(f"{fmt}: {r}" for fmt, r in reasons.items())
            left.append(LeftInFloat(target.name, target.op_type, f"no candidate format can hold it ({why}); not counted in the budget", target.weight))
            continue
        unavailable[len(kept)] = reasons
        kept.append(target)
    return kept, left, unavailable


def check_budget(budget: int, smallest: int, config: MixedPrecisionConfig, num_weights: int) -> None:
    """Refuse a budget no allocation can meet, naming the smallest achievable size."""
    if budget >= smallest:
        return
    if config.avg_bits is not None:
        raise ConfigError(
            f"--avg-bits {config.avg_bits:g} ({format_bytes(budget)}) is below the smallest achievable "
            f"{8 * smallest / max(num_weights, 1):.3f} bits per weight ({format_bytes(smallest)}) with candidates {','.join(resolve_candidates(config))}"
        )
    raise ConfigError(
        f"--budget {format_bytes(budget)} is below the smallest achievable size {format_bytes(smallest)} "
        f"(every matrix at its smallest candidate of {','.join(resolve_candidates(config))}, block {config.block_size})"
    )


def resolve_budget(config: MixedPrecisionConfig, num_weights: int) -> int:
    if config.budget_bytes is not None:
        return int(config.budget_bytes)
    assert config.avg_bits is not None  # check_config guarantees one of them
    return budget_from_avg_bits(config.avg_bits, num_weights)


def measure_sensitivity(
    model: onnx.ModelProto,
    config: MixedPrecisionConfig,
    data: Any,
    stats: dict[str, LayerStats] | None = None,
    progress: bool = False,
    samples: int | None = None,
    planned: tuple[list[WeightTarget], list[LeftInFloat], dict[int, dict[str, str]]] | None = None,
    proxy_stats: dict[str, LayerStats] | None = None,
) -> SensitivityTable:
    """Each matrix x each candidate: exact bytes and the output error with that matrix alone quantized.

    ``stats`` feed the algorithms (as in the weight-only scheme: GPTQ/AWQ need them, RTN/HQQ weigh
    their error by them); ``proxy_stats`` (default: ``stats``) only give each option its Hessian
    proxy ``trace(E H E^T) / trace(W H W^T)``, to compare with the measured error.
    """
    method = check_config(config)
    candidates = resolve_candidates(config)
    targets, left, unavailable = planned if planned is not None else plan_matrices(model, config)
    stats = stats or {}
    started = time.perf_counter()
    batches, mask_name, count = sensitivity_batches(model, data, samples or SENSITIVITY_SAMPLES)
    probe = WeightProbe(model, targets, batches, mask_name, with_bias=method in DATA_DRIVEN) if targets else None
    matrices: list[MatrixSensitivity] = []
    total = sum(len(candidates) - len(unavailable[i]) for i in range(len(targets)))
    with progress_bar(total, progress, "measuring sensitivities") as bar:
        for i, target in enumerate(targets):
            assert probe is not None
            w = read_weight(model, target)
            layer_stats = (proxy_stats if proxy_stats is not None else stats).get(target.activation)
            hessian = None if target.is_embedding or layer_stats is None else layer_stats.hessian
            fits: list[CandidateFit] = []
            for fmt in candidates:
                if fmt in unavailable[i]:
                    continue
                if fmt == FLOAT:
                    fits.append(CandidateFit(FLOAT, float_bytes(target), 0.0, 0.0, float("inf"), "", "kept as it is"))
                else:
                    fitted = fit(w, target, fmt, config.block_size, method, stats)
                    effective = fitted.effective(w.shape)
                    bias = None if target.is_embedding else fitted.result.bias
                    fits.append(
                        CandidateFit(
                            fmt,
                            stored_bytes(target, fitted.result),
                            probe.error({i: effective}, None if bias is None else {i: bias}),
                            weighted_error(w, effective, hessian),
                            round(float(sqnr_db(w, effective)), 3),
                            fitted.method.value,
                            fitted.note,
                        )
                    )
                if bar is not None:
                    bar.advance(bar.task_ids[0])
            matrices.append(MatrixSensitivity(target, fits, dict(unavailable[i])))
    return SensitivityTable(matrices, left, count, time.perf_counter() - started, probe)


# -- writing the chosen mix -----------------------------------------------------------------------


@dataclass
class Written:
    model: onnx.ModelProto
    decisions: list[NodeDecision]
    nbytes: list[int]  # per matrix, bytes of the initializers that replaced its weight


def build_mixed(
    model: onnx.ModelProto,
    table: SensitivityTable,
    formats: Sequence[str],
    config: MixedPrecisionConfig,
    stats: dict[str, LayerStats] | None = None,
    fits: dict[tuple[int, str], Fitted] | None = None,
) -> Written:
    """Rewrite ``model`` (modified in place) with ``formats[i]`` for matrix ``i`` of ``table``.

    ``fits`` may carry fitted weights from an earlier call with the same model and config (a
    benchmark writing many mixes); new fits are added to it.
    """
    method = check_config(config)
    stats = stats or {}
    rewriter = WeightOnlyRewriter(model)
    decisions: list[NodeDecision] = []
    sizes: list[int] = []
    for i, (matrix, fmt) in enumerate(zip(table.matrices, formats, strict=True)):
        target = matrix.target
        option = matrix.option(fmt)
        if option is None:
            raise ValueError(f"{target.name}: {fmt} is not one of its measured formats")
        error = {"predicted_output_rel_mse": option.error, "bytes": float(option.nbytes)}
        if fmt == FLOAT:
            sizes.append(float_bytes(target))
            decisions.append(
                NodeDecision(
                    name=target.name, op_type=target.op_type, quantized=False, weight=target.weight, error=error,
                    reason=f"kept in float by the mixed-precision plan ({format_bytes(option.nbytes)} fit the budget)",
                )
            )
            continue
        fitted = fits.get((i, fmt)) if fits is not None else None
        if fitted is None:
            fitted = fit(read_weight(rewriter.model, target), target, fmt, config.block_size, method, stats)
            if fits is not None:
                fits[(i, fmt)] = fitted
        prefix = rewriter.prefix(target)
        emitted = Emitted()
        activation = target.activation
        result = fitted.result
        if result.input_scale is not None:
            # This matrix's own AWQ factors (fitted alone: its neighbours may use other formats).
            scale, scaled = rewriter.fresh(f"{prefix}_awq_scale"), rewriter.fresh(f"{prefix}_awq_input")
            mul = helper.make_node("Mul", [activation, scale], [scaled], name=rewriter.fresh(f"{prefix}_awq_Mul"))
            emitted.extend(Emitted([mul], [numpy_helper.from_array(result.input_scale.astype(target.dtype), scale)]))
            activation = scaled
        correction = None if target.is_embedding else result.bias
        has_bias = not target.is_embedding and target.bias is not None
        product = rewriter.fresh(f"{prefix}_product") if has_bias or correction is not None else target.output
        weight_part = _weight_nodes(target, result.quantized, activation, product, prefix)
        emitted.extend(weight_part)
        if correction is not None:
            name = rewriter.fresh(f"{prefix}_bias_correction")
            corrected = rewriter.fresh(f"{prefix}_corrected") if has_bias else target.output
            add = helper.make_node("Add", [product, name], [corrected], name=rewriter.fresh(f"{prefix}_correction_Add"))
            emitted.extend(Emitted([add], [numpy_helper.from_array(correction.astype(target.dtype), name)]))
            product = corrected
        if has_bias:
            emitted.extend(rewriter.gemm_bias(target, product, prefix))
        rewriter.replace(target, emitted)
        sizes.append(weight_part.nbytes() + _extra_bytes(target, result))
        q = fitted.result.quantized
        scheme = f"{q.codec.name} block{q.block_size} sym {fitted.method.value} (mixed)"
        if result.input_scale is not None:
            scheme += " +input scale"
        if correction is not None:
            scheme += " +bias correction"
        if fitted.note:
            scheme += f" ({fitted.note})"
        error["weight_sqnr_db"] = option.weight_sqnr_db
        decisions.append(
            NodeDecision(
                name=target.name, op_type=target.op_type, quantized=True, scheme=scheme, weight=target.weight,
                bits=float(q.codec.bits), block_size=q.block_size, method=fitted.method.value, error=error,
            )
        )
    return Written(rewriter.finish(), decisions, sizes)


def plan_metadata(
    table: SensitivityTable, formats: Sequence[str], sizes: Sequence[int], budget: int,
    config: MixedPrecisionConfig, allocation: Allocation, measured: float | None,
) -> dict[str, Any]:
    """The plan as the ``edgeq.mixed_precision`` metadata JSON: enough to audit every choice."""
    total = int(sum(sizes))
    nodes = []
    predicted = 0.0
    for matrix, fmt, size in zip(table.matrices, formats, sizes, strict=True):
        option = matrix.option(fmt)
        predicted += option.error if option else 0.0
        nodes.append({
            "node": matrix.target.name,
            "weight": matrix.target.weight,
            "format": fmt,
            "bytes": int(size),
            "predicted_error": option.error if option else None,
            "candidates": {f.format: {"bytes": f.nbytes, "error": f.error} for f in matrix.fits},
        })
    return {
        "version": 1,
        "budget_bytes": budget,
        "avg_bits_requested": config.avg_bits,
        "budget_counts": "weights of the quantizable matrices: codes + scales + zero points as stored",
        "candidates": resolve_candidates(config),
        "block_size": config.block_size,
        "method": str(getattr(config.method, "value", config.method)),
        "sensitivity": f"measured: relative output squared error, each matrix alone, {table.samples} calibration samples",
        "solver": allocation.solver,
        "optimal": allocation.optimal,
        "weight_bytes": total,
        "bits_per_weight": 8.0 * total / max(table.num_weights, 1),
        "predicted_error": predicted,
        "measured_error": measured,
        "nodes": nodes,
    }


def set_metadata(model: onnx.ModelProto, key: str, value: str) -> None:
    for prop in model.metadata_props:
        if prop.key == key:
            prop.value = value
            return
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value


# -- the handler ----------------------------------------------------------------------------------


@register(MixedPrecisionConfig)
def quantize_mixed(model: onnx.ModelProto, config: MixedPrecisionConfig, inputs: QuantizeInputs) -> QuantizeResult:
    """The handler behind ``edgeq quantize --budget 12MB`` / ``--avg-bits 3``."""
    method = check_config(config)
    if inputs.data is None:
        raise ConfigError("mixed precision measures each matrix's effect on the outputs: pass --data (an .npz, folder or recipe)")
    candidates = resolve_candidates(config)
    summary = QuantizationSummary(model=inputs.model_path, config=config.to_dict())
    summary.weight_bytes_before = weight_bytes(model)
    planned = plan_matrices(model, config)
    targets, left, unavailable = planned
    for skipped in left:
        summary.add(NodeDecision(name=skipped.name, op_type=skipped.op_type, quantized=False, reason=skipped.reason, weight=skipped.weight))
    if not targets:
        summary.notes.append("no MatMul/Gemm/Gather node with a constant float weight: nothing to quantize")
        summary.weight_bytes_after = summary.weight_bytes_before
        return QuantizeResult(model, summary)

    num_weights = sum(t.rows * t.cols for t in targets)
    budget = resolve_budget(config, num_weights)
    # Refuse an impossible budget before measuring anything (AWQ's input scales only add bytes).
    smallest = sum(
        min(planned_bytes(t, fmt, config.block_size) for fmt in candidates if fmt not in unavailable[i])
        for i, t in enumerate(targets)
    )
    check_budget(budget, smallest, config, num_weights)

    stats: dict[str, LayerStats] = {}
    if method in DATA_DRIVEN:
        from edgeq.quantize.schemes.weight_only.scheme import collect_layer_stats

        started = time.perf_counter()
        stats = collect_layer_stats(model, targets, inputs.data, inputs.progress)
        summary.notes.append(f"calibration statistics collected in {time.perf_counter() - started:.1f} s")
    table = measure_sensitivity(model, config, inputs.data, stats, inputs.progress, planned=planned)
    options = table.options()
    check_budget(budget, minimum_bytes(options), config, num_weights)
    allocation = allocate(options, budget)
    formats = [m.fits[j].format for m, j in zip(table.matrices, allocation.choice, strict=True)]

    written = build_mixed(model, table, formats, config, stats)
    for decision in written.decisions:
        summary.add(decision)
    measured = table.probe.model_error(written.model) if table.probe is not None else None
    metadata = plan_metadata(table, formats, written.nbytes, budget, config, allocation, measured)
    set_metadata(written.model, METADATA_KEY, json.dumps(metadata, sort_keys=True))
    summary.weight_bytes_after = weight_bytes(written.model)
    summary.notes.extend(_notes(table, formats, written, budget, allocation, measured, config))
    return QuantizeResult(written.model, summary)


def _notes(
    table: SensitivityTable, formats: Sequence[str], written: Written, budget: int,
    allocation: Allocation, measured: float | None, config: MixedPrecisionConfig,
) -> list[str]:
    total = int(sum(written.nbytes))
    counts = {fmt: formats.count(fmt) for fmt in dict.fromkeys(formats)}
    mix = ", ".join(f"{n} x {fmt}" for fmt, n in counts.items())
    notes = [
        f"mixed precision: {mix}; weights {format_bytes(total)} of the {format_bytes(budget)} budget "
        f"({8 * total / max(table.num_weights, 1):.3f} bits per weight, {len(table.matrices)} matrices; "
        "the budget counts the quantizable matrices' codes, scales and zero points as stored)",
        f"float size of those matrices {format_bytes(table.float_bytes)}; whole model file {format_bytes(written.model.ByteSize())}",
        f"sensitivity: measured output error with each matrix alone quantized, {table.samples} calibration samples, "
        f"{table.probe.runs if table.probe else 0} runs in {table.seconds:.1f} s",
        f"allocation: {allocation.solver}{' (optimal)' if allocation.optimal else f', lower bound {allocation.lower_bound:.4g}'}; "
        f"predicted output error {allocation.error:.4g}" + (f", measured on the written model {measured:.4g}" if measured is not None else ""),
    ]
    if budget >= least_error_bytes(table.options()):
        notes.append(
            f"the budget covers {format_bytes(least_error_bytes(table.options()))}: every matrix takes its most accurate candidate, no trade-off was needed"
        )
    if budget >= table.float_bytes:
        notes.append(f"the budget is at least the float size of the matrices ({format_bytes(table.float_bytes)})")
    if config.avg_bits is not None:
        notes.append(f"--avg-bits {config.avg_bits:g} -> budget {format_bytes(budget)} over {table.num_weights:,} weights")
    return notes
