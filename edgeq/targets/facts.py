"""What each TensorRT version can do: the facts every board profile and plan check rests on.

A board is data (one TOML in ``targets/``); what a *TensorRT version* supports is a fact about
TensorRT, true on every board that runs it, so it lives here in code, once, with the document
each value was read from named beside it. The notes these were gathered into for edgeq are
``reference/tensorrt-jetson.md`` (TensorRT documentation 8.x-11.x, the onnx-tensorrt parser,
NVIDIA Model Optimizer); where a fact changes, change it here and cite the new source.
"""

from __future__ import annotations

from edgeq.errors import ConfigError

# Minimum TensorRT version per capability of a precision plan.
TRT_MIN_VERSION: dict[str, tuple[int, ...]] = {
    # Explicit quantization (Q/DQ nodes in the ONNX graph): TensorRT 8.0 release notes, and the
    # Developer Guide, "Explicit Versus Implicit Quantization".
    "int8": (8, 0),
    # fp16 predates every TensorRT a Jetson profile names; 7.0 is a floor, not a first release.
    "fp16": (7, 0),
    # INT4 weight-only (INT4 initializer -> DequantizeLinear(axis, block_size) -> MatMul/Gemm):
    # TensorRT 10.0 release notes; Developer Guide, "Working with Quantized Types".
    "int4_weight_only": (10, 0),
    # FP8 (E4M3) Q/DQ: Developer Guide 10.x, "Working with Quantized Types".
    "fp8": (10, 0),
    # FP4 (E2M1) Q/DQ, Blackwell only: TensorRT 10.8 release notes.
    "fp4": (10, 8),
}
# IBuilderConfig.set_memory_pool_limit / trtexec --memPoolSize replaced --workspace:
# TensorRT 8.4 release notes (setMaxWorkspaceSize deprecated).
TRT_WORKSPACE_POOL_MIN = (8, 4)
# Strongly typed networks (trtexec --stronglyTyped) for Q/DQ models: TensorRT 10.0 release notes,
# Developer Guide "Strongly Typed Networks".
TRT_STRONGLY_TYPED_MIN = (10, 0)
# Implicit quantization (--int8 + calibrator), --fp16, --best and --calib: deprecated in 10.1 and
# removed in 11.0, where every network is strongly typed: TensorRT 10.1 and 11.0 release notes.
TRT_IMPLICIT_REMOVED = (11, 0)
# DLA is missing from TensorRT 11.0 up to (not including) 11.4: TensorRT 11.x release notes,
# "Known limitations".
TRT_DLA_ABSENT = ((11, 0), (11, 4))
# The INT4 weight-only block every NVIDIA tool uses (Model Optimizer's default; TensorRT Edge-LLM
# supports only 128); the Developer Guide documents no smaller block.
INT4_TRT_BLOCK = 128

