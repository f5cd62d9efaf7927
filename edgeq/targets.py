"""Target boards: what each can run, and a precision plan checked against it.

A board is data, not code: one TOML file in ``targets/`` (or the user's own path) says its GPU,
which TensorRT each JetPack brings, the precisions its hardware runs, its DLA cores, memory and
power rails. What a given *TensorRT version* can do (INT4 weight-only from 10.0, FP4 from 10.8,
no INT2/NF4 ever, no DLA in 11.0-11.3) is a fact about TensorRT, so it lives here in code, once.

``check_plan`` combines the two and refuses what the target cannot run with a message that names
the target, the precision and what would work instead, so a bundle never promises an engine the
board cannot build.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq.errors import ConfigError, UnsupportedError
from edgeq.serialization import Serializable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TARGETS_DIR = Path(__file__).resolve().parents[1] / "targets"
PROFILE_SCHEMA_VERSION = 1

# Precision names a profile's [precision] table may set, and what each means.
PRECISION_KEYS: dict[str, str] = {
    "fp16": "float16 compute",
    "int8": "int8 weights and activations (W8A8, Q/DQ)",
    "int8_weight_only": "int8 weight-only",
    "int4_weight_only": "int4 weight-only (blocks)",
    "int2_weight_only": "int2 weight-only (blocks)",
    "nf4_weight_only": "nf4 weight-only",
    "fp4_weight_only": "fp4 weight-only",
    "fp8": "fp8 (E4M3) Q/DQ",
    "fp4": "fp4 (E2M1) Q/DQ",
}
WEIGHT_FORMATS = ("fp32", "fp16", "int8", "int4", "int2", "nf4", "fp4")
ACTIVATION_FORMATS = ("none", "int8")

# TensorRT facts (reference: tensorrt-jetson.md). Minimum version per capability.
TRT_MIN_VERSION: dict[str, tuple[int, ...]] = {
    "int8": (8, 0),
    "fp16": (7, 0),
    "int4_weight_only": (10, 0),
    "fp8": (10, 0),
    "fp4": (10, 8),
}
TRT_WORKSPACE_POOL_MIN = (8, 4)  # --memPoolSize / set_memory_pool_limit; --workspace before
TRT_STRONGLY_TYPED_MIN = (10, 0)  # --stronglyTyped for Q/DQ models
TRT_IMPLICIT_REMOVED = (11, 0)  # --int8/--fp16/--calib gone; every network strongly typed
TRT_DLA_ABSENT = ((11, 0), (11, 4))  # DLA missing from 11.0 up to (not including) 11.4
INT4_TRT_BLOCK = 128  # the block size every NVIDIA tool uses; smaller ones are undocumented


def parse_version(text: str, source: str = "version") -> tuple[int, ...]:
    """``"10.3.0"`` -> ``(10, 3, 0)``; a one-line ConfigError for anything else."""
    parts = str(text).strip().split(".")
    try:
        numbers = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{source}: {text!r} is not a version like 10.3.0") from None
    if not numbers or any(n < 0 for n in numbers):
        raise ConfigError(f"{source}: {text!r} is not a version like 10.3.0")
    return numbers


def _short(version: tuple[int, ...]) -> str:
    return ".".join(str(v) for v in version)


# ----------------------------------------------------------------------------------------------
# The profile dataclasses


@dataclass(frozen=True)
class GpuSpec:
    architecture: str
    compute_capability: str


@dataclass(frozen=True)
class TensorRTSpec:
    """JetPack -> TensorRT versions the board can have, and the one assumed by default."""

    default_jetpack: str
    jetpack: dict[str, str]

    def version(self, jetpack: str | None = None) -> tuple[str, str]:
        """(jetpack, tensorrt version) for ``jetpack`` or the default."""
        chosen = jetpack or self.default_jetpack
        return chosen, self.jetpack[chosen]


@dataclass(frozen=True)
class PrecisionSupport:
    """What the board's hardware runs fast; TensorRT-version limits are applied on top."""

    fp16: bool = False
    int8: bool = False
    int8_weight_only: bool = False
    int4_weight_only: bool = False
    int2_weight_only: bool = False
    nf4_weight_only: bool = False
    fp4_weight_only: bool = False
    fp8: bool = False
    fp4: bool = False
    prefer_float: str = "fp32"

    def allows(self, key: str) -> bool:
        return bool(getattr(self, key))

    def names(self) -> list[str]:
        return [k for k in PRECISION_KEYS if self.allows(k)]


