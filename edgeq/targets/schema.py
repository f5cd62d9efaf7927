"""Validation of a target profile: a small declarative schema, so every error names the file and the field.

A user may pass their own TOML, and a wrong field must not surface later as a strange plan; each
section's fields have a type, a default and an optional check, and ``profile_from_dict`` adds the
rules that span sections (a TensorRT board needs [gpu] and [tensorrt], DLA needs TensorRT, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edgeq.errors import ConfigError
from edgeq.targets.facts import parse_version
from edgeq.targets.profile import (
    PRECISION_KEYS,
    DlaSpec,
    GpuSpec,
    MemorySpec,
    OnnxSpec,
    PowerSpec,
    PrecisionSupport,
    TargetProfile,
    TensorRTSpec,
)

PROFILE_SCHEMA_VERSION = 1


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
