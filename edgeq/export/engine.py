"""Build a TensorRT engine from a bundle with the ``tensorrt`` Python API, when it is installed.

The engine must be built on the board (it runs only on the GPU and TensorRT it was built with),
so this is what ``edgeq export --build-engine`` runs on a Jetson with JetPack, and what the
bundle's ``build.sh`` does with trtexec elsewhere. The builder settings mirror ``build.sh``:

- TensorRT >= 10 and no DLA: a strongly typed network (the Q/DQ and fp16 types of the ONNX decide
  every precision; precision flags are not allowed with it);
- TensorRT 8.x, or DLA: explicit batch, FP16 (+ INT8) builder flags; implicit int8 reads the
  bundle's calibration cache through an IInt8EntropyCalibrator2 that only returns the cache;
- the workspace pool from the target profile (``max_workspace_size`` before TensorRT 8.4), a
  timing cache kept next to the engine so rebuilds are fast, DLA core + GPU fallback.

``tensorrt`` is imported inside ``build_engine`` only: importing edgeq never loads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.errors import MissingDependencyError, UnsupportedError
from edgeq.targets import TRT_STRONGLY_TYPED_MIN, TRT_WORKSPACE_POOL_MIN, PrecisionPlan, parse_version


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


def _network_flags(trt: Any, version: tuple[int, ...], strongly_typed: bool) -> int:
    flags = 0
    if version < (10, 0):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


def _cache_calibrator(trt: Any, cache: bytes) -> Any:
    """An IInt8EntropyCalibrator2 that never calibrates: it hands TensorRT the bundle's cache."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: Sequence[str]) -> None:
            return None  # no data: the cache has every scale

        def read_calibration_cache(self) -> bytes:
            return cache

        def write_calibration_cache(self, data: bytes) -> None:
            return None

    return CacheCalibrator()


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
    strongly_typed = plan.strongly_typed and plan.dla_core is None and version >= TRT_STRONGLY_TYPED_MIN
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, version, strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise UnsupportedError(f"{onnx_path}: TensorRT {trt.__version__} cannot parse the model: {errors[0] if errors else 'unknown error'}")

    config = builder.create_builder_config()
    workspace = int(workspace_mib) << 20
    if version >= TRT_WORKSPACE_POOL_MIN:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:
        config.max_workspace_size = workspace
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, False)

    if not strongly_typed:
        if plan.float_precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        if plan.quantization == "implicit" or (plan.quantization == "explicit" and plan.activations == "int8"):
            config.set_flag(trt.BuilderFlag.INT8)
        if plan.quantization == "implicit":
            if calibration_cache is None or not Path(calibration_cache).is_file():
                raise UnsupportedError(f"{onnx_path}: implicit int8 needs the bundle's calibration.cache")
            config.int8_calibrator = _cache_calibrator(trt, Path(calibration_cache).read_bytes())
    if plan.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(plan.dla_core)
        if plan.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    dynamic = [network.get_input(i) for i in range(network.num_inputs)]
    dynamic = [t for t in dynamic if any(d < 0 for d in t.shape)]
    if dynamic:
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            if not shapes or tensor.name not in shapes:
                raise UnsupportedError(
                    f"{onnx_path}: input {tensor.name} has dynamic shape {tuple(tensor.shape)}; give its build shape"
                )
            dims = tuple(int(d) for d in shapes[tensor.name])
            profile.set_shape(tensor.name, dims, dims, dims)
        config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UnsupportedError(f"{onnx_path}: TensorRT {trt.__version__} could not build an engine (see its log above)")
    data = bytes(serialized)
    atomic_write_bytes(engine_path, data)
    atomic_write_bytes(timing_path, bytes(config.get_timing_cache().serialize()))
    return EngineBuild(engine_path, timing_path, str(trt.__version__), strongly_typed, len(data))