@dataclass(frozen=True)
class DlaSpec:
    cores: int = 0
    precisions: tuple[str, ...] = ()
    max_batch: int = 0
    sram_mib: float = 0.0


@dataclass(frozen=True)
class MemorySpec:
    sizes_gb: tuple[float, ...] = ()
    workspace_mib: int = 0


@dataclass(frozen=True)
class PowerSpec:
    sensor: str = ""
    devices: tuple[str, ...] = ()
    rails: tuple[str, ...] = ()
    total_rail: str = ""


@dataclass(frozen=True)
class OnnxSpec:
    preferred_opset: int = 17
    # int8 for onnxruntime with dense weights in [-64, 64]: x86 CPUs without VNNI saturate
    # full-range int8 in 16 bits inside onnxruntime's kernels.
    int8_reduce_range: bool = False


@dataclass(frozen=True)
class TargetProfile:
    """One board, validated. ``source`` is the TOML it came from, for error messages."""

    name: str
    display_name: str
    kind: str
    backend: str
    precision: PrecisionSupport
    dla: DlaSpec
    memory: MemorySpec
    power: PowerSpec
    onnx: OnnxSpec
    gpu: GpuSpec | None = None
    tensorrt: TensorRTSpec | None = None
    unverified: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    source: str = ""

    @property
    def uses_tensorrt(self) -> bool:
        return self.backend == "tensorrt"

    def tensorrt_version(self, jetpack: str | None = None) -> tuple[str, str] | None:
        """(jetpack, TensorRT version) for a JetPack this board has, or None for CPU targets."""
        if self.tensorrt is None:
            if jetpack:
                raise ConfigError(f"--jetpack: target {self.name} has no JetPack (backend {self.backend})")
            return None
        if jetpack and jetpack not in self.tensorrt.jetpack:
            known = ", ".join(self.tensorrt.jetpack)
            raise ConfigError(f"--jetpack: {self.name} has no JetPack {jetpack!r}; it has {known}")
        return self.tensorrt.version(jetpack)

    def allowed_precisions(self, jetpack: str | None = None) -> list[str]:
        """Precision keys the hardware runs *and* the TensorRT of ``jetpack`` (default: the newest) has."""
        names = self.precision.names()
        if self.tensorrt is None:
            return names
        if jetpack is None:
            trt = max(parse_version(v) for v in self.tensorrt.jetpack.values())
        else:
            trt = parse_version(self.tensorrt.version(jetpack)[1])
        return [k for k in names if trt >= TRT_MIN_VERSION.get(k, (0,))]

    def summary(self) -> dict[str, Any]:
        """Plain data for ``edgeq targets --json`` and the bundle manifest."""
        trt = self.tensorrt_version()
        return {
            "name": self.name,
            "display_name": self.display_name,
            "kind": self.kind,
            "backend": self.backend,
            "gpu": None if self.gpu is None else {
                "architecture": self.gpu.architecture, "compute_capability": self.gpu.compute_capability,
            },
            "jetpack": None if self.tensorrt is None else dict(self.tensorrt.jetpack),
            "default_jetpack": None if trt is None else trt[0],
            "tensorrt": None if trt is None else trt[1],
            "precisions": self.allowed_precisions(),
            "hardware_precisions": self.precision.names(),
            "prefer_float": self.precision.prefer_float,
            "dla_cores": self.dla.cores,
            "dla_precisions": list(self.dla.precisions),
            "memory_gb": list(self.memory.sizes_gb),
            "workspace_mib": self.memory.workspace_mib,
            "power_rails": list(self.power.rails),
            "total_rail": self.power.total_rail or None,
            "preferred_opset": self.onnx.preferred_opset,
            "int8_reduce_range": self.onnx.int8_reduce_range,
            "unverified": list(self.unverified),
            "notes": list(self.notes),
            "source": self.source,
        }


