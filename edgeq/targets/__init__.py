"""Target boards: what each can run, and a precision plan checked against it.

A board is data, not code: one TOML file in ``targets/`` (or the user's own path) says its GPU,
which TensorRT each JetPack brings, the precisions its hardware runs, its DLA cores, memory and
power rails. What a given *TensorRT version* can do (INT4 weight-only from 10.0, FP4 from 10.8,
no INT2/NF4 ever, no DLA in 11.0-11.3) is a fact about TensorRT, so it lives in code, once
(``facts``). ``check_plan`` combines the two and refuses what the target cannot run.

The modules, one concept each: ``facts`` (TensorRT versions and their sources), ``profile`` (the
validated dataclasses), ``schema`` (TOML validation), ``loading`` (finding profiles by name or
path), ``plan`` (``check_plan`` and ``PrecisionPlan``), ``text`` (``edgeq targets`` output).
"""

from __future__ import annotations

from edgeq.targets.facts import (
    INT4_TRT_BLOCK,
    TRT_DLA_ABSENT,
    TRT_IMPLICIT_REMOVED,
    TRT_MIN_VERSION,
    TRT_STRONGLY_TYPED_MIN,
    TRT_WORKSPACE_POOL_MIN,
    format_version,
    parse_version,
)
from edgeq.targets.loading import TARGETS_DIR, list_targets, load_target, load_target_file
from edgeq.targets.plan import ACTIVATION_FORMATS, WEIGHT_FORMATS, PrecisionPlan, Widening, check_plan
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
from edgeq.targets.schema import PROFILE_SCHEMA_VERSION, profile_from_dict
from edgeq.targets.text import format_target, format_targets_table

__all__ = [
    "ACTIVATION_FORMATS",
    "INT4_TRT_BLOCK",
    "PRECISION_KEYS",
    "PROFILE_SCHEMA_VERSION",
    "TARGETS_DIR",
    "TRT_DLA_ABSENT",
    "TRT_IMPLICIT_REMOVED",
    "TRT_MIN_VERSION",
    "TRT_STRONGLY_TYPED_MIN",
    "TRT_WORKSPACE_POOL_MIN",
    "WEIGHT_FORMATS",
    "DlaSpec",
    "GpuSpec",
    "MemorySpec",
    "OnnxSpec",
    "PowerSpec",
    "PrecisionPlan",
    "PrecisionSupport",
    "TargetProfile",
    "TensorRTSpec",
    "Widening",
    "check_plan",
    "format_target",
    "format_targets_table",
    "format_version",
    "list_targets",
    "load_target",
    "load_target_file",
    "parse_version",
    "profile_from_dict",
]