# The highest default-domain ONNX opset each TensorRT's ONNX parser reads, as the first line of
# onnx-tensorrt's docs/operators.md on that release's branch says it. A version between two rows
# takes the row at or below it (a parser never reads less than its predecessor did).
PARSER_MAX_OPSET: tuple[tuple[tuple[int, ...], int, str], ...] = (
    ((8, 0), 13, "onnx-tensorrt release/8.0 docs/operators.md: 'TensorRT 8.0 supports operators up to Opset 13'"),
    ((8, 2), 13, "onnx-tensorrt release/8.2-GA docs/operators.md: 'TensorRT 8.2 supports operators up to Opset 13'"),
    ((8, 4), 13, "onnx-tensorrt release/8.4-GA docs/operators.md: 'TensorRT 8.4 supports operators up to Opset 13'"),
    ((8, 5), 17, "onnx-tensorrt release/8.5-GA docs/operators.md: 'TensorRT 8.5 supports operators up to Opset 17'"),
    ((8, 6), 17, "onnx-tensorrt release/8.6-GA docs/operators.md: 'TensorRT 8.6 supports operators up to Opset 17'"),
    ((9, 2), 19, "onnx-tensorrt release/9.2 docs/operators.md: 'TensorRT 9.2 supports operators up to Opset 19'"),
    ((10, 0), 20, "onnx-tensorrt release/10.0-GA docs/operators.md: 'the inclusive range of opset 9 to opset 20'"),
    ((10, 15), 24, "onnx-tensorrt release/10.15-GA docs/operators.md: 'the inclusive range of opset 9 to opset 24'"),
)
# Quantization operators TensorRT parses at a newer opset than its parser's ceiling: the opsets
# that first define the types and attributes its quantized-type support needs. (op, first
# TensorRT, opset, source). INT4 blocks need DequantizeLinear-21 (block_size, INT4); FP4 needs
# DequantizeLinear-23 (FLOAT4E2M1), which TensorRT 10.8's NVFP4 support reads as ModelOpt writes it.
PARSED_ABOVE_CEILING: tuple[tuple[str, tuple[int, ...], int, str], ...] = (
    ("DequantizeLinear", (10, 0), 21, "TensorRT 10.0 Developer Guide, 'Working with Quantized Types': INT4 "
     "block quantization is DequantizeLinear with block_size (ONNX opset 21)"),
    ("QuantizeLinear", (10, 0), 21, "same guide: Q/DQ with INT4 and block_size (ONNX opset 21)"),
    ("DequantizeLinear", (10, 8), 23, "TensorRT 10.8 release notes: FP4 (E2M1) Q/DQ for Blackwell; FLOAT4E2M1 "
     "first exists in DequantizeLinear-23; NVIDIA Model Optimizer exports NVFP4 that way"),
)
# What a Q/DQ element type needs from TensorRT's parser ("Supported Types" of DequantizeLinear in
# operators.md: INT8 from 8.0; INT8, FP8, INT4 from 10.0; FP4 added in 10.8).
QDQ_TYPE_MIN_VERSION: dict[str, tuple[int, ...]] = {"int8": (8, 0), "fp8": (10, 0), "int4": (10, 0), "fp4": (10, 8)}
# The fp8 (E4M3) and fp4 (E2M1) tensor cores: Ada (sm 8.9), Hopper (9.0) and Blackwell (10.0 and
# later, Thor 11.0) for FP8, Blackwell only for FP4. TensorRT Support Matrix 10.8+, "GPU Architecture and Precision
# Support". No Jetson before Thor (sm 11.0) has either.
FP8_MIN_COMPUTE = (8, 9)
FP4_MIN_COMPUTE = (10, 0)
# int8 tensor cores: Turing and later, plus Volta's sm 7.2 (Xavier) int8 DLA/GPU; TensorRT has no
# int8 kernels for Maxwell sm 5.3 (Jetson Nano): TensorRT Support Matrix, "Hardware and Precision".
INT8_MIN_COMPUTE = (6, 1)
# DLA exists on Xavier (sm 7.2) and Orin (sm 8.7) only: the Jetson module data sheets; TensorRT
# Developer Guide, "Working with DLA" (fp16 and int8 only).
DLA_COMPUTE = ((7, 2), (8, 7))
DLA_PRECISIONS = ("fp16", "int8")
# JetPack -> TensorRT, from each JetPack's release notes (the versions every profile may name).
JETPACK_TENSORRT: dict[str, str] = {
    "4.6": "8.2.1",  # JetPack 4.6 release notes
    "5.1": "8.5.2",  # JetPack 5.1 release notes
    "6.0": "8.6.2",  # JetPack 6.0 release notes
    "6.1": "10.3.0",  # JetPack 6.1 release notes
    "6.2": "10.3.0",  # JetPack 6.2 release notes
    "7.0": "10.13.0",  # JetPack 7.0 release notes (Thor, CUDA 13)
    "7.1": "10.13.0",  # JetPack 7.1 release notes
    "7.2": "10.16.0",  # JetPack 7.2 release notes
}


def parser_max_opset(version: tuple[int, ...]) -> int:
    """The highest opset TensorRT ``version``'s ONNX parser reads (see ``PARSER_MAX_OPSET``)."""
    rows = [opset for first, opset, _ in PARSER_MAX_OPSET if version >= first]
    if not rows:
        raise ConfigError(f"TensorRT {format_version(version)}: edgeq knows TensorRT 8.0 and newer only")
    return rows[-1]


def parsed_above_ceiling(op_type: str, version: tuple[int, ...]) -> int:
    """The highest opset TensorRT ``version`` parses ``op_type`` at (its ceiling unless listed above)."""
    opsets = [opset for op, first, opset, _ in PARSED_ABOVE_CEILING if op == op_type and version >= first]
    return max([parser_max_opset(version), *opsets])


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


def format_version(version: tuple[int, ...]) -> str:
    """``(10, 3)`` -> ``"10.3"``, as TensorRT versions are written in messages."""
    return ".".join(str(v) for v in version)

# ---- decoders: which weight-only formats a runtime executes -------------------------------------
# MatMulNBits bits per onnxruntime execution provider. 4 bits: the op's first kernels, CPU and CUDA
# (microsoft/onnxruntime#17890, 2023-10). 2 bits on the CPU: microsoft/onnxruntime#25582 ("Enable
# 2bit CPU matmul fallback", merged 2025-07-29; dequantizes to fp32). 2 bits on CUDA:
# microsoft/onnxruntime#32693 ("[CUDA] Add 2-bit MatMulNBits support", merged 2026-09-18); CUDA
# builds before it accept only 4 and 8 bits. Which release first shipped #32693 is not checked here.
ORT_MATMULNBITS_2BIT_SOURCE = {
    "cpu": "microsoft/onnxruntime#25582 (merged 2025-07-29)",
    "cuda": "microsoft/onnxruntime#32693 (merged 2026-09-18); older CUDA builds run only 4 and 8 bits",
}
# INT4 block-quantized DequantizeLinear weights under TensorRT: TRT_MIN_VERSION["int4_weight_only"]
# (10.0) above. A decoder's memory on a board is its weights plus the KV cache at the context it is
# run with (2 x layers x KV heads x head size x dtype bytes per token), in the board's unified memory.