# ----------------------------------------------------------------------------------------------
# Validation: a small declarative schema, so every error names the file and the field.


@dataclass(frozen=True)
class _Field:
    kind: type | tuple[type, ...]
    required: bool = False
    default: Any = None
    check: Callable[[Any], str | None] | None = None  # returns a problem or None
    items: type | None = None  # element type for lists


def _version_string(value: Any) -> str | None:
    try:
        parse_version(value)
    except ConfigError:
        return "a version like '10.3.0'"
    return None


def _one_of(*allowed: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in allowed else "one of " + ", ".join(repr(a) for a in allowed)

    return check


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else "a number >= 0"


def _opset(value: Any) -> str | None:
    return None if 7 <= value <= 30 else "an opset between 7 and 30"


def _compute_capability(value: Any) -> str | None:
    parts = value.split(".")
    ok = len(parts) == 2 and all(p.isdigit() for p in parts)
    return None if ok else "a compute capability like '8.7'"


_SECTIONS: dict[str, dict[str, _Field]] = {
    "": {
        "schema_version": _Field(int, required=True),
        "name": _Field(str, required=True),
        "display_name": _Field(str, default=""),
        "kind": _Field(str, required=True, check=_one_of("jetson", "gpu", "cpu")),
        "backend": _Field(str, required=True, check=_one_of("tensorrt", "onnxruntime")),
        "unverified": _Field(list, default=[], items=str),
        "notes": _Field(list, default=[], items=str),
    },
    "gpu": {
        "architecture": _Field(str, required=True),
        "compute_capability": _Field(str, required=True, check=_compute_capability),
    },
    "tensorrt": {
        "default_jetpack": _Field(str, required=True),
        "jetpack": _Field(dict, required=True),
    },
    "precision": {
        **{key: _Field(bool, default=False) for key in PRECISION_KEYS},
        "prefer_float": _Field(str, default="fp32", check=_one_of("fp16", "fp32")),
    },
    "dla": {
        "cores": _Field(int, default=0, check=_non_negative),
        "precisions": _Field(list, default=[], items=str),
        "max_batch": _Field(int, default=0, check=_non_negative),
        "sram_mib": _Field((int, float), default=0.0, check=_non_negative),
    },
    "memory": {
        "sizes_gb": _Field(list, default=[], items=(int, float)),  # type: ignore[arg-type]
        "workspace_mib": _Field(int, default=0, check=_non_negative),
    },
    "power": {
        "sensor": _Field(str, default=""),
        "devices": _Field(list, default=[], items=str),
        "rails": _Field(list, default=[], items=str),
        "total_rail": _Field(str, default=""),
    },
    "onnx": {
        "preferred_opset": _Field(int, default=17, check=_opset),
        "int8_reduce_range": _Field(bool, default=False),
    },
}


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
             dict: "a table"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _is_type(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        return False  # TOML true is not the integer 1
    return isinstance(value, kinds)


def _validate_section(
    data: Mapping[str, Any], spec: dict[str, _Field], section: str, source: str
) -> dict[str, Any]:
    prefix = f"{section}." if section else ""
    unknown = sorted(set(data) - set(spec) - ({*_SECTIONS} - {""} if not section else set()))
    if unknown:
        allowed = ", ".join(sorted(spec))
        raise ConfigError(f"{source}: unknown field '{prefix}{unknown[0]}'; {section or 'top level'} allows {allowed}")
    values: dict[str, Any] = {}
    for key, rule in spec.items():
        where = f"{source}: field '{prefix}{key}'"
        if key not in data:
            if rule.required:
                raise ConfigError(f"{where} is missing")
            values[key] = list(rule.default) if isinstance(rule.default, list) else rule.default
            continue
        value = data[key]
        if not _is_type(value, rule.kind):
            raise ConfigError(f"{where}: expected {_type_name(rule.kind)}, got {value!r}")
        if rule.items is not None:
            for item in value:
                if not _is_type(item, rule.items):
                    raise ConfigError(f"{where}: expected a list of {_type_name(rule.items)}, got {item!r}")
        if rule.check is not None:
            problem = rule.check(value)
            if problem:
                raise ConfigError(f"{where}: expected {problem}, got {value!r}")
        values[key] = value
    return values


def profile_from_dict(data: Mapping[str, Any], source: str) -> TargetProfile:
    """Validate a parsed TOML document into a ``TargetProfile``."""
    top = _validate_section(data, _SECTIONS[""], "", source)
    if top["schema_version"] > PROFILE_SCHEMA_VERSION or top["schema_version"] < 1:
        raise ConfigError(
            f"{source}: field 'schema_version' is {top['schema_version']}; this edgeq reads "
            f"target profiles of version {PROFILE_SCHEMA_VERSION}"
        )
    sections: dict[str, dict[str, Any] | None] = {}
    for name in ("gpu", "tensorrt", "precision", "dla", "memory", "power", "onnx"):
        raw = data.get(name)
        if raw is None:
            sections[name] = None
            continue
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: field '{name}': expected a table [{name}], got {raw!r}")
        sections[name] = _validate_section(raw, _SECTIONS[name], name, source)

    if "precision" not in data:
        raise ConfigError(f"{source}: table [precision] is missing")
    backend = top["backend"]
    trt: TensorRTSpec | None = None
    if backend == "tensorrt":
        for needed in ("gpu", "tensorrt"):
            if sections[needed] is None:
                raise ConfigError(f"{source}: table [{needed}] is missing (backend is tensorrt)")
        raw_trt = sections["tensorrt"]
        assert raw_trt is not None
        jetpacks = raw_trt["jetpack"]
        if not jetpacks:
            raise ConfigError(f"{source}: field 'tensorrt.jetpack' is empty; map JetPack versions to TensorRT")
        for jp, version in jetpacks.items():
            if _version_string(jp) or not isinstance(version, str) or _version_string(version):
                raise ConfigError(
                    f"{source}: field 'tensorrt.jetpack.{jp}': expected a JetPack version mapped to a "
                    f"TensorRT version like \"6.2\" = \"10.3.0\", got {jp!r} = {version!r}"
                )
        if raw_trt["default_jetpack"] not in jetpacks:
            raise ConfigError(
                f"{source}: field 'tensorrt.default_jetpack': {raw_trt['default_jetpack']!r} is not one of "
                f"the JetPacks in tensorrt.jetpack ({', '.join(jetpacks)})"
            )
        trt = TensorRTSpec(default_jetpack=raw_trt["default_jetpack"], jetpack=dict(jetpacks))

    prec = sections["precision"] or {}
    dla_raw = sections["dla"] or {"cores": 0, "precisions": [], "max_batch": 0, "sram_mib": 0.0}
    for p in dla_raw["precisions"]:
        if p not in ("fp16", "int8"):
            raise ConfigError(f"{source}: field 'dla.precisions': DLA runs fp16 and int8 only, got {p!r}")
    if dla_raw["cores"] and not dla_raw["precisions"]:
        raise ConfigError(f"{source}: field 'dla.precisions' is missing: a board with DLA cores must list fp16/int8")
    if dla_raw["cores"] and backend != "tensorrt":
        raise ConfigError(f"{source}: field 'dla.cores': DLA needs backend = \"tensorrt\"")
    mem = sections["memory"] or {"sizes_gb": [], "workspace_mib": 0}
    if backend == "tensorrt" and mem["workspace_mib"] <= 0:
        raise ConfigError(f"{source}: field 'memory.workspace_mib' must be > 0 for a TensorRT target")
    power = sections["power"] or {"sensor": "", "devices": [], "rails": [], "total_rail": ""}
    if power["total_rail"] and power["total_rail"] not in power["rails"]:
        raise ConfigError(
            f"{source}: field 'power.total_rail': {power['total_rail']!r} is not one of power.rails"
        )
    onnx_raw = sections["onnx"] or {"preferred_opset": 17, "int8_reduce_range": False}
    gpu_raw = sections["gpu"]
    known_fields = {f"{s}.{k}" for s, spec in _SECTIONS.items() if s for k in spec}
    for item in top["unverified"]:
        if item not in known_fields:
            raise ConfigError(f"{source}: field 'unverified': {item!r} is not a field of the profile")
    return TargetProfile(
        name=top["name"],
        display_name=top["display_name"] or top["name"],
        kind=top["kind"],
        backend=backend,
        precision=PrecisionSupport(**prec),
        dla=DlaSpec(
            cores=dla_raw["cores"], precisions=tuple(dla_raw["precisions"]),
            max_batch=dla_raw["max_batch"], sram_mib=float(dla_raw["sram_mib"]),
        ),
        memory=MemorySpec(sizes_gb=tuple(mem["sizes_gb"]), workspace_mib=mem["workspace_mib"]),
        power=PowerSpec(
            sensor=power["sensor"], devices=tuple(power["devices"]), rails=tuple(power["rails"]),
            total_rail=power["total_rail"],
        ),
        onnx=OnnxSpec(preferred_opset=onnx_raw["preferred_opset"], int8_reduce_range=onnx_raw["int8_reduce_range"]),
        gpu=None if gpu_raw is None else GpuSpec(gpu_raw["architecture"], gpu_raw["compute_capability"]),
        tensorrt=trt,
        unverified=tuple(top["unverified"]),
        notes=tuple(top["notes"]),
        source=source,
    )


def load_target_file(path: str | Path) -> TargetProfile:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: target profile not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read target profile ({exc})") from None
    return profile_from_dict(data, str(path))


def list_targets(directory: str | Path | None = None) -> list[TargetProfile]:
    """Every profile shipped in ``targets/`` (or ``directory``), by name."""
    root = Path(directory) if directory is not None else TARGETS_DIR
    return sorted((load_target_file(p) for p in root.glob("*.toml")), key=lambda t: t.name)


def load_target(name_or_path: str | Path | TargetProfile) -> TargetProfile:
    """A shipped board by name (``jetson-orin-nano``) or the user's own TOML by path."""
    if isinstance(name_or_path, TargetProfile):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".toml") or path.is_file() or "/" in text or "\\" in text:
        return load_target_file(path)
    candidate = TARGETS_DIR / f"{text}.toml"
    if candidate.is_file():
        profile = load_target_file(candidate)
        if profile.name != text:
            raise ConfigError(f"{candidate}: field 'name' is {profile.name!r}, expected {text!r} (the file name)")
        return profile
    names = ", ".join(t.stem for t in sorted(TARGETS_DIR.glob("*.toml")))
    raise ConfigError(f"--target: unknown target {text!r}; expected one of {names} or a path to a .toml profile")


# ----------------------------------------------------------------------------------------------
# Precision planning


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
        if self.activations == "int8":
            what = "int8 weights + int8 activations (W8A8)"
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
    if activations == "int8":
        return "int8"
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
    if activations == "int8" and weights != "int8":
        raise ConfigError(f"--weights {weights} with --activations int8: W8A8 needs --weights int8")

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
        raise UnsupportedError(f"{where}: TensorRT {_short(trt)} has no DLA support; use a JetPack with TensorRT 10.x")
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
               if weights == "nf4" else f"TensorRT {_short(trt)} on {profile.name} has no INT4 weight-only"
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
        raise UnsupportedError(f"{where}: {label} needs TensorRT >= {_short(minimum)}; {fix}")


# ----------------------------------------------------------------------------------------------
# Text for `edgeq targets`

_SHORT = {"fp16": "fp16", "int8": "int8", "int8_weight_only": "w8", "int4_weight_only": "w4",
          "int2_weight_only": "w2", "nf4_weight_only": "nf4", "fp4_weight_only": "wfp4", "fp8": "fp8", "fp4": "fp4"}


def format_targets_table(profiles: list[TargetProfile]) -> str:
    """One line per board; w4 = int4 weight-only (TensorRT >= 10), w2/nf4 = weight-only on CPU."""
    rows = [("target", "gpu (sm)", "jetpack -> tensorrt", "precisions", "dla", "memory")]
    for p in profiles:
        gpu = f"{p.gpu.architecture} ({p.gpu.compute_capability})" if p.gpu else "cpu"
        trt = ""
        if p.tensorrt is not None:
            trt = ", ".join(f"{jp}->{v}" for jp, v in p.tensorrt.jetpack.items())
        precisions = " ".join(_SHORT[k] for k in p.allowed_precisions())
        memory = "/".join(f"{g:g}" for g in p.memory.sizes_gb) + " GB" if p.memory.sizes_gb else "-"
        dla = str(p.dla.cores) + ("?" if "dla.cores" in p.unverified else "")
        rows.append((p.name, gpu, trt or p.backend, precisions, dla, memory))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.append("w4/w2/w8 = int4/int2/int8 weight-only; ? = unverified; `edgeq targets NAME` for details")
    return "\n".join(lines)


def format_target(p: TargetProfile) -> str:
    lines = [f"{p.name}: {p.display_name}  ({p.source})", f"  backend: {p.backend}"]
    if p.gpu:
        lines.append(f"  gpu: {p.gpu.architecture}, compute capability {p.gpu.compute_capability}")
    if p.tensorrt:
        jps = ", ".join(f"JetPack {jp} -> TensorRT {v}" for jp, v in p.tensorrt.jetpack.items())
        lines.append(f"  software: {jps} (default JetPack {p.tensorrt.default_jetpack})")
    lines.append("  precisions: " + ", ".join(PRECISION_KEYS[k] for k in p.allowed_precisions()))
    if p.uses_tensorrt:
        assert p.tensorrt is not None
        for jp in p.tensorrt.jetpack:
            missing = [k for k in p.precision.names() if k not in p.allowed_precisions(jp)]
            if missing:
                lines.append(f"    not on JetPack {jp}: {', '.join(PRECISION_KEYS[k] for k in missing)} (TensorRT too old)")
        lines.append("  TensorRT has no int2/nf4: export them with --allow-widen (stored as int4 blocks or fp16)")
    lines.append(f"  float parts: {p.precision.prefer_float}")
    if p.dla.cores:
        lines.append(f"  DLA: {p.dla.cores} core(s), {'/'.join(p.dla.precisions)}, fixed shapes, GPU fallback for the rest")
    else:
        lines.append("  DLA: none")
    if p.memory.sizes_gb:
        lines.append(f"  memory: {'/'.join(f'{g:g}' for g in p.memory.sizes_gb)} GB unified; "
                     f"TensorRT workspace {p.memory.workspace_mib} MiB")
    if p.power.rails:
        total = f", total {p.power.total_rail}" if p.power.total_rail else ", no single total rail"
        lines.append(f"  power: {p.power.sensor} rails {', '.join(p.power.rails)}{total}")
    lines.append(f"  preferred ONNX opset: {p.onnx.preferred_opset}")
    if p.onnx.int8_reduce_range:
        lines.append("  int8: dense weights in [-64, 64] (no 16-bit saturation on CPUs without VNNI)")
    if p.unverified:
        lines.append(f"  unverified: {', '.join(p.unverified)}")
    lines += [f"  note: {n}" for n in p.notes]
    return "\n".join(lines)
