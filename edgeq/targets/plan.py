"""A (weights, activations, DLA) request checked against a board: the precision plan, or a refusal.

``check_plan`` combines the board's profile with the TensorRT facts and refuses what the target
cannot run with a message that names the target, the precision and what would work instead, so a
bundle never promises an engine the board cannot build. The ``PrecisionPlan`` it returns is the
contract export writes down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq.errors import ConfigError, UnsupportedError
from edgeq.serialization import Serializable
from edgeq.targets.facts import (
    FP4_MIN_COMPUTE,
    FP8_MIN_COMPUTE,
    INT4_TRT_BLOCK,
    TRT_DLA_ABSENT,
    TRT_MIN_VERSION,
    TRT_STRONGLY_TYPED_MIN,
    format_version,
    parse_version,
)
from edgeq.targets.loading import list_targets, load_target
from edgeq.targets.profile import PRECISION_KEYS, TargetProfile

# "fp4" is bitsandbytes' FP4 (MatMulBnb4 levels); "nvfp4" is NVIDIA's E2M1 in blocks of 16 with
# E4M3 block scales, the FP4 TensorRT runs on Blackwell. "fp8" (E4M3) is W8A8 only.
WEIGHT_FORMATS = ("fp32", "fp16", "int8", "int4", "int2", "nf4", "fp4", "fp8", "nvfp4")
ACTIVATION_FORMATS = ("none", "int8", "fp8")
NVFP4_BLOCK = 16  # E2M1 values per E4M3 scale: fixed by the format (TensorRT and ModelOpt)


@dataclass
class Widening:
    """A weight format TensorRT lacks, stored in a container it has (accuracy kept, memory not)."""

    source: str  # "int2" | "nf4" | "fp4"
    container: str  # "int4" | "fp16"
    reason: str


@dataclass
class PrecisionPlan(Serializable):
    """What the bundle will hold and how the board builds it: the contract export writes down."""

    schema_type = "edgeq.PrecisionPlan"
    schema_version = 1

    target: str
    backend: str  # "tensorrt" | "onnxruntime"
    weights: str  # requested weight format ("fp32" = leave float)
    activations: str  # "int8" | "none"
    jetpack: str | None = None
    tensorrt: str | None = None
    stored_weights: str = "fp32"  # what the bundle actually stores after widening
    onnx_format: str | None = None  # "qdq" | "matmulnbits" | "bnb4" | None
    block_size: int | None = None
    float_precision: str = "fp32"  # "fp16" | "fp32": the precision of the float parts
    fp16_in_graph: bool = False  # float parts rewritten to fp16 in the ONNX (strongly typed builds)
    quantization: str = "none"  # "explicit" (Q/DQ in the graph) | "implicit" (calibration cache) | "none"
    strongly_typed: bool = False
    dla_core: int | None = None
    gpu_fallback: bool = False
    calibration_cache: bool = False
    widening: Widening | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def _from_data(cls, data: dict[str, Any]) -> PrecisionPlan:
        widening = data.get("widening")
        rest = {k: v for k, v in data.items() if k != "widening"}
        return cls(widening=Widening(**widening) if widening else None, **rest)

    @property
    def tensorrt_version(self) -> tuple[int, ...] | None:
        return None if self.tensorrt is None else parse_version(self.tensorrt)

    def describe(self) -> str:
        """One line for the export summary."""
        if self.activations in ("int8", "fp8"):
            kind = "fp8 (E4M3)" if self.activations == "fp8" else "int8"
            what = f"{kind} weights + {kind} activations (W8A8)"
        elif self.weights in ("fp32", "fp16"):
            what = "float"
        else:
            what = f"{self.weights} weight-only"
            if self.block_size:
                what += f" (block {self.block_size})"
        if self.widening is not None:
            what += f", stored as {self.widening.container}"
        where = self.target
        if self.tensorrt:
            where += f" (JetPack {self.jetpack}, TensorRT {self.tensorrt})"
        floats = f"float parts {self.float_precision}"
        dla = f", DLA core {self.dla_core}" + (" + GPU fallback" if self.gpu_fallback else "") if self.dla_core is not None else ""
        return f"{what}; {floats}; {self.quantization} quantization{dla} -> {where}"


def _requested_key(weights: str, activations: str) -> str:
    if activations in ("int8", "fp8"):
        return activations
    if weights == "nvfp4":
        return "fp4"
    return {"fp16": "fp16", "int8": "int8_weight_only", "int4": "int4_weight_only", "int2": "int2_weight_only",
            "nf4": "nf4_weight_only", "fp4": "fp4_weight_only"}.get(weights, "")


def _targets_with(key: str, trt_min: tuple[int, ...] | None = None, kind: str | None = None) -> list[str]:
    """Shipped boards (of ``kind`` first) whose hardware and newest JetPack run ``key``: the hint of what works."""
    names = []
    profiles = list_targets()
    if kind is not None and any(p.kind == kind and p.precision.allows(key) for p in profiles):
        profiles = [p for p in profiles if p.kind == kind]
    for profile in profiles:
        if not profile.precision.allows(key):
            continue
        if trt_min is not None and profile.tensorrt is not None:
            newest = max(parse_version(v) for v in profile.tensorrt.jetpack.values())
            if newest < trt_min:
                continue
        names.append(profile.name)
    return names


def check_plan(
    target: TargetProfile | str | Path,
    weights: str | None = None,
    activations: str | None = None,
    dla: bool = False,
    *,
    allow_widen: bool = False,
    block_size: int | None = None,
    jetpack: str | None = None,
    dla_core: int = 0,
) -> PrecisionPlan:
    """Decide how a (weights, activations, dla) request lands on ``target``, or refuse it.

    ``weights``: fp32 (leave float), fp16, int8, int4, int2, nf4, fp4; ``activations``: none or int8.
    Refusals are ``UnsupportedError`` naming the target, the precision and what would work.
    """
    profile = load_target(target)
    weights = (weights or "fp32").lower()
    activations = (activations or "none").lower()
    if weights not in WEIGHT_FORMATS:
        raise ConfigError(f"--weights: unknown value {weights!r}; expected one of {', '.join(WEIGHT_FORMATS)}")
    if activations not in ACTIVATION_FORMATS:
        raise ConfigError(
            f"--activations: unknown value {activations!r}; expected one of {', '.join(ACTIVATION_FORMATS)}"
        )
    if activations in ("int8", "fp8") and weights != activations:
        raise ConfigError(f"--weights {weights} with --activations {activations}: W8A8 needs --weights {activations}")
    if weights == "fp8" and activations != "fp8":
        raise ConfigError("--weights fp8: FP8 is W8A8 here; add --activations fp8")

    versions = profile.tensorrt_version(jetpack)
    jp, trt_text = versions if versions else (None, None)
    trt = parse_version(trt_text) if trt_text else None
    where = profile.name + (f" (JetPack {jp}, TensorRT {trt_text})" if trt_text else "")
    plan = PrecisionPlan(
        target=profile.name, backend=profile.backend, weights=weights, activations=activations,
        jetpack=jp, tensorrt=trt_text, stored_weights=weights if weights != "fp16" else "fp32",
    )
    key = _requested_key(weights, activations)

    if dla:
        _plan_dla(profile, plan, where, key, trt, dla_core)
    elif profile.uses_tensorrt:
        assert trt is not None
        _plan_tensorrt(profile, plan, where, key, trt, allow_widen)
    else:
        _plan_cpu(profile, plan, where, key)

    if plan.stored_weights in ("int4", "int2") or (plan.stored_weights == "int8" and activations == "none"):
        plan.block_size = block_size or (INT4_TRT_BLOCK if profile.uses_tensorrt else 32)
        if profile.uses_tensorrt and plan.block_size != INT4_TRT_BLOCK:
            plan.notes.append(
                f"block size {plan.block_size} asked; TensorRT documents only block {INT4_TRT_BLOCK} for INT4 "
                f"weight-only (every NVIDIA tool uses it), so {plan.block_size} may not build or run fast"
            )
    elif plan.stored_weights in ("nf4", "fp4"):
        plan.block_size = block_size or 64
    elif plan.stored_weights == "nvfp4":
        if block_size not in (None, NVFP4_BLOCK):
            raise ConfigError(f"--block-size {block_size}: NVFP4 blocks are {NVFP4_BLOCK} values, fixed by the format")
        plan.block_size = NVFP4_BLOCK
    if plan.widening is not None and plan.widening.container == "int4":
        plan.block_size = block_size or INT4_TRT_BLOCK
    return plan


def _plan_dla(
    profile: TargetProfile, plan: PrecisionPlan, where: str, key: str, trt: tuple[int, ...] | None, core: int
) -> None:
    if profile.dla.cores == 0:
        with_dla = [t.name for t in list_targets() if t.dla.cores > 0]
        raise UnsupportedError(
            f"{where}: --dla asked but this board has no DLA; drop --dla to run on the GPU, "
            f"or use a board with DLA cores ({', '.join(with_dla)})"
        )
    if trt is not None and TRT_DLA_ABSENT[0] <= trt < TRT_DLA_ABSENT[1]:
        raise UnsupportedError(f"{where}: TensorRT {format_version(trt)} has no DLA support; use a JetPack with TensorRT 10.x")
    if not 0 <= core < profile.dla.cores:
        raise UnsupportedError(
            f"{where}: DLA core {core} does not exist; this board has {profile.dla.cores} (cores 0..{profile.dla.cores - 1})"
        )
    requested = "int8" if key == "int8" else ("fp16" if key in ("", "fp16") else key)
    if requested not in profile.dla.precisions:
        raise UnsupportedError(
            f"{where}: DLA runs {' and '.join(profile.dla.precisions)} only, not {PRECISION_KEYS.get(requested, requested)}; "
            f"use --weights int8 --activations int8 (or float) with --dla, or drop --dla to run {plan.weights} on the GPU"
        )
    plan.dla_core = core
    plan.gpu_fallback = True
    plan.float_precision = "fp16"
    plan.strongly_typed = False
    if requested == "int8":
        # DLA takes no Q/DQ: TensorRT builds it from a float graph plus per-tensor scales (cache).
        plan.quantization = "implicit"
        plan.calibration_cache = True
        plan.stored_weights = "fp32"
        plan.notes.append(
            "DLA supports only implicit int8: the bundle holds the float model and calibration.cache "
            "(EntropyCalibration2 per-tensor scales); layers DLA cannot run fall back to the GPU silently"
        )
    else:
        plan.stored_weights = "fp32"
        plan.notes.append("DLA runs this model in fp16; layers it cannot run fall back to the GPU silently")


def _plan_int8(profile: TargetProfile, plan: PrecisionPlan, where: str, trt: tuple[int, ...] | None) -> None:
    """W8A8 is explicit Q/DQ with int8 weights on every backend that allows it."""
    _require(profile, where, "int8", trt)
    plan.quantization = "explicit"
    plan.onnx_format = "qdq"
    plan.stored_weights = "int8"


def _plan_tensorrt(
    profile: TargetProfile, plan: PrecisionPlan, where: str, key: str, trt: tuple[int, ...], allow_widen: bool
) -> None:
    fp16 = profile.precision.fp16 and profile.precision.prefer_float == "fp16"
    plan.float_precision = "fp16" if fp16 else "fp32"
    plan.strongly_typed = trt >= TRT_STRONGLY_TYPED_MIN
    plan.fp16_in_graph = fp16 and plan.strongly_typed
    weights = plan.weights

    if key == "int8":
        _plan_int8(profile, plan, where, trt)
        return
    if key in ("fp8", "fp4"):
        # FP8/FP4 exist only as explicit Q/DQ in a strongly typed network (TensorRT >= 10).
        _require(profile, where, key, trt)
        plan.quantization, plan.onnx_format, plan.stored_weights = "explicit", "qdq", weights
        # fp16 rounding ahead of an E4M3 Q flips codes (3 mantissa bits): on EfficientNet-Lite0 the
        # output moved to cosine 0.9988 against the fp32 graph, so the float parts stay fp32.
        plan.fp16_in_graph, plan.float_precision = False, "fp32"
        plan.notes.append(f"{weights}: the float parts stay fp32 in the graph (TensorRT runs them as typed)")
        return
    if weights in ("fp32", "fp16"):
        if weights == "fp16" and not profile.precision.fp16:
            raise UnsupportedError(f"{where}: fp16 is not supported; export in fp32 (leave --weights out)")
        plan.stored_weights = "fp32"
        return

    native = {"int8": "int8_weight_only", "int4": "int4_weight_only"}.get(weights)
    if native is not None:
        _require(profile, where, native, trt)
        plan.quantization = "explicit"
        plan.onnx_format = "qdq"
        plan.stored_weights = weights
        return

    # int2 / nf4 / fp4 weight-only: TensorRT's parser has no such type; widen or refuse.
    can_int4 = profile.precision.int4_weight_only and trt >= TRT_MIN_VERSION["int4_weight_only"]
    if not allow_widen:
        container = "int4 blocks" if (weights == "int2" and can_int4) else "fp16"
        alternatives = "--weights int4" if can_int4 else ("--weights int8 --activations int8" if
                                                         profile.precision.int8 else "fp16 (leave --weights out)")
        raise UnsupportedError(
            f"{where}: TensorRT has no {weights} weights; pass --allow-widen to store them as {container} "
            f"(keeps the {weights} accuracy, not its memory), use {alternatives}, or target x86-cpu/arm64-cpu"
        )
    if weights == "int2" and can_int4:
        plan.widening = Widening(weights, "int4", "TensorRT has no INT2; int2 values fit exactly in INT4 blocks")
        plan.stored_weights = "int4"
        plan.onnx_format = "qdq"
    else:
        why = ("nf4 levels are not on a uniform grid, so only a float container holds them exactly"
               if weights == "nf4" else f"TensorRT {format_version(trt)} on {profile.name} has no INT4 weight-only"
               if weights == "int2" else "edgeq writes fp4 weights as MatMulBnb4, which TensorRT cannot parse")
        plan.widening = Widening(weights, "fp16", why)
        plan.stored_weights = "fp16"
        plan.onnx_format = None
    plan.quantization = "explicit" if plan.stored_weights == "int4" else "none"
    plan.notes.append(
        f"{weights} weights widened to {plan.widening.container} for TensorRT: "
        f"accuracy of the {weights} model, memory of {plan.widening.container}"
    )


def _plan_cpu(profile: TargetProfile, plan: PrecisionPlan, where: str, key: str) -> None:
    plan.float_precision = profile.precision.prefer_float
    weights = plan.weights
    if key == "int8":
        _plan_int8(profile, plan, where, None)
        return
    if weights in ("fp32", "fp16"):
        if weights == "fp16" and not profile.precision.fp16:
            plan.notes.append(f"{profile.name} prefers fp32: the float model is kept in fp32")
        plan.stored_weights = "fp32"
        return
    _require(profile, where, key, None)
    plan.quantization = "explicit"
    plan.onnx_format = "bnb4" if weights in ("nf4", "fp4") else "matmulnbits"
    plan.stored_weights = weights


def _require(profile: TargetProfile, where: str, key: str, trt: tuple[int, ...] | None) -> None:
    """Refuse ``key`` if the hardware lacks it or this TensorRT is too old; name what would work."""
    label = PRECISION_KEYS[key]
    if not profile.precision.allows(key):
        boards = [n for n in _targets_with(key, TRT_MIN_VERSION.get(key), profile.kind) if n != profile.name]
        if key in ("fp8", "fp4") and profile.gpu is not None:
            need = FP8_MIN_COMPUTE if key == "fp8" else FP4_MIN_COMPUTE
            raise UnsupportedError(
                f"{where}: {label} needs {key.upper()} tensor cores (compute capability >= {format_version(need)}); "
                f"this board's {profile.gpu.architecture} GPU is sm {profile.gpu.compute_capability}; use --weights int8 "
                f"--activations int8{' or --weights int4' if profile.precision.int4_weight_only else ''}, or a board "
                f"that has it ({', '.join(boards)})"
            )
        if key == "int8_weight_only" and profile.precision.int8:
            instead = "use --weights int8 --activations int8 (W8A8) or --weights int4"
        elif key in ("int8", "int4_weight_only") and profile.precision.fp16:
            instead = "export in fp16 (leave --weights/--activations out)"
        else:
            instead = "export in float (leave --weights/--activations out)"
        raise UnsupportedError(
            f"{where}: {label} is not supported on this board; {instead}, or use a board that has it "
            f"({', '.join(boards)})"
        )
    minimum = TRT_MIN_VERSION.get(key)
    if trt is not None and minimum is not None and trt < minimum:
        assert profile.tensorrt is not None
        newer = sorted(jp for jp, v in profile.tensorrt.jetpack.items() if parse_version(v) >= minimum)
        instead = "--weights int8 --activations int8" if key != "int8" and profile.precision.int8 else "fp16"
        if newer:
            fix = f"flash JetPack {newer[-1]} and pass --jetpack {newer[-1]}, or use {instead}"
        else:
            boards = [n for n in _targets_with(key, minimum, profile.kind) if n != profile.name]
            fix = f"no JetPack for this board has it; use {instead}, or a board that has it ({', '.join(boards)})"
        raise UnsupportedError(f"{where}: {label} needs TensorRT >= {format_version(minimum)}; {fix}")
