"""Quantization schemes as frozen, serialisable configs (the torchao way).

A config says *what* to do; the handler registered for its type in ``edgeq.quantize.api``
says how. Enums are ``str`` enums so ``"gptq"`` and ``Method.GPTQ`` both work and JSON stays
readable.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from edgeq.errors import ConfigError
from edgeq.serialization import Serializable


class WeightFormat(str, Enum):
    INT8 = "int8"
    INT4 = "int4"
    INT2 = "int2"
    NF4 = "nf4"
    FP4 = "fp4"

    @property
    def bits(self) -> int:
        return {"int8": 8, "int4": 4, "int2": 2, "nf4": 4, "fp4": 4}[self.value]


class Method(str, Enum):
    RTN = "rtn"
    HQQ = "hqq"
    GPTQ = "gptq"
    AWQ = "awq"


class OnnxFormat(str, Enum):
    MATMULNBITS = "matmulnbits"  # com.microsoft.MatMulNBits
    QDQ = "qdq"  # standard DequantizeLinear (blocked, opset 21/25) -> MatMul
    BNB4 = "bnb4"  # com.microsoft.MatMulBnb4 (nf4, fp4)


def _enum(enum_type: type[Enum], value: Any, option: str) -> Any:
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum_type)  # type: ignore[attr-defined]
        raise ConfigError(f"{option}: unknown value {value!r}; expected one of {allowed}") from None


@dataclass(frozen=True)
class WeightOnlyConfig(Serializable):
    """Weight-only quantization of MatMul/Gemm (and embedding Gather) weights, block-wise."""

    schema_type = "edgeq.WeightOnlyConfig"
    schema_version = 1

    weights: WeightFormat = WeightFormat.INT4
    block_size: int = 32
    symmetric: bool = True
    method: Method = Method.RTN
    onnx_format: OnnxFormat | None = None  # None: matmulnbits for ints, bnb4 for nf4/fp4
    accuracy_level: int = 0
    embeddings: bool = True
    exclude: str | None = None  # regex on node names
    gptq_damp: float = 0.01
    gptq_act_order: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", _enum(WeightFormat, self.weights, "--weights"))
        object.__setattr__(self, "method", _enum(Method, self.method, "--method"))
        if self.onnx_format is not None:
            object.__setattr__(self, "onnx_format", _enum(OnnxFormat, self.onnx_format, "--format"))
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ConfigError(f"--block-size: {self.block_size} is not a power of two >= 16")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise ConfigError(f"--accuracy-level: {self.accuracy_level} is not one of 0, 1, 2, 3, 4")

    @property
    def resolved_format(self) -> OnnxFormat:
        if self.onnx_format is not None:
            return self.onnx_format
        return OnnxFormat.BNB4 if self.weights in (WeightFormat.NF4, WeightFormat.FP4) else OnnxFormat.MATMULNBITS


@dataclass(frozen=True)
class Int8Config(Serializable):
    """W8A8: int8 per-channel weights and int8 per-tensor activations as TensorRT-ready QDQ."""

    schema_type = "edgeq.Int8Config"
    schema_version = 1

    op_types: tuple[str, ...] = ("Conv", "ConvTranspose", "MatMul", "Gemm")
    exclude: str | None = None
    weight_clipping: str = "mse"  # "mse" | "max"
    bias_correction: bool = True
    equalization: bool = True  # cross-layer equalization before calibration
    activation_method: str = "auto"  # "auto" (per tensor best), "minmax", "percentile", "entropy", "mse"
    smoothquant_alpha: float | None = None
    fold_batchnorm: bool = True
    recenter: bool = True  # shift ReLU6 outputs to [-3, 3] so symmetric int8 uses all 8 bits (needs data)
    # "tensorrt": symmetric Q/DQ on compute inputs (TensorRT's rules, passes its lint);
    # "onnxruntime": the same numbers laid out so onnxruntime's CPU kernels fuse them
    # (re-centered tensors as zero points, conv outputs into residual Adds quantized).
    layout: str = "tensorrt"
    # Dense layers' weights in [-64, 64] (onnxruntime's reduce_range): x86 CPUs without VNNI
    # saturate int16 pair sums of full-range int8 in onnxruntime's kernels. Layout onnxruntime only.
    reduce_range: bool = False


@dataclass(frozen=True)
class MixedPrecisionConfig(Serializable):
    """Per-layer bits chosen by measured sensitivity under a byte budget or an average bit width."""

    schema_type = "edgeq.MixedPrecisionConfig"
    schema_version = 1

    candidates: tuple[str, ...] = ("int2", "int4", "int8")
    budget_bytes: int | None = None
    avg_bits: float | None = None
    block_size: int = 32
    method: Method = Method.RTN
    embeddings: bool = True
    exclude: str | None = None
