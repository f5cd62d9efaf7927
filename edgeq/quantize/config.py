"""Quantization schemes as frozen, serialisable configs (the torchao way).

A config says *what* to do; the handler registered for its type in ``edgeq.quantize.api``
says how. Enums are ``str`` enums so ``"gptq"`` and ``Method.GPTQ`` both work and JSON stays
readable. Every config checks its values when it is built (``__post_init__``), so a bad value
fails in one line naming the CLI option before any model is loaded, and a handler can trust
the config it is given. What depends on the model or the inputs (``--data`` for GPTQ, a format
a kernel cannot run) is still the handler's to refuse.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeAlias

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


def check_exclude(pattern: str | None) -> None:
    """``--exclude`` is a regular expression on node names: refuse one that does not compile."""
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"--exclude: {pattern!r} is not a valid regular expression ({exc})") from None


# --kv-cache: how the KV cache of a decoder is stored ("none": as the model has it).
KV_CACHE_FORMATS = ("none", "int8")


def check_kv_cache(value: str) -> None:
    if value not in KV_CACHE_FORMATS:
        raise ConfigError(f"--kv-cache: {value!r}; expected one of {', '.join(KV_CACHE_FORMATS)}")


def check_block_size(block_size: int) -> None:
    if block_size < 16 or block_size & (block_size - 1):
        raise ConfigError(f"--block-size: {block_size} is not a power of two >= 16")


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
    kv_cache: str = "none"  # "int8": past/present stored as int8, one scale per KV head (needs --data)
    # The LM head (the MatMul/Gemm producing ``logits``) and a table tied to it: a WeightFormat
    # value, "float", or None for int8 under a body below 8 bits (else as ``weights``). The head
    # is where a decoder's 4-bit error costs most (llama.cpp's 4-bit files keep it at 6-8 bits):
    # on SmolLM2-135M an int8 head costs nothing measurable over a float one, an int4 head +3.6
    # perplexity (benchmarks/RESULTS.md). ``"int4"`` asks for the smallest file.
    lm_head: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", _enum(WeightFormat, self.weights, "--weights"))
        if self.lm_head is not None:
            name = str(getattr(self.lm_head, "value", self.lm_head)).strip().lower()
            name = MIXED_ALIASES.get(name, name) or name
            if name != "float":
                name = _enum(WeightFormat, name, "--lm-head").value
            object.__setattr__(self, "lm_head", name)
        object.__setattr__(self, "method", _enum(Method, self.method, "--method"))
        if self.onnx_format is not None:
            object.__setattr__(self, "onnx_format", _enum(OnnxFormat, self.onnx_format, "--format"))
        check_block_size(self.block_size)
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise ConfigError(f"--accuracy-level: {self.accuracy_level} is not one of 0, 1, 2, 3, 4")
        check_exclude(self.exclude)
        check_kv_cache(self.kv_cache)
        if not (math.isfinite(self.gptq_damp) and self.gptq_damp >= 0):
            raise ConfigError(f"gptq_damp: {self.gptq_damp} is not a finite number >= 0")
        if self.lm_head not in (None, "float") and self.onnx_format is not None:
            table = self.lm_head in ("nf4", "fp4")
            if table != (self.onnx_format is OnnxFormat.BNB4):
                raise ConfigError(
                    f"--lm-head {self.lm_head} cannot be written as --format {self.onnx_format.value}: "
                    "nf4/fp4 run only as bnb4, int8/int4/int2 only as matmulnbits or qdq"
                )

    @property
    def resolved_format(self) -> OnnxFormat:
        if self.onnx_format is not None:
            return self.onnx_format
        return OnnxFormat.BNB4 if self.weights in (WeightFormat.NF4, WeightFormat.FP4) else OnnxFormat.MATMULNBITS

    @property
    def head_weights(self) -> WeightFormat | None:
        """The LM head's codec (int8 under a body below 8 bits, unless ``--lm-head`` says otherwise);
        None keeps it float."""
        if self.lm_head is None:
            return WeightFormat.INT8 if self.weights is not WeightFormat.INT8 else self.weights
        return None if self.lm_head == "float" else WeightFormat(self.lm_head)

    @property
    def head_format(self) -> OnnxFormat:
        """The LM head's ONNX format: the body's, unless its codec needs another (nf4/fp4: bnb4)."""
        head = self.head_weights
        if head is None or head is self.weights:
            return self.resolved_format
        if head in (WeightFormat.NF4, WeightFormat.FP4):
            return OnnxFormat.BNB4
        return OnnxFormat.MATMULNBITS if self.resolved_format is OnnxFormat.BNB4 else self.resolved_format


# Int8 activation ranges: "auto" picks the best method per tensor (with --data).
ACTIVATION_METHODS = ("auto", "minmax", "percentile", "entropy", "mse")
INT8_LAYOUTS = ("tensorrt", "onnxruntime")
WEIGHT_CLIPPING = ("mse", "max")
# Mixed precision candidates ("float" keeps a matrix as it is) and the spellings accepted for
# them; None marks a name that is not a stored format.
MIXED_FORMATS = ("int2", "int4", "int8", "nf4", "fp4", "float")
MIXED_ALIASES: dict[str, str | None] = {"fp32": "float", "float32": "float", "fp16": None, "float16": None}


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
    kv_cache: str = "none"  # "int8": past/present stored as int8, one scale per KV head

    def __post_init__(self) -> None:
        from edgeq.graph.ops import COMPUTE_OPS

        object.__setattr__(self, "op_types", tuple(self.op_types))
        unknown = [o for o in self.op_types if o not in COMPUTE_OPS]
        if unknown:
            raise ConfigError(f"--op-types: {', '.join(unknown)} cannot be int8 QDQ; expected some of {', '.join(COMPUTE_OPS)}")
        if not self.op_types:
            raise ConfigError(f"--op-types: give at least one of {', '.join(COMPUTE_OPS)}")
        if self.activation_method not in ACTIVATION_METHODS:
            raise ConfigError(f"activation method {self.activation_method!r}; expected one of {', '.join(ACTIVATION_METHODS)}")
        if self.layout not in INT8_LAYOUTS:
            raise ConfigError(f"--layout: {self.layout!r}; expected one of {', '.join(INT8_LAYOUTS)}")
        if self.reduce_range and self.layout != "onnxruntime":
            raise ConfigError("--reduce-range is for --layout onnxruntime (x86 CPUs without VNNI); TensorRT's int8 does not saturate")
        if self.weight_clipping not in WEIGHT_CLIPPING:
            raise ConfigError(f"weight clipping {self.weight_clipping!r}; expected mse or max")
        if self.smoothquant_alpha is not None and not 0.0 <= self.smoothquant_alpha <= 1.0:
            raise ConfigError(f"--smoothquant: alpha {self.smoothquant_alpha} is not in [0, 1]")
        check_exclude(self.exclude)
        check_kv_cache(self.kv_cache)


# Activation ranges for FP8: E4M3 keeps 3 mantissa bits at every magnitude, so the calibrated
# maximum (or a high percentile of |x|) is the range; int8's entropy/MSE searches do not apply.
FP8_ACTIVATION_METHODS = ("minmax", "percentile")


@dataclass(frozen=True)
class Fp8Config(Serializable):
    """FP8 (E4M3) W8A8 Q/DQ for TensorRT: weights per output channel and activations per tensor,
    scale = calibrated amax / 448, zero point 0, at the same places as int8 (Conv/MatMul/Gemm inputs)."""

    schema_type = "edgeq.Fp8Config"
    schema_version = 1

    op_types: tuple[str, ...] = ("Conv", "ConvTranspose", "MatMul", "Gemm")
    exclude: str | None = None
    activation_method: str = "minmax"
    fold_batchnorm: bool = True
    kv_cache: str = "none"  # the KV cache stays as the model has it (int8 KV is for the int8 schemes)

    def __post_init__(self) -> None:
        from edgeq.graph.ops import COMPUTE_OPS

        object.__setattr__(self, "op_types", tuple(self.op_types))
        unknown = [o for o in self.op_types if o not in COMPUTE_OPS]
        if unknown or not self.op_types:
            raise ConfigError(f"--op-types: {', '.join(unknown) or 'none given'}; expected some of {', '.join(COMPUTE_OPS)}")
        if self.activation_method not in FP8_ACTIVATION_METHODS:
            raise ConfigError(
                f"fp8 activation method {self.activation_method!r}; expected one of {', '.join(FP8_ACTIVATION_METHODS)}")
        check_exclude(self.exclude)
        if self.kv_cache != "none":
            raise ConfigError("--kv-cache int8 applies to int8 and weight-only schemes, not --activations fp8")


@dataclass(frozen=True)
class NvFp4Config(Serializable):
    """NVFP4 weight-only for TensorRT on Blackwell (Thor): MatMul weights as E2M1 in blocks of 16
    along K, an E4M3 scale per block and a float32 scale per tensor (NVIDIA Model Optimizer's
    two-level DequantizeLinear, opset 23). Not ``--weights fp4``, which is bitsandbytes' FP4."""

    schema_type = "edgeq.NvFp4Config"
    schema_version = 1

    exclude: str | None = None
    kv_cache: str = "none"

    def __post_init__(self) -> None:
        check_exclude(self.exclude)
        if self.kv_cache != "none":
            raise ConfigError("--kv-cache int8 is not available with --weights nvfp4")


