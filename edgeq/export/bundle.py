"""``export_bundle``: a model, quantized and shaped for one board, in a folder the board can use.

The bundle is what crosses from the workstation to the device, so everything in it is checked
here, where the tools are: the precision plan against the target profile (refusing what the
board cannot run), the graph against the TensorRT lint, and the bundle's ONNX against the
quantized model that went in, in onnxruntime, on real or synthesised inputs. Then the folder is
written in one atomic step: ``model.onnx`` (+ external data), ``calibration.cache`` when the
board's TensorRT calibrates implicitly (DLA), ``build.sh`` with the trtexec command for that
TensorRT, a README for the person at the board, and ``manifest.json`` with every file's sha256.
"""

from __future__ import annotations

import platform
import stat
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx

from edgeq.errors import ConfigError, DataError, UnsupportedError
from edgeq.serialization import Serializable
from edgeq.targets import PrecisionPlan, TargetProfile, Widening, check_plan, load_target

MODEL_NAME = "model.onnx"
CACHE_NAME = "calibration.cache"
BUILD_NAME = "build.sh"
README_NAME = "README.md"
ENGINE_NAME = "model.engine"
DEFAULT_SEQUENCE = 128  # build/verification length of a dynamic non-batch dimension nobody gave
MIN_COSINE = 0.999  # bundle vs the quantized model that went in, per output
CONTRIB = "com.microsoft"


# ----------------------------------------------------------------------------------------------
# What is already in the model


@dataclass
class ModelFormats:
    """The quantization a model already carries (a model from ``edgeq quantize`` or elsewhere)."""

    int8_activations: int = 0  # QuantizeLinear on non-constant tensors
    dq_weights: dict[str, int] = field(default_factory=dict)  # "int4" -> count of constant DQs
    nbits: dict[int, int] = field(default_factory=dict)  # MatMulNBits bits -> count
    bnb4: dict[str, int] = field(default_factory=dict)  # "nf4"/"fp4" -> count
    other_contrib: dict[str, int] = field(default_factory=dict)
    block_sizes: set[int] = field(default_factory=set)

    @property
    def quantized(self) -> bool:
        return bool(self.int8_activations or self.dq_weights or self.nbits or self.bnb4)

    def weights(self) -> str:
        """The weight format that decides the plan: the one TensorRT has least support for."""
        found = {*self.dq_weights, *(f"int{b}" for b in self.nbits), *self.bnb4}
        for name in ("nf4", "fp4", "int2", "int4", "int8"):
            if name in found:
                return name
        return "fp32"

    def describe(self) -> str:
        parts = []
        if self.int8_activations:
            parts.append(f"int8 Q/DQ on {self.int8_activations} activations")
        parts += [f"{n} {k} DequantizeLinear weights" for k, n in sorted(self.dq_weights.items())]
        parts += [f"{n} int{b} MatMulNBits" for b, n in sorted(self.nbits.items())]
        parts += [f"{n} {k} MatMulBnb4" for k, n in sorted(self.bnb4.items())]
        return ", ".join(parts) or "float"


_DQ_NAMES: dict[int, str] = {
    onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "int8", onnx.TensorProto.INT4: "int4",
    onnx.TensorProto.UINT4: "int4",
}
if hasattr(onnx.TensorProto, "INT2"):
    _DQ_NAMES.update({onnx.TensorProto.INT2: "int2", onnx.TensorProto.UINT2: "int2"})


def model_formats(model: onnx.ModelProto) -> ModelFormats:
    from edgeq.graph.proto import GraphIndex, get_attribute

    index = GraphIndex(model.graph)
    found = ModelFormats()
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx"):
            if node.op_type == "QuantizeLinear" and not index.is_constant(node.input[0]):
                found.int8_activations += 1
            elif node.op_type == "DequantizeLinear" and node.input[0] in index.initializers:
                data_type = index.initializers[node.input[0]].data_type
                weight = _DQ_NAMES.get(data_type, "other")
                found.dq_weights[weight] = found.dq_weights.get(weight, 0) + 1
                block = get_attribute(node, "block_size", 0)
                if block:
                    found.block_sizes.add(int(block))  # type: ignore[call-overload]
        elif node.domain == CONTRIB:
            if node.op_type == "MatMulNBits":
                bits = int(get_attribute(node, "bits", 4))  # type: ignore[call-overload]
                found.nbits[bits] = found.nbits.get(bits, 0) + 1
                found.block_sizes.add(int(get_attribute(node, "block_size", 0)))  # type: ignore[call-overload]
            elif node.op_type == "MatMulBnb4":
                kind = "nf4" if int(get_attribute(node, "quant_type", 1)) == 1 else "fp4"  # type: ignore[call-overload]
                found.bnb4[kind] = found.bnb4.get(kind, 0) + 1
                found.block_sizes.add(int(get_attribute(node, "block_size", 0)))  # type: ignore[call-overload]
            else:
                found.other_contrib[node.op_type] = found.other_contrib.get(node.op_type, 0) + 1
    # int8 weight DQs of a W8A8 model are part of the int8 plan, not weight-only.
    if found.int8_activations and "int8" in found.dq_weights:
        del found.dq_weights["int8"]
    return found


