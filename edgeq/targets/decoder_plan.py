"""The decoder half of the plan check: does the model, with its KV cache at the context it will be
run with, fit the board, and does the board's runtime execute its weight-only format?

A decoder's memory grows with the context: ``kv_bytes_per_token x context`` on top of the weights,
in the board's unified memory (Jetson's CPU and GPU share it). That total is compared with the
memory sizes the profile lists: above the largest the plan is refused, naming the numbers; above
the smallest it fits only the bigger module, which a note says. Boards whose profile lists no
memory (the CPU targets: any machine) get a note instead of a number.
"""

from __future__ import annotations

from edgeq.errors import UnsupportedError
from edgeq.targets.facts import ORT_MATMULNBITS_2BIT_SOURCE, TRT_MIN_VERSION, format_version
from edgeq.targets.plan import PrecisionPlan
from edgeq.targets.profile import TargetProfile

_GB = 1 << 30


def _mb(value: float) -> str:
    return f"{value / (1 << 20):,.1f} MB"


def check_decoder_plan(
    profile: TargetProfile, plan: PrecisionPlan, kv_bytes_per_token: int, context_length: int, weight_bytes: int,
) -> list[str]:
    """Notes for the plan, or ``UnsupportedError`` when weights + KV cache exceed the board's memory."""
    notes: list[str] = []
    kv = kv_bytes_per_token * context_length
    total = kv + weight_bytes
    what = (f"weights {_mb(weight_bytes)} + KV cache {_mb(kv)} ({kv_bytes_per_token:,} B/token x {context_length} "
            f"tokens) = {_mb(total)}")
    sizes = sorted(profile.memory.sizes_gb)
    if not sizes:
        notes.append(f"decoder memory at context {context_length}: {what}; {profile.name} lists no memory size to check")
    elif total > sizes[-1] * _GB:
        raise UnsupportedError(
            f"{profile.name}: the decoder needs {what}, more than the board's largest memory ({sizes[-1]:g} GB); "
            f"pass a smaller --context-length (or --kv-cache int8 at quantize time)"
        )
    elif total > sizes[0] * _GB:
        notes.append(f"decoder needs {what}: fits the {sizes[-1]:g} GB {profile.display_name}, not the {sizes[0]:g} GB one")
    else:
        notes.append(f"decoder memory at context {context_length}: {what} (board memory {sizes[0]:g} GB and up)")
    if plan.stored_weights == "int2" and not profile.uses_tensorrt:
        notes.append(f"2-bit MatMulNBits runs on onnxruntime's CPU kernel since {ORT_MATMULNBITS_2BIT_SOURCE['cpu']}; "
                     f"on CUDA only with {ORT_MATMULNBITS_2BIT_SOURCE['cuda']}")
    if plan.stored_weights == "int4" and profile.uses_tensorrt:
        notes.append(f"INT4 block DequantizeLinear weights need TensorRT >= "
                     f"{format_version(TRT_MIN_VERSION['int4_weight_only'])} (this plan: {plan.tensorrt})")
    return notes
