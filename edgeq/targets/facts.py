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