# ----------------------------------------------------------------------------------------------
# Inputs: the shapes the bundle is verified and built with


def _value_dims(value: onnx.ValueInfoProto) -> list[int | str]:
    dims: list[int | str] = []
    for dim in value.type.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or "?")
    return dims


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in inits]


def parse_shapes(specs: Sequence[str]) -> dict[str, list[int]]:
    """``["input_ids:1x128"]`` -> ``{"input_ids": [1, 128]}`` (the ``--shape`` option)."""
    shapes: dict[str, list[int]] = {}
    for spec in specs:
        name, sep, dims = spec.rpartition(":")
        try:
            values = [int(d) for d in dims.lower().split("x")] if sep and name else []
        except ValueError:
            values = []
        if not values or any(v < 1 for v in values):
            raise ConfigError(f"--shape: {spec!r} is not NAME:DIMS like input_ids:1x128")
        shapes[name] = values
    return shapes


def resolve_shapes(
    model: onnx.ModelProto, given: Mapping[str, Sequence[int]] | None, sample: Mapping[str, np.ndarray] | None
) -> tuple[dict[str, list[int]], list[str]]:
    """A concrete shape per input: ``--shape``, else the data's (batch 1), else 1 / 128 for dynamic dims."""
    shapes: dict[str, list[int]] = {}
    notes: list[str] = []
    assumed: list[str] = []
    inputs = graph_inputs(model)
    names = {v.name for v in inputs}
    for name in given or {}:
        if name not in names:
            raise ConfigError(f"--shape: {name!r} is not an input of the model; inputs are {', '.join(sorted(names))}")
    for value in inputs:
        dims = _value_dims(value)
        if given and value.name in given:
            shape = list(given[value.name])
            if len(shape) != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(dims, shape, strict=False)):
                raise ConfigError(f"--shape: {value.name} {shape} does not fit the model's {dims}")
            shapes[value.name] = shape
            continue
        if sample is not None and value.name in sample:
            shape = [int(s) for s in np.asarray(sample[value.name]).shape]
            if dims and not isinstance(dims[0], int):
                shape[0] = 1
            shapes[value.name] = shape
            continue
        shape = []
        for axis, dim in enumerate(dims):
            if isinstance(dim, int):
                shape.append(dim)
            elif axis == 0:
                shape.append(1)
            else:
                shape.append(DEFAULT_SEQUENCE)
                assumed.append(f"{value.name}[{axis}] ({dim})")
        shapes[value.name] = shape
    if assumed:
        notes.append(
            f"dynamic dims {', '.join(assumed)} built and verified at {DEFAULT_SEQUENCE}; "
            "pass --shape NAME:1x256 (or --data) to choose"
        )
    return shapes, notes


def _gather_rows(model: onnx.ModelProto, name: str) -> int | None:
    """Rows of the table an integer input indexes (so synthetic ids stay in range)."""
    inits = {t.name: t for t in model.graph.initializer}
    sizes = []
    for node in model.graph.node:
        if node.op_type in ("Gather", "GatherBlockQuantized") and len(node.input) > 1 and node.input[1] == name:
            table = inits.get(node.input[0])
            if table is not None and table.dims:
                sizes.append(int(table.dims[0]))
    return min(sizes) if sizes else None


