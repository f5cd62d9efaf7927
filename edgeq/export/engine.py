"""Build a TensorRT engine for a bundle here, with the ``tensorrt`` Python API, when it is installed.

The engine must be built on the board (it runs only on the GPU and TensorRT it was built with),
so this is what ``edgeq export --build-engine`` runs on a Jetson with JetPack, and what the
bundle's ``build.sh`` does with trtexec elsewhere. The build itself is the runtime's
(``edgeq_runtime.engine_build``, the one builder the board uses too); this module turns the
precision plan into its settings, the same way the manifest does:

- TensorRT >= 10 and no DLA: a strongly typed network (precision flags are not allowed with it);
- TensorRT 8.x, or DLA: FP16 (+ INT8) builder flags; implicit int8 reads the bundle's
  calibration cache; DLA core with GPU fallback;
- the workspace pool from the target profile, and a timing cache kept next to the engine so
  rebuilds are fast.

``tensorrt`` is imported inside ``build_engine`` only: importing edgeq never loads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.errors import MissingDependencyError, UnsupportedError
from edgeq.targets import TRT_STRONGLY_TYPED_MIN, PrecisionPlan, parse_version


@dataclass
class EngineBuild:
    engine: Path
    timing_cache: Path
    tensorrt_version: str
    strongly_typed: bool
    bytes: int


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or a one-line error naming the extra and JetPack."""
    try:
        import tensorrt
    except ImportError:
        raise MissingDependencyError(
            "tensorrt", "trt", "building a TensorRT engine (on a Jetson, tensorrt comes with JetPack)"
        ) from None
    return tensorrt


def engine_settings(
    plan: PrecisionPlan, workspace_mib: int, shapes: Mapping[str, Sequence[int]] | None, version: tuple[int, ...]
) -> dict[str, Any]:
    """The runtime builder's settings for ``plan`` on the installed TensorRT ``version``."""
    strongly_typed = plan.strongly_typed and plan.dla_core is None and version >= TRT_STRONGLY_TYPED_MIN
    return {
        "strongly_typed": strongly_typed,
        "fp16": plan.float_precision == "fp16",
        "int8": plan.quantization == "implicit" or (plan.quantization == "explicit" and plan.activations == "int8"),
        "dla_core": plan.dla_core,
        "workspace_mib": int(workspace_mib),
        "shapes": {name: [int(d) for d in dims] for name, dims in (shapes or {}).items()},
    }


def build_engine(
    onnx_path: str | Path,
    plan: PrecisionPlan,
    workspace_mib: int,
    engine_path: str | Path,
    timing_cache_path: str | Path | None = None,
    calibration_cache: str | Path | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> EngineBuild:
    """Build and serialise an engine for ``plan``; written atomically, timing cache updated."""
    trt = import_tensorrt()
    from edgeq_runtime.engine_build import build_serialized_engine
    from edgeq_runtime.errors import BundleError

    from edgeq.fileio import atomic_write_bytes

    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path)
    timing_path = Path(timing_cache_path) if timing_cache_path else engine_path.with_name("timing.cache")
    version = parse_version(trt.__version__)
    if plan.tensorrt and parse_version(plan.tensorrt)[0] != version[0]:
        raise UnsupportedError(
            f"{onnx_path}: exported for TensorRT {plan.tensorrt}, but this machine has TensorRT {trt.__version__}; "
            f"re-export with the right --jetpack for {plan.target}"
        )
    settings = engine_settings(plan, workspace_mib, shapes, version)
    try:
        data = build_serialized_engine(
            trt, onnx_path, settings,
            calibration_cache=Path(calibration_cache) if calibration_cache is not None else None,
            implicit_int8=plan.quantization == "implicit", timing_cache=timing_path,
        )
    except BundleError as exc:
        raise UnsupportedError(str(exc)) from None
    atomic_write_bytes(engine_path, data)
    return EngineBuild(engine_path, timing_path, str(trt.__version__), settings["strongly_typed"], len(data))
