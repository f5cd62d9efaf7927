"""A board, validated: the dataclasses a target profile TOML becomes.

Each section of the TOML (``[gpu]``, ``[tensorrt]``, ``[precision]``, ``[dla]``, ...) is one frozen
dataclass, so a profile cannot change after it was checked. ``TargetProfile`` answers what the
board runs under a given JetPack by combining its hardware flags with the TensorRT facts in
``edgeq.targets.facts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeq.errors import ConfigError
from edgeq.targets.facts import TRT_MIN_VERSION, parse_version

# Precision names a profile's [precision] table may set, and what each means.
PRECISION_KEYS: dict[str, str] = {
    "fp16": "float16 compute",
    "int8": "int8 weights and activations (W8A8, Q/DQ)",
    "int8_weight_only": "int8 weight-only",
    "int4_weight_only": "int4 weight-only (blocks)",
    "int2_weight_only": "int2 weight-only (blocks)",
    "nf4_weight_only": "nf4 weight-only",
    "fp4_weight_only": "fp4 (bitsandbytes levels) weight-only",
    "fp8": "fp8 (E4M3) Q/DQ",
    "fp4": "NVFP4 (E2M1 blocks of 16, E4M3 block scales) Q/DQ",
}


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