def synthetic_feeds(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs: normal floats, in-range ids for lookups, ones for other integers."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for value in graph_inputs(model):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        shape = tuple(shapes[value.name])
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            rows = _gather_rows(model, value.name)
            feeds[value.name] = (rng.integers(0, rows, size=shape) if rows else np.ones(shape)).astype(dtype)
        elif dtype == np.bool_:
            feeds[value.name] = np.ones(shape, dtype=bool)
        else:
            raise UnsupportedError(f"input {value.name}: cannot synthesise {dtype} data; pass --data")
    return feeds


# ----------------------------------------------------------------------------------------------
# Verification in onnxruntime


def run_onnxruntime(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs with graph optimizations off: every Q/DQ computed as written, so neither fused int8
    kernels (which saturate on x86 CPUs without VNNI) nor float fusions blur a comparison."""
    import onnxruntime as ort

    from edgeq.graph.io import temporary_model_file

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    on_disk = cast(AbstractContextManager[Path], temporary_model_file(model))
    with on_disk as path:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return [np.asarray(o) for o in session.run(None, {k: v for k, v in feeds.items() if k in names})]


def compare_outputs(
    names: Sequence[str], reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]
) -> dict[str, dict[str, float]]:
    from edgeq.metrics import cosine

    result = {}
    for name, ref, out in zip(names, reference, candidate, strict=True):
        ref64, out64 = np.asarray(ref, np.float64), np.asarray(out, np.float64)
        result[name] = {
            "cosine": float(cosine(ref64, out64)) if ref64.size else 1.0,
            "max_abs_diff": float(np.max(np.abs(ref64 - out64))) if ref64.size else 0.0,
            "finite": bool(np.isfinite(out64).all()),
        }
    return result


# ----------------------------------------------------------------------------------------------
# The result


@dataclass
class ExportResult(Serializable):
    """What export did: the bundle, the plan, and the evidence that the bundle is right."""

    schema_type = "edgeq.ExportResult"
    schema_version = 1

    bundle: str
    target: str
    plan: PrecisionPlan
    files: list[str]
    model_formats: str = ""
    quantization: dict[str, Any] = field(default_factory=dict)
    widening: dict[str, Any] | None = None
    fp16: str | None = None
    lint: str = "not applicable"
    verification: dict[str, Any] = field(default_factory=dict)
    build_command: str | None = None
    engine: str | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def _from_data(cls, data: dict[str, Any]) -> ExportResult:
        plan = PrecisionPlan.from_dict(data["plan"], "plan")
        return cls(**{**data, "plan": plan})

    def format_text(self) -> str:
        lines = [f"bundle: {self.bundle}", f"plan: {self.plan.describe()}", f"model: {self.model_formats}"]
        if self.quantization:
            lines.append(f"quantized: {self.quantization.get('text', '')}".rstrip())
        if self.widening:
            lines.append(f"widening: {self.widening['text']}")
        if self.fp16:
            lines.append(self.fp16)
        lines.append(f"TensorRT lint: {self.lint}")
        verified = self.verification.get("outputs", {})
        if verified:
            worst = min(v["cosine"] for v in verified.values())
            lines.append(
                f"verified in onnxruntime against {self.verification.get('reference', 'the quantized model')} "
                f"on {self.verification.get('inputs', 'inputs')}: min cosine {worst:.6f}"
            )
        if self.build_command:
            lines.append(f"on the board: ./build.sh   ({self.build_command})")
        if self.engine:
            lines.append(f"engine: {self.engine}")
        lines += [f"note: {n}" for n in [*self.plan.notes, *self.notes]]
        lines.append("files: " + ", ".join(self.files))
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Export


def _check_output(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise ConfigError(f"-o {output}: exists and is a file; give a folder for the bundle")
    if output.is_dir() and any(output.iterdir()) and not (output / "manifest.json").is_file():
        raise ConfigError(
            f"-o {output}: exists, is not empty and is not an edgeq bundle; choose another folder (it would be replaced)"
        )


def _quantize(
    model: onnx.ModelProto,
    model_path: Path,
    plan: PrecisionPlan,
    profile: TargetProfile,
    method: str | None,
    source: Any,
    table: Any,
    progress: bool,
) -> tuple[onnx.ModelProto, Any]:
    from edgeq.quantize.api import QuantizeInputs, quantize
    from edgeq.quantize.config import Int8Config, WeightOnlyConfig

    if plan.activations == "int8":
        if source is None and table is None:
            raise DataError("--activations int8 needs calibration: pass --data (samples) or --calib (a table from edgeq calibrate)")
        # TensorRT's rules for TensorRT boards; for onnxruntime the same numbers in the layout its
        # CPU kernels fuse (and, where the board file says so, weights that cannot saturate).
        config: Any = (
            Int8Config()
            if profile.uses_tensorrt
            else Int8Config(layout="onnxruntime", reduce_range=profile.onnx.int8_reduce_range)
        )
    else:
        weights = plan.widening.source if plan.widening else plan.weights
        if profile.uses_tensorrt:
            fmt = "bnb4" if weights in ("nf4", "fp4") else "qdq"
        else:
            fmt = plan.onnx_format or "matmulnbits"
        config = WeightOnlyConfig(
            weights=weights,  # type: ignore[arg-type]
            block_size=plan.block_size or 32,
            method=method or "rtn",  # type: ignore[arg-type]
            onnx_format=fmt,  # type: ignore[arg-type]
            symmetric=True,
            # TensorRT's INT4 weight-only covers MatMul/Gemm; a quantized Gather would not parse.
            embeddings=not profile.uses_tensorrt,
        )
    result = quantize(model, config, QuantizeInputs(source, table, str(model_path), progress))
    return result.model, result.summary


def _tool_versions(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    import onnxruntime

    import edgeq

    versions = {
        "edgeq": edgeq.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    versions.update(extra or {})
    return versions


def _tensor_specs(model: onnx.ModelProto, values: Sequence[onnx.ValueInfoProto]) -> list[Any]:
    from edgeq_runtime.manifest import TensorSpec

    specs = []
    for value in values:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)).name
        specs.append(TensorSpec(name=value.name, dtype=dtype, shape=_value_dims(value)))
    return specs


def render_readme(
    profile: TargetProfile, plan: PrecisionPlan, result: ExportResult, shapes: Mapping[str, Sequence[int]]
) -> str:
    """What the person at the board needs: what this is, what it expects, how to build and run it."""
    lines = [
        f"# {Path(result.bundle).name}: {profile.display_name}",
        "",
        f"Exported by edgeq for **{profile.name}**: {plan.describe()}.",
        "",
    ]
    if profile.uses_tensorrt:
        lines += [
            "## On the board",
            "",
            f"Expects JetPack {plan.jetpack} (TensorRT {plan.tensorrt}). An engine runs only on the GPU and",
            "TensorRT version it was built with, so it is built here, on the board:",
            "",
            "```sh",
            "./build.sh                 # trtexec; writes model.engine and timing.cache",
            "edgeq-run bench .          # latency (and energy where the rails are readable)",
            "```",
            "",
            f"`build.sh` runs: `{result.build_command}`",
            "",
        ]
        if plan.calibration_cache:
            lines += [
                "`calibration.cache` holds the per-tensor int8 scales (TensorRT implicit quantization, "
                "EntropyCalibration2); keep it next to model.onnx.",
                "",
            ]
        if plan.dla_core is not None:
            lines += [
                f"Runs on DLA core {plan.dla_core}; layers DLA cannot run fall back to the GPU **silently**: "
                "`./build.sh --verbose` lists where each layer went.",
                "",
            ]
    else:
        lines += [
            "## On the device",
            "",
            "Runs with onnxruntime (CPU):",
            "",
            "```sh",
            "pip install edgeq-runtime",
            "edgeq-run bench .",
            "```",
            "",
        ]
    lines += ["## Inputs and outputs", ""]
    for name, shape in shapes.items():
        lines.append(f"- input `{name}`, built and verified at shape {list(shape)}")
    lines += ["", "## Precision", ""]
    lines.append(f"- {plan.describe()}")
    if result.widening:
        lines.append(f"- {result.widening['text']}")
    if result.fp16:
        lines.append(f"- {result.fp16}")
    for note in [*plan.notes, *result.notes]:
        lines.append(f"- {note}")
    outputs = result.verification.get("outputs", {})
    if outputs:
        worst = min(v["cosine"] for v in outputs.values())
        lines.append(f"- checked in onnxruntime against {result.verification.get('reference')}: min cosine {worst:.6f}")
    lines += [
        "",
        "## Integrity",
        "",
        "`manifest.json` lists every file with its sha256; `edgeq inspect <bundle>` (workstation) or the runtime "
        "checks them before anything runs.",
        "",
    ]
    return "\n".join(lines)


def export_bundle(
    model_path: str | Path,
    target: str | Path | TargetProfile,
    weights: str | None = None,
    activations: str | None = None,
    data: str | Path | Any = None,
    calib: str | Path | None = None,
    dla: bool = False,
    allow_widen: bool = False,
    output: str | Path = "bundle",
    *,
    jetpack: str | None = None,
    block_size: int | None = None,
    method: str | None = None,
    dla_core: int = 0,
    shapes: Mapping[str, Sequence[int]] | None = None,
    samples: int | None = None,
    batch_size: int = 8,
    build_engine: bool = False,
    progress: bool = True,
) -> ExportResult:
    """Quantize (if asked), fit to ``target``, verify, and write the bundle folder atomically."""
    from edgeq.fileio import atomic_directory
    from edgeq.graph.io import load_model, lower_ir_version, save_model

    model_path = Path(model_path)
    output = Path(output)
    profile = load_target(target)
    _check_output(output)
    model = load_model(model_path)
    formats = model_formats(model)
    notes: list[str] = []

    if formats.quantized and (weights or activations):
        raise ConfigError(
            f"{model_path}: already quantized ({formats.describe()}); export it without --weights/--activations, "
            "or pass the float model"
        )
    if formats.other_contrib and profile.uses_tensorrt:
        ops = ", ".join(sorted(formats.other_contrib))
        raise UnsupportedError(f"{model_path}: uses onnxruntime-only ops ({ops}) that TensorRT cannot parse; export for x86-cpu/arm64-cpu")
    if formats.quantized:
        weights = formats.weights()
        activations = "int8" if formats.int8_activations else "none"
        if activations == "int8":
            weights = "int8"
        if block_size is None and formats.block_sizes:
            block_size = max(formats.block_sizes)
    elif activations == "int8" and weights is None:
        weights = "int8"
    if build_engine:
        from edgeq.export.engine import import_tensorrt

        if not profile.uses_tensorrt:
            raise ConfigError(f"--build-engine: {profile.name} runs onnxruntime; there is no engine to build")
        import_tensorrt()

    plan = check_plan(profile, weights, activations, dla, allow_widen=allow_widen, block_size=block_size,
                      jetpack=jetpack, dla_core=dla_core)
    if (formats.quantized and plan.block_size and profile.uses_tensorrt and plan.stored_weights == "int4"
            and formats.block_sizes - {plan.block_size}):
        plan.notes.append(
            f"the model uses block size {sorted(formats.block_sizes)}; TensorRT documents only 128 for INT4"
        )

    source = None
    table = None
    if data is not None:
        from edgeq.data import load_data

        source = load_data(data, model, samples=samples, batch_size=batch_size)
    if calib is not None:
        from edgeq.calibrate import CalibrationTable

        table = CalibrationTable.load(calib)
        table.check_model(model_path)
    sample = next(iter(source.batches(1)), None) if source is not None else None
    build_shapes, shape_notes = resolve_shapes(model, shapes, sample)
    notes += shape_notes
    feeds = dict(sample) if sample is not None else synthetic_feeds(model, build_shapes)
    inputs_text = f"1 sample of {source.origin}" if sample is not None and source is not None else "synthetic inputs"

    # 1. The quantized model that goes in (the reference the bundle must match).
    quant_summary: dict[str, Any] = {}
    cache_text: str | None = None
    if plan.quantization == "implicit":
        cache_text, bundle_model, reference, ref_name = _implicit(model, formats, plan, source, table, progress)
        notes.append(f"{len(cache_text.splitlines()) - 1} tensor scales in {CACHE_NAME}")
    else:
        needs_quantizer = not formats.quantized and (plan.quantization == "explicit" or plan.widening is not None)
        if needs_quantizer:
            reference, summary = _quantize(model, model_path, plan, profile, method, source, table, progress)
            quant_summary = {
                "text": summary.format_text(max_rows=0).splitlines()[0],
                "quantized_nodes": len(summary.quantized),
                "left_in_float": [{"name": n.name, "op_type": n.op_type, "reason": n.reason} for n in summary.left_in_float],
                "weight_bytes_before": summary.weight_bytes_before,
                "weight_bytes_after": summary.weight_bytes_after,
                "notes": list(summary.notes),
            }
            ref_name = "the quantized model"
        else:
            reference = model
            ref_name = "the input model"
        bundle_model = onnx.ModelProto()
        bundle_model.CopyFrom(reference)

    # 2. Into containers the target's runtime has.
    widen_report = None
    if profile.uses_tensorrt and plan.quantization != "implicit":
        widen_report = _fit_tensorrt(bundle_model, plan, allow_widen)
    if not profile.uses_tensorrt:
        from edgeq.quantize.schemes.int8.scheme import rewrite_for_onnxruntime

        # A model quantized for TensorRT gets the same exact rewrites as --layout onnxruntime.
        rewritten = rewrite_for_onnxruntime(bundle_model)
        if rewritten:
            notes.append(f"for onnxruntime: {rewritten}")
    fp16_text = None
    if plan.fp16_in_graph:
        from edgeq.graph.passes.fp16 import Fp16Pass

        # int8 Q/DQ keep fp32 types and INT4 blocks already need opset 21 (>= 19, where Q/DQ take
        # fp16 scales): no opset conversion is needed for fp16.
        fp16_pass = Fp16Pass()
        fp16_pass.apply(bundle_model)
        fp16_text = fp16_pass.report.describe()
    if profile.uses_tensorrt:
        from edgeq.export.widen import lower_opset

        lower_opset(bundle_model, profile.onnx.preferred_opset)
    # Board runtimes read older IR versions than onnx writes by default.
    lower_ir_version(bundle_model)

    # 3. Checks: TensorRT lint, then onnxruntime against the reference.
    lint = "not applicable"
    if profile.uses_tensorrt and any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in bundle_model.graph.node):
        violations = tensorrt_violations(bundle_model)
        if violations:
            shown = "; ".join(str(v) for v in violations[:3])
            raise UnsupportedError(
                f"{model_path}: {len(violations)} TensorRT Q/DQ rule(s) broken for {profile.name}: {shown}"
            )
        lint = "passed"
    output_names = [o.name for o in bundle_model.graph.output]
    reference_out = run_onnxruntime(reference, feeds)
    bundle_out = run_onnxruntime(bundle_model, feeds)
    compared = compare_outputs(output_names, reference_out, bundle_out)
    strict = plan.quantization != "implicit" or not formats.quantized
    for name, values in compared.items():
        if not values["finite"]:
            raise UnsupportedError(f"{model_path}: output {name} of the exported model is not finite in onnxruntime")
        if strict and values["cosine"] < MIN_COSINE:
            raise UnsupportedError(
                f"{model_path}: output {name} of the exported model drifts from {ref_name} "
                f"(cosine {values['cosine']:.5f} < {MIN_COSINE}); export without fp16/widening is not possible here"
            )
    verification = {"reference": ref_name, "inputs": inputs_text, "outputs": compared,
                    "shapes": {k: list(v) for k, v in build_shapes.items()}}

    result = ExportResult(
        bundle=str(output), target=profile.name, plan=plan, files=[], model_formats=formats.describe(),
        quantization=quant_summary,
        widening=None if widen_report is None or not widen_report.nodes else {"text": widen_report.describe(), **widen_report.to_dict()},
        fp16=fp16_text, lint=lint, verification=verification, notes=notes,
    )
    dynamic = {
        v.name: build_shapes[v.name] for v in graph_inputs(bundle_model)
        if any(not isinstance(d, int) for d in _value_dims(v))
    }
    if profile.uses_tensorrt:
        from edgeq.export.build_script import trtexec_command

        result.build_command = trtexec_command(plan, profile.memory.workspace_mib, dynamic or None)

    # 4. The folder, in one atomic step.
    with atomic_directory(output) as tmp:
        save_model(bundle_model, tmp / MODEL_NAME)
        files = [MODEL_NAME]
        if (tmp / f"{MODEL_NAME}.data").is_file():
            files.append(f"{MODEL_NAME}.data")
        if cache_text is not None:
            (tmp / CACHE_NAME).write_text(cache_text, encoding="utf-8")
            files.append(CACHE_NAME)
        engine_name = None
        trt_version = None
        if build_engine:
            from edgeq.export.engine import build_engine as build

            built = build(tmp / MODEL_NAME, plan, profile.memory.workspace_mib, tmp / ENGINE_NAME,
                          calibration_cache=tmp / CACHE_NAME if cache_text is not None else None, shapes=dynamic)
            engine_name, trt_version = ENGINE_NAME, built.tensorrt_version
            files += [ENGINE_NAME, built.timing_cache.name]
            result.engine = ENGINE_NAME
        if profile.uses_tensorrt:
            from edgeq.export.build_script import render_build_script
            from edgeq.fileio import sha256_file

            script = tmp / BUILD_NAME
            script.write_text(
                render_build_script(plan, profile.memory.workspace_mib, dynamic or None,
                                    checksums={f: sha256_file(tmp / f) for f in files
                                               if f in (MODEL_NAME, f"{MODEL_NAME}.data", CACHE_NAME)},
                                    edgeq_version=_tool_versions()["edgeq"]),
                encoding="utf-8",
            )
            script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            files.append(BUILD_NAME)
        files.append(README_NAME)
        result.files = [*files, "manifest.json"]
        (tmp / README_NAME).write_text(render_readme(profile, plan, result, build_shapes), encoding="utf-8")
        _write_manifest(tmp, files, bundle_model, profile, plan, result, dynamic, engine_name, trt_version)
    return result


def tensorrt_violations(model: onnx.ModelProto) -> list[Any]:
    """The TensorRT lint, plus the INT4 weight-only rules (blocked DequantizeLinear -> MatMul/Gemm).

    Weight-only layers have no activation Q/DQ and block their scales along K (the second-to-last
    weight axis) by design: the lint's int8 rules ``unquantized-input`` and ``weight-axis`` do not
    apply to them, TensorRT's block-quantization rules do (INT4, strictly positive scales, zero
    point 0, one blocked axis, an even last dimension).
    """
    from edgeq.graph.proto import GraphIndex, get_attribute
    from edgeq.graph.trt_lint import LintViolation, lint_tensorrt

    index = GraphIndex(model.graph)
    names = {id(n): n.name or f"{n.op_type}_{i}" for i, n in enumerate(model.graph.node)}
    blocked: set[str] = set()
    readers: set[str] = set()
    own: list[Any] = []
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or not get_attribute(node, "block_size", 0):
            continue
        name = names[id(node)]
        blocked.add(name)
        readers.update(names[id(r)] for r in index.readers(node.output[0]))
        weight = index.initializers.get(node.input[0])
        if weight is None:
            own.append(LintViolation("weight-only-not-constant", name, "blocked DequantizeLinear input is not a constant weight"))
            continue
        if weight.data_type not in (onnx.TensorProto.INT4, onnx.TensorProto.INT8):
            kind = onnx.TensorProto.DataType.Name(weight.data_type).lower()
            own.append(LintViolation("weight-only-type", name, f"{kind} blocks; TensorRT takes INT4 (signed) weight-only blocks"))
        rank = len(weight.dims)
        axis = int(get_attribute(node, "axis", 1))  # type: ignore[call-overload]
        axis = axis + rank if axis < 0 else axis
        if rank >= 2 and axis != rank - 2:
            own.append(LintViolation("weight-only-axis", name, f"blocks along axis {axis}; TensorRT blocks a MatMul weight along K (axis {rank - 2})"))
        if rank and weight.dims[-1] % 2:
            own.append(LintViolation("weight-only-shape", name, f"last dimension {weight.dims[-1]} is odd; INT4 packs two values per byte"))
        for reader in index.readers(node.output[0]):
            if reader.op_type not in ("MatMul", "Gemm") or list(reader.input).index(node.output[0]) != 1:
                own.append(LintViolation("weight-only-reader", name, f"feeds {reader.op_type}; TensorRT weight-only is DequantizeLinear -> MatMul/Gemm weight"))
    kept = [v for v in lint_tensorrt(model)
            if not (v.rule in ("unquantized-input", "weight-axis") and (v.node in blocked or v.node in readers))]
    return kept + own


def _implicit(
    model: onnx.ModelProto, formats: ModelFormats, plan: PrecisionPlan, source: Any, table: Any, progress: bool
) -> tuple[str, onnx.ModelProto, onnx.ModelProto, str]:
    """(cache text, bundle model, reference, reference name) for DLA's implicit int8."""
    from edgeq.calibrate.trt_cache import format_cache
    from edgeq.export.build_script import trt_version_code

    assert plan.tensorrt is not None
    if formats.quantized:
        from edgeq.export.strip_qdq import strip_qdq

        float_model, amax = strip_qdq(model)
        reference, name = model, "the Q/DQ model (DLA gets it as float + scales)"
    else:
        if table is None:
            if source is None:
                raise DataError("--dla with int8 needs calibration for TensorRT's cache: pass --data or --calib")
            from edgeq.calibrate import calibrate

            table = calibrate(model, source, method="entropy", tensors="all", progress=progress)
        amax = {t: table.amax(t) for t in table.tensors}
        float_model, reference, name = model, model, "the float model (int8 scales in calibration.cache)"
    text = format_cache(amax, str(trt_version_code(plan.tensorrt)), "EntropyCalibration2")
    bundle = onnx.ModelProto()
    bundle.CopyFrom(float_model)
    return text, bundle, reference, name


def _fit_tensorrt(model: onnx.ModelProto, plan: PrecisionPlan, allow_widen: bool) -> Any:
    """Contrib MatMuls to standard ONNX, and widening, for a TensorRT target (in place)."""
    from edgeq.export.widen import WidenReport, convert_contrib_matmuls, widen_weights

    report = convert_contrib_matmuls(model)
    widened_to_float = [n for n in report.nodes if n.container == "float"]
    if widened_to_float and plan.widening is None:
        if not allow_widen:
            raise UnsupportedError(
                f"{plan.target}: {len(widened_to_float)} weights ({widened_to_float[0].source}) have no TensorRT form; "
                "pass --allow-widen to store them as fp16, or re-quantize with --format qdq"
            )
        plan.widening = Widening(widened_to_float[0].source.split()[0], "fp16", "no exact TensorRT container")
    if plan.widening is not None:
        container = "int4" if plan.widening.container == "int4" else "float"
        more = widen_weights(model, container)
        report = WidenReport(nodes=[*report.nodes, *more.nodes], notes=[*report.notes, *more.notes])
    leftover = sorted({n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if leftover:
        raise UnsupportedError(f"{plan.target}: the model still has ops TensorRT cannot parse: {', '.join(leftover)}")
    return report


def _write_manifest(
    folder: Path, files: list[str], model: onnx.ModelProto, profile: TargetProfile, plan: PrecisionPlan,
    result: ExportResult, dynamic: Mapping[str, Sequence[int]], engine: str | None, trt_version: str | None,
) -> None:
    from edgeq_runtime.manifest import Manifest, utc_now_iso

    from edgeq.graph.opset import opset_version

    strongly = plan.strongly_typed and plan.dla_core is None
    target: dict[str, Any] = {
        "name": profile.name,
        "display_name": profile.display_name,
        "backend": "tensorrt" if profile.uses_tensorrt else "ort",
        "opset": opset_version(model),
        "profile_source": Path(profile.source).name,
    }
    if profile.uses_tensorrt:
        target.update({
            "jetpack": plan.jetpack,
            "tensorrt_version": plan.tensorrt,
            "compute_capability": profile.gpu.compute_capability if profile.gpu else None,
            "strongly_typed": strongly,
            "fp16": (not strongly) and plan.float_precision == "fp16",
            "int8": (not strongly) and (plan.quantization == "implicit" or plan.activations == "int8"),
            "dla_core": plan.dla_core,
            "gpu_fallback": plan.gpu_fallback,
            "workspace_mib": profile.memory.workspace_mib,
            "calibration_cache": CACHE_NAME if plan.calibration_cache else None,
            "build_shapes": {k: list(v) for k, v in dynamic.items()},
        })
    precision = {
        **plan.to_dict()["_data"],
        "description": plan.describe(),
        "model_formats": result.model_formats,
        "quantization": result.quantization,
        "widening": result.widening,
        "fp16": result.fp16,
        "tensorrt_lint": result.lint,
        "verification": result.verification,
        "notes": [*plan.notes, *result.notes],
    }
    manifest = Manifest(
        model=MODEL_NAME,
        files=Manifest.describe_files(folder, files),
        inputs=_tensor_specs(model, graph_inputs(model)),
        outputs=_tensor_specs(model, list(model.graph.output)),
        precision=precision,
        target=target,
        tool_versions=_tool_versions({"tensorrt": trt_version} if trt_version else None),
        engine=engine,
        created=utc_now_iso(),
    )
    manifest.write(folder)


# ----------------------------------------------------------------------------------------------
# Reading a bundle back (`edgeq inspect bundle/`)


def inspect_bundle(path: str | Path) -> tuple[Any, list[str]]:
    """(manifest, problems): every file checked against its sha256; an unreadable manifest is an error."""
    from edgeq_runtime.errors import BundleError
    from edgeq_runtime.manifest import Manifest

    try:
        manifest = Manifest.read(path)
        return manifest, manifest.verify(path)
    except BundleError as exc:
        raise ConfigError(str(exc)) from None


def format_bundle(path: str | Path, manifest: Any, problems: Sequence[str]) -> str:
    """The manifest summary a person reads before copying a bundle to a board."""
    target = manifest.target
    precision = manifest.precision
    lines = [f"bundle: {path}  (created {manifest.created or '?'})"]
    where = target.get("name", "?")
    if target.get("tensorrt_version"):
        where += f"  JetPack {target.get('jetpack')}, TensorRT {target['tensorrt_version']}"
    lines.append(f"target: {where}  backend {target.get('backend', '?')}")
    if precision.get("description"):
        lines.append(f"precision: {precision['description']}")
    widening = precision.get("widening")
    if isinstance(widening, dict) and widening.get("text"):
        lines.append(f"widening: {widening['text']}")
    for title, tensors in (("inputs", manifest.inputs), ("outputs", manifest.outputs)):
        lines.append(f"{title}:")
        lines += [f"  {t.name}: {t.dtype} [{', '.join(str(d) for d in t.shape)}]" for t in tensors]
    lines.append("files:")
    bad = {p.split(":", 1)[0] for p in problems}
    for entry in manifest.files:
        status = "MISMATCH" if entry.path in bad else "ok"
        lines.append(f"  {entry.path}  {entry.bytes:,} bytes  sha256 {entry.sha256[:12]}…  {status}")
    versions = ", ".join(f"{k} {v}" for k, v in manifest.tool_versions.items())
    if versions:
        lines.append(f"tools: {versions}")
    lines.append("checksums: all files match" if not problems else f"checksums: {len(problems)} problem(s)")
    return "\n".join(lines)
