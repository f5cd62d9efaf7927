"""The bundle's ``manifest.json``: the only contract between edgeq and the board's runtime.

The schema is ``edgeq_runtime.manifest``'s; this fills it from the precision plan and the export
result: every file with its sha256, the tensors, the target settings the runtime's engine builder
reads, the evidence (lint, verification) and the tool versions that produced the bundle.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeq.errors import ConfigError
from edgeq.export.feeds import graph_inputs, value_dims
from edgeq.export.layout import CACHE_NAME, MODEL_NAME
from edgeq.export.result import ExportResult
from edgeq.graph.session import session_config
from edgeq.targets import PrecisionPlan, TargetProfile


def tool_versions(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Versions of the packages that made the bundle (``extra``: e.g. the TensorRT that built the engine)."""
    import onnxruntime

    import edgeq

    versions = {
        "edgeq": edgeq.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    versions.update(extra or {})
    return versions


def tensor_specs(model: onnx.ModelProto, values: Sequence[onnx.ValueInfoProto]) -> list[Any]:
    """The manifest's view of graph inputs or outputs: name, numpy dtype name, dims."""
    from edgeq_runtime.manifest import TensorSpec

    specs = []
    for value in values:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)).name
        specs.append(TensorSpec(name=value.name, dtype=dtype, shape=value_dims(value)))
    return specs


def target_section(
    profile: TargetProfile, plan: PrecisionPlan, opset: int, dynamic: Mapping[str, Sequence[int]],
    model: onnx.ModelProto | None = None,
) -> dict[str, Any]:
    """The target settings the runtime needs (for TensorRT: the engine builder's settings)."""
    strongly = plan.strongly_typed and plan.dla_core is None
    target: dict[str, Any] = {
        "name": profile.name,
        "display_name": profile.display_name,
        "backend": "tensorrt" if profile.uses_tensorrt else "ort",
        "opset": opset,
        "profile_source": Path(profile.source).name,
    }
    config = session_config(model) if model is not None else {}
    if config:  # onnxruntime session config entries the runtime sets (edgeq.graph.session.session_config)
        target["ort_session_config"] = config
    if profile.uses_tensorrt:
        target.update({
            "jetpack": plan.jetpack,
            "tensorrt_version": plan.tensorrt,
            "compute_capability": profile.gpu.compute_capability if profile.gpu else None,
            "strongly_typed": strongly,
            "fp16": (not strongly) and plan.float_precision == "fp16",
            "int8": (not strongly) and (plan.quantization == "implicit" or plan.activations == "int8"),
            # Which int8: TensorRT 8.x needs the INT8 flag for Q/DQ networks too, so the flag alone
            # does not say whether the scales are in the graph or in the calibration cache.
            "int8_mode": None if strongly or not (plan.quantization == "implicit" or plan.activations == "int8")
            else ("implicit" if plan.quantization == "implicit" else "explicit"),
            # Which quantization, in one word: Q/DQ in a strongly typed network (TensorRT >= 10),
            # Q/DQ with builder flags (TensorRT 8.x), scales in the calibration cache, or none.
            "quantization": "none" if plan.quantization == "none" else (
                "strongly_typed" if strongly and plan.quantization == "explicit" else plan.quantization),
            "dla_core": plan.dla_core,
            "gpu_fallback": plan.gpu_fallback,
            "workspace_mib": profile.memory.workspace_mib,
            "calibration_cache": CACHE_NAME if plan.calibration_cache else None,
            "build_shapes": {k: list(v) for k, v in dynamic.items()},
        })
    return target


def precision_section(plan: PrecisionPlan, result: ExportResult) -> dict[str, Any]:
    """The plan, what the model already carried, and the evidence that the bundle is right."""
    return {
        **plan.to_dict()["_data"],
        "description": plan.describe(),
        "model_formats": result.model_formats,
        "quantization": result.quantization,
        "widening": result.widening,
        "fp16": result.fp16,
        "tensorrt_lint": result.lint,
        "verification": result.verification,
        "notes": [*plan.notes, *result.notes],
    }


def write_manifest(
    folder: Path, files: list[str], model: onnx.ModelProto, profile: TargetProfile, plan: PrecisionPlan,
    result: ExportResult, dynamic: Mapping[str, Sequence[int]], engine: str | None, trt_version: str | None,
    decoder: Mapping[str, Any] | None = None,
) -> None:
    """``folder/manifest.json`` describing ``files`` (already written in ``folder``); ``decoder`` is the
    decoder block (``export.decoder.decoder_section``), validated by the runtime's own reader."""
    from edgeq_runtime.decoder_spec import DecoderSpec
    from edgeq_runtime.errors import BundleError
    from edgeq_runtime.manifest import Manifest, utc_now_iso

    from edgeq.graph.opset import opset_version

    manifest = Manifest(
        model=MODEL_NAME,
        files=Manifest.describe_files(folder, files),
        inputs=tensor_specs(model, graph_inputs(model)),
        outputs=tensor_specs(model, list(model.graph.output)),
        precision=precision_section(plan, result),
        target=target_section(profile, plan, opset_version(model), dynamic, model),
        tool_versions=tool_versions({"tensorrt": trt_version} if trt_version else None),
        engine=engine,
        created=utc_now_iso(),
    )
    if decoder is not None:
        try:
            manifest.decoder = DecoderSpec.from_dict(dict(decoder), "decoder block")
        except BundleError as exc:
            raise ConfigError(str(exc)) from None
    manifest.write(folder)
