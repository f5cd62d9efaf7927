"""Step 1 of export: the model that goes in, quantized if asked, and the copy that becomes the bundle.

The reference is what the bundle must match in onnxruntime: the quantized model (``--weights`` /
``--activations``), the input model when it is already quantized or stays float, or for DLA's
implicit int8 the Q/DQ model (the bundle gets it as float + a calibration cache) or the float
model (the scales come from calibration).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from edgeq.errors import DataError
from edgeq.export.detect import ModelFormats
from edgeq.export.layout import CACHE_NAME
from edgeq.targets import PrecisionPlan, TargetProfile

if TYPE_CHECKING:
    from edgeq.calibrate.table import CalibrationTable
    from edgeq.data.source import DataSource
    from edgeq.quantize.config import QuantizeConfig
    from edgeq.quantize.summary import QuantizationSummary


@dataclass
class Reference:
    """The model the bundle is checked against, and the bundle's own copy to fit to the target."""

    model: onnx.ModelProto
    name: str  # how the verification record names it
    bundle_model: onnx.ModelProto
    quantization: dict[str, Any] = field(default_factory=dict)  # the quantizer's summary, if it ran
    cache_text: str | None = None  # calibration.cache for implicit int8
    notes: list[str] = field(default_factory=list)


def calibration_inputs(
    data: str | Path | DataSource | None, calib: str | Path | None, model: onnx.ModelProto, onnx_path: Path,
    formats: ModelFormats, plan: PrecisionPlan, samples: int | None, batch_size: int,
) -> tuple[DataSource | None, CalibrationTable | None, list[str]]:
    """(data source, calibration table, notes) from ``--data`` / ``--calib``, either or both absent."""
    source: DataSource | None = None
    table: CalibrationTable | None = None
    notes: list[str] = []
    if calib is not None:  # the one table reader, as edgeq quantize; with --data too, the data decides the ranges
        from edgeq.calibrate.table import BOTH_GIVEN_NOTE, load_calibration

        table = load_calibration(calib, onnx_path)
        if data is not None and plan.quantization == "implicit" and not formats.quantized:
            notes.append(BOTH_GIVEN_NOTE)  # (explicit: the quantization summary says it)
    if data is not None:
        from edgeq.data import load_data

        source = load_data(data, model, samples=samples, batch_size=batch_size)
    return source, table, notes


def reference_model(
    model: onnx.ModelProto, model_path: Path, formats: ModelFormats, plan: PrecisionPlan, profile: TargetProfile,
    method: str | None, source: DataSource | None, table: CalibrationTable | None, progress: bool,
) -> Reference:
    """The reference for ``plan`` (quantizing ``model`` when the plan asks and it is still float)."""
    if plan.quantization == "implicit":
        cache_text, bundle_model, reference, ref_name = _implicit(model, formats, plan, source, table, progress)
        return Reference(reference, ref_name, bundle_model, cache_text=cache_text,
                         notes=[f"{len(cache_text.splitlines()) - 1} tensor scales in {CACHE_NAME}"])
    quant_summary: dict[str, Any] = {}
    needs_quantizer = not formats.quantized and (plan.quantization == "explicit" or plan.widening is not None)
    if needs_quantizer:
        reference, summary = _quantize(model, model_path, plan, profile, method, source, table, progress)
        quant_summary = _summary_record(summary)
        ref_name = "the quantized model"
    else:
        reference = model
        ref_name = "the input model"
    bundle_model = onnx.ModelProto()
    bundle_model.CopyFrom(reference)
    return Reference(reference, ref_name, bundle_model, quantization=quant_summary)


def _summary_record(summary: QuantizationSummary) -> dict[str, Any]:
    """The quantization summary as the manifest and ``--json`` carry it."""
    return {
        "text": summary.format_text(max_rows=0).splitlines()[0],
        "quantized_nodes": len(summary.quantized),
        "left_in_float": [{"name": n.name, "op_type": n.op_type, "reason": n.reason} for n in summary.left_in_float],
        "weight_bytes_before": summary.weight_bytes_before,
        "weight_bytes_after": summary.weight_bytes_after,
        "notes": list(summary.notes),
    }