@dataclass(frozen=True)
class MixedPrecisionConfig(Serializable):
    """Per-layer bits chosen by measured sensitivity under a byte budget or an average bit width.

    Exactly one of three limits: ``budget_bytes`` (``--budget``) bounds the whole written file,
    what a board's flash or RAM has to hold (codes, scales, zero points, the tensors left in
    float, the graph and its metadata); ``weight_budget_bytes`` (``--weight-budget``) bounds the
    stored bytes of the quantizable matrices only; ``avg_bits`` (``--avg-bits``) is the latter
    as bits per weight. Version 1 documents meant the weight-only bound by ``budget_bytes``.
    """

    schema_type = "edgeq.MixedPrecisionConfig"
    schema_version = 2

    candidates: tuple[str, ...] = ("int2", "int4", "int8")
    budget_bytes: int | None = None
    avg_bits: float | None = None
    block_size: int = 32
    method: Method = Method.RTN
    embeddings: bool = True
    exclude: str | None = None
    weight_budget_bytes: int | None = None
    kv_cache: str = "none"  # "int8": past/present stored as int8, one scale per KV head

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", tuple(self.candidates))
        check_kv_cache(self.kv_cache)
        object.__setattr__(self, "method", _enum(Method, self.method, "--method"))
        if sum(x is not None for x in (self.budget_bytes, self.weight_budget_bytes, self.avg_bits)) != 1:
            raise ConfigError("mixed precision needs exactly one of --budget (file bytes), --weight-budget (weight bytes) or --avg-bits")
        for option, value in (("--budget", self.budget_bytes), ("--weight-budget", self.weight_budget_bytes)):
            if value is not None and value <= 0:
                raise ConfigError(f"{option}: {value} bytes is not a positive size")
        if self.avg_bits is not None and not (math.isfinite(self.avg_bits) and self.avg_bits > 0):
            raise ConfigError(f"--avg-bits: {self.avg_bits} is not a positive number of bits")
        check_block_size(self.block_size)
        check_exclude(self.exclude)
        for raw in self.candidates:
            name = str(getattr(raw, "value", raw)).strip().lower()
            if MIXED_ALIASES.get(name, name) is None:
                raise ConfigError(f"--candidates: {name} is not a stored format here; use 'float' to allow keeping a matrix as it is")
            if MIXED_ALIASES.get(name, name) not in MIXED_FORMATS:
                raise ConfigError(f"--candidates: unknown format {raw!r}; expected some of {', '.join(MIXED_FORMATS)}")
        if not self.candidates:
            raise ConfigError("--candidates: give at least one format, e.g. int2,int4,int8")

    @property
    def counts_whole_file(self) -> bool:
        """True for ``--budget``: the limit is the written file, not the matrices' weights."""
        return self.budget_bytes is not None

    @classmethod
    def from_dict(cls, obj: Any, source: str = "input") -> MixedPrecisionConfig:
        """Version 1 documents' ``budget_bytes`` counted weights only: read it as ``weight_budget_bytes``."""
        if isinstance(obj, dict) and obj.get("_version") == 1 and isinstance(obj.get("_data"), dict):
            data = dict(obj["_data"])
            if data.get("budget_bytes") is not None:
                data["weight_budget_bytes"] = data.pop("budget_bytes")
            obj = {**obj, "_data": data}
        return super().from_dict(obj, source)


# Every config a handler is registered for (a new scheme adds its config here).
QuantizeConfig: TypeAlias = WeightOnlyConfig | Int8Config | MixedPrecisionConfig | Fp8Config | NvFp4Config
