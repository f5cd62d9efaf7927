"""Build a TensorRT engine from a bundle's ONNX: the one builder edgeq and the board share.

The board builds on first use (``edgeq_runtime.backends.tensorrt``); the workstation toolkit
builds when ``edgeq export --build-engine`` runs on a Jetson. Both call ``build_serialized_engine``
so the two can never disagree about what an engine for a bundle is. The settings mirror the
bundle's ``build.sh`` (trtexec):

- a strongly typed network when the bundle asks for one (TensorRT >= 10, no DLA): the ONNX's
  Q/DQ and fp16 types decide every precision, so no precision flag is set;
- otherwise explicit batch before TensorRT 10, the FP16 / INT8 builder flags, and for implicit
  int8 (DLA, TensorRT 8) a calibrator that only hands TensorRT the bundle's calibration cache;
- the workspace pool (``max_workspace_size`` before TensorRT 8.4); DLA core with GPU fallback
  always allowed (``trtexec --allowGPUFallback``), because DLA runs only a subset of layers;
- one optimisation profile with min = opt = max at the shape each dynamic input was given;
- optionally a timing cache read before and written after the build, so rebuilds are fast.

``tensorrt`` is never imported here: the caller passes the module it imported, so each side keeps
its own "tensorrt is missing" message. Python 3.8 compatible; never imports ``edgeq``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from edgeq_runtime._fileio import atomic_write_bytes, sha256_file
from edgeq_runtime.errors import BundleError
from edgeq_runtime.trt_hooks import BuildProgress, make_progress_monitor

# The same TensorRT fact as edgeq.targets.TRT_WORKSPACE_POOL_MIN (a test keeps them equal): the
# runtime cannot import edgeq.
WORKSPACE_POOL_MIN = (8, 4)  # set_memory_pool_limit; max_workspace_size before


# The bundle's target "quantization": Q/DQ in a strongly typed network (TensorRT >= 10), Q/DQ
# with the INT8 builder flag (TensorRT 8.x), scales from the calibration cache, or float.
QUANTIZATION_MODES = ("strongly_typed", "explicit", "implicit", "none")


def version_tuple(version: str) -> Tuple[int, ...]:
    """``"10.3.0.26"`` -> ``(10, 3, 0)``."""
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def int8_mode(target: Mapping[str, Any]) -> Optional[str]:
    """Which int8 the bundle asks for: "explicit" (Q/DQ nodes carry the scales; TensorRT 8.x still
    needs its INT8 builder flag for them), "implicit" (scales from the calibration cache), or None.

    Manifests written before ``int8_mode`` existed say only ``int8``: an implicit-int8 bundle
    always ships its calibration cache, so one without a cache is explicit Q/DQ.
    """
    declared = target.get("quantization")
    if declared is not None and declared not in QUANTIZATION_MODES:
        raise BundleError("manifest.json: target quantization " + repr(declared) + " is not one of "
                          + ", ".join(QUANTIZATION_MODES))
    if declared == "strongly_typed" and not target.get("strongly_typed"):
        raise BundleError("manifest.json: target quantization is strongly_typed but strongly_typed is false")
    if not target.get("int8") or target.get("strongly_typed"):
        return None
    mode = target.get("int8_mode")
    if mode is None and declared in ("explicit", "implicit"):
        mode = declared
    if mode in ("explicit", "implicit"):
        return str(mode)
    if mode is not None:
        raise BundleError("manifest.json: target int8_mode " + repr(mode) + " is not one of explicit, implicit")
    return "implicit" if target.get("calibration_cache") else "explicit"


def build_settings(
    target: Mapping[str, Any], shapes: Mapping[str, List[int]], calibration_cache: Optional[Path] = None
) -> Dict[str, Any]:
    """The builder settings that change an engine, taken from the bundle's target section.

    The dict is also the runtime's engine-cache key, so its keys and values must stay stable.
    """
    return {
        "calibration_cache_sha256": sha256_file(calibration_cache) if calibration_cache else None,
        "strongly_typed": bool(target.get("strongly_typed", False)),
        "fp16": bool(target.get("fp16", False)),
        "int8": bool(target.get("int8", False)),
        "int8_mode": int8_mode(target),
        "dla_core": target.get("dla_core"),
        "workspace_mib": target.get("workspace_mib"),
        "shapes": {name: list(shape) for name, shape in sorted(shapes.items())},
    }


def _cache_calibrator(trt: Any, cache: bytes) -> Any:
    """An entropy calibrator that never calibrates: it hands TensorRT the bundle's scales.

    Implicit int8 (TensorRT 8 boards, DLA) needs a calibrator object even when every scale is
    already known; returning the cache makes TensorRT skip calibration entirely.
    """

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: Any) -> None:
            return None  # no data: the cache has every scale

        def read_calibration_cache(self) -> bytes:
            return cache

        def write_calibration_cache(self, data: Any) -> None:
            return None

    return CacheCalibrator()


def _network(trt: Any, builder: Any, logger: Any, model_path: Path, strongly_typed: bool) -> Any:
    """The parsed network: explicit batch before TensorRT 10, strongly typed when asked."""
    version = str(trt.__version__)
    creation = trt.NetworkDefinitionCreationFlag
    flags = 0
    if version_tuple(version) < (10,):
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    if strongly_typed:
        if not hasattr(creation, "STRONGLY_TYPED"):
            raise BundleError("the bundle asks for a strongly typed engine, which TensorRT " + version
                              + " cannot build (needs 9.1+)")
        flags |= 1 << int(creation.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        first = errors[0].splitlines()[0] if errors else "unknown parser error"
        raise BundleError(str(model_path) + ": TensorRT " + version + " cannot parse the ONNX model (" + first
                          + (" and " + str(len(errors) - 1) + " more" if len(errors) > 1 else "") + ")")
    return network


def _set_workspace(trt: Any, config: Any, workspace_mib: Any) -> None:
    if not workspace_mib:
        return
    size = int(float(workspace_mib) * (1 << 20))
    if version_tuple(str(trt.__version__)) >= WORKSPACE_POOL_MIN:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, size)
    else:
        config.max_workspace_size = size


def _set_precision(
    trt: Any, config: Any, settings: Mapping[str, Any], calibration_cache: Optional[Path], implicit_int8: bool
) -> None:
    """Precision flags (only without strong typing) and DLA placement."""
    if not settings["strongly_typed"]:
        if settings["fp16"]:
            config.set_flag(trt.BuilderFlag.FP16)
        if settings["int8"]:
            config.set_flag(trt.BuilderFlag.INT8)
        if implicit_int8:
            if calibration_cache is None:
                raise BundleError("the bundle asks for implicit int8 but names no calibration cache; re-export it "
                                  "with calibration data")
            if not Path(calibration_cache).is_file():
                raise BundleError(str(calibration_cache) + ": the calibration cache implicit int8 needs is missing")
            config.int8_calibrator = _cache_calibrator(trt, Path(calibration_cache).read_bytes())
    if settings["dla_core"] is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(settings["dla_core"])
        # DLA runs a subset of layers; the rest go to the GPU (build.sh: --allowGPUFallback).
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def _set_shapes(builder: Any, config: Any, network: Any, shapes: Mapping[str, List[int]]) -> None:
    """One optimisation profile, min = opt = max: the shape the bundle was exported and verified at."""
    dynamic: List[Tuple[str, Tuple[int, ...]]] = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if any(int(d) < 0 for d in tensor.shape):
            shape = shapes.get(tensor.name)
            if shape is None:
                raise BundleError("input " + repr(tensor.name) + " has dynamic dims; give its shape (--shape "
                                  + tensor.name + ":1x128) to build a TensorRT engine")
            dynamic.append((tensor.name, tuple(int(d) for d in shape)))
    if dynamic:
        profile = builder.create_optimization_profile()
        for name, dims in dynamic:
            profile.set_shape(name, dims, dims, dims)
        config.add_optimization_profile(profile)


def build_serialized_engine(
    trt: Any,
    model_path: Path,
    settings: Mapping[str, Any],
    logger: Any = None,
    calibration_cache: Optional[Path] = None,
    implicit_int8: Optional[bool] = None,
    timing_cache: Optional[Path] = None,
    progress: Optional[BuildProgress] = None,
) -> bytes:
    """The serialized engine for ``model_path`` built with ``settings`` (see ``build_settings``).

    ``implicit_int8`` says the int8 scales come from ``calibration_cache`` (default: what the
    settings' ``int8_mode`` says, see ``int8_mode``). ``timing_cache``, when given,
    is read if it exists and rewritten (atomically) after the build. ``progress`` receives the
    build's phases through TensorRT 10's ``IProgressMonitor`` (default: logged as warnings, so a
    long build on a board is visibly alive). Every failure is one ``BundleError`` line.
    """
    logger = logger if logger is not None else trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = _network(trt, builder, logger, Path(model_path), bool(settings["strongly_typed"]))
    config = builder.create_builder_config()
    _set_workspace(trt, config, settings["workspace_mib"])
    if timing_cache is not None:
        timing = config.create_timing_cache(Path(timing_cache).read_bytes() if Path(timing_cache).is_file() else b"")
        config.set_timing_cache(timing, False)
    implicit = settings.get("int8_mode") == "implicit" if implicit_int8 is None else implicit_int8
    _set_precision(trt, config, settings, calibration_cache, implicit)
    _set_shapes(builder, config, network, settings["shapes"])
    monitor = make_progress_monitor(trt, progress or BuildProgress())
    if monitor is not None:  # TensorRT >= 10.0; the config holds it only for the build
        config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BundleError(str(model_path) + ": TensorRT " + str(trt.__version__) + " failed to build an engine (see "
                          "its log above)")
    if timing_cache is not None:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)