def _quantize(
    model: onnx.ModelProto,
    model_path: Path,
    plan: PrecisionPlan,
    profile: TargetProfile,
    method: str | None,
    source: DataSource | None,
    table: CalibrationTable | None,
    progress: bool,
) -> tuple[onnx.ModelProto, QuantizationSummary]:
    from edgeq.quantize import Int8Config, QuantizeInputs, WeightOnlyConfig, quantize

    config: QuantizeConfig
    if plan.activations == "fp8" or plan.weights == "nvfp4":
        config = _tensorrt_float_config(plan, source, table)
    elif plan.activations == "int8":
        if source is None and table is None:
            raise DataError("--activations int8 needs calibration: pass --data (samples) or --calib (a table from edgeq calibrate)")
        # TensorRT's rules for TensorRT boards; for onnxruntime the same numbers in the layout its
        # CPU kernels fuse (and, where the board file says so, weights that cannot saturate).
        config = (
            Int8Config()
            if profile.uses_tensorrt
            else Int8Config(layout="onnxruntime", reduce_range=profile.onnx.int8_reduce_range)
        )
    else:
        weights = plan.widening.source if plan.widening else plan.weights
        if profile.uses_tensorrt:
            fmt = "bnb4" if weights in ("nf4", "fp4") else "qdq"
        else:
            fmt = plan.onnx_format or "matmulnbits"
        config = WeightOnlyConfig(
            weights=weights,  # type: ignore[arg-type]
            block_size=plan.block_size or 32,
            method=method or "rtn",  # type: ignore[arg-type]
            onnx_format=fmt,  # type: ignore[arg-type]
            symmetric=True,
            # TensorRT's INT4 weight-only covers MatMul/Gemm; a quantized Gather would not parse.
            embeddings=not profile.uses_tensorrt,
        )
    result = quantize(model, config, QuantizeInputs(source, table, str(model_path), progress))
    return result.model, result.summary


def _tensorrt_float_config(plan: PrecisionPlan, source: DataSource | None, table: CalibrationTable | None) -> QuantizeConfig:
    """FP8 W8A8 (needs calibration) or NVFP4 weight-only: the formats only TensorRT boards run."""
    from edgeq.quantize.config import Fp8Config, NvFp4Config

    if plan.activations == "fp8":
        if source is None and table is None:
            raise DataError("--activations fp8 needs calibration: pass --data (samples) or --calib (a table from edgeq calibrate)")
        return Fp8Config()
    return NvFp4Config()


def _implicit(
    model: onnx.ModelProto, formats: ModelFormats, plan: PrecisionPlan, source: DataSource | None, table: CalibrationTable | None, progress: bool
) -> tuple[str, onnx.ModelProto, onnx.ModelProto, str]:
    """(cache text, bundle model, reference, reference name) for DLA's implicit int8."""
    from edgeq.calibrate.trt_cache import format_cache
    from edgeq.export.build_script import trt_version_code

    assert plan.tensorrt is not None
    if formats.quantized:
        from edgeq.export.strip_qdq import strip_qdq

        float_model, amax = strip_qdq(model)
        reference, name = model, "the Q/DQ model (DLA gets it as float + scales)"
    else:
        if source is not None:  # measured on the data even when a table is given too (edgeq.calibrate.table)
            from edgeq.calibrate import calibrate

            table = calibrate(model, source, method="entropy", tensors="all", progress=progress)
        elif table is None:
            raise DataError("--dla with int8 needs calibration for TensorRT's cache: pass --data or --calib")
        amax = {t: table.amax(t) for t in table.tensors}
        float_model, reference, name = model, model, "the float model (int8 scales in calibration.cache)"
    text = format_cache(amax, str(trt_version_code(plan.tensorrt)), "EntropyCalibration2")
    bundle = onnx.ModelProto()
    bundle.CopyFrom(float_model)
    return text, bundle, reference, name
