"""TensorRT backend: run a serialized engine, or build one from the bundle's ONNX and cache it.

An engine runs only on the GPU model and TensorRT version it was built with, so a bundle carries
the ONNX and the engine is built on the device on first use. The cache key holds the GPU name,
compute capability, TensorRT version, the ONNX file's sha256, the builder settings and the input
shapes: change any of them and a new engine is built instead of a stale one being loaded.

The build itself is ``edgeq_runtime.engine_build`` (shared with ``edgeq export --build-engine``).
``tensorrt`` comes with JetPack (it is not a pip dependency) and is imported only here, inside the
methods. Needs the name-based tensor API of TensorRT 8.5+ (JetPack 5.1 and newer).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from edgeq_runtime._fileio import atomic_write_bytes, sha256_file
from edgeq_runtime.backends import register
from edgeq_runtime.backends.base import Backend, BackendOptions, OpTime
from edgeq_runtime.engine_build import build_serialized_engine, build_settings, version_tuple
from edgeq_runtime.errors import BundleError, MissingDependencyError
from edgeq_runtime.manifest import TensorSpec

log = logging.getLogger(__name__)

TENSORRT_MISSING = (
    "TensorRT backend needs the tensorrt Python package (JetPack ships it): on a Jetson use the system "
    "python3 or a venv made with --system-site-packages; on x86 pip install tensorrt; or use --backend ort"
)
MIN_VERSION = (8, 5)


def _import_trt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise MissingDependencyError(TENSORRT_MISSING) from None
    return tensorrt


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgeq_runtime" / "engines"


def engine_cache_path(
    cache_dir: Path, gpu_name: str, compute_capability: str, trt_version: str, model_sha256: str,
    settings: Mapping[str, Any],
) -> Path:
    """Where the engine for this exact (GPU, TensorRT, model, settings) combination is cached."""
    key = json.dumps(
        {"gpu": gpu_name, "cc": compute_capability, "tensorrt": trt_version, "model": model_sha256,
         "settings": settings},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    safe_gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-") or "gpu"
    return Path(cache_dir) / (safe_gpu + "-sm" + compute_capability.replace(".", "") + "-trt" + trt_version + "-"
                              + digest + ".engine")


def _spec_from_engine(trt: Any, engine: Any, name: str) -> TensorSpec:
    dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
    dims: List[Union[int, str]] = []
    for i, dim in enumerate(engine.get_tensor_shape(name)):
        dims.append(int(dim) if int(dim) >= 0 else name + "_dim" + str(i))
    return TensorSpec(name=name, dtype=dtype, shape=dims)


@register
class TensorRTBackend(Backend):
    """Runs a TensorRT engine with the name-based tensor API (TensorRT 8.5+)."""

    name = "tensorrt"

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        try:
            _import_trt()
        except MissingDependencyError as exc:
            return str(exc)
        return None

    def __init__(self, model_path: Optional[Path], engine_path: Optional[Path], options: BackendOptions) -> None:
        trt = _import_trt()
        self._trt = trt
        self.trt_version = str(trt.__version__)
        if version_tuple(self.trt_version) < MIN_VERSION:
            raise BundleError(
                "TensorRT " + self.trt_version + " is older than 8.5 (JetPack 4): edgeq-runtime's TensorRT backend "
                "needs the name-based tensor API; use --backend ort"
            )
        from edgeq_runtime.backends._cuda import CudaRuntime

        self._cuda = CudaRuntime()
        device = self._cuda.current_device()
        self.gpu_name = self._cuda.device_name(device)
        self.compute_capability = self._cuda.compute_capability(device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._options = options
        self.engine_source = ""
        engine = None
        if engine_path is not None:
            engine = self._deserialize(Path(engine_path))
            if engine is None and model_path is None:
                raise BundleError(
                    str(engine_path) + ": TensorRT " + self.trt_version + " cannot load this engine (it runs only on the "
                    "GPU and TensorRT version it was built with); ship the ONNX model to rebuild it"
                )
            if engine is None:
                log.warning("%s does not load on %s with TensorRT %s; rebuilding from %s",
                            engine_path, self.gpu_name, self.trt_version, model_path)
            else:
                self.engine_source = str(engine_path)
        if engine is None:
            if model_path is None:
                raise BundleError("the TensorRT backend needs an ONNX model or a serialized engine")
            engine = self._cached_or_built(Path(model_path))
        self._engine = engine
        self._context = engine.create_execution_context()
        if self._context is None:
            raise BundleError("TensorRT could not create an execution context (out of GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        input_mode = trt.TensorIOMode.INPUT
        self._input_names = [n for n in names if engine.get_tensor_mode(n) == input_mode]
        self._output_names = [n for n in names if engine.get_tensor_mode(n) != input_mode]
        self.inputs = [_spec_from_engine(trt, engine, n) for n in self._input_names]
        self.outputs = [_spec_from_engine(trt, engine, n) for n in self._output_names]
        self.providers = ["TensorRT " + self.trt_version + " (" + self.gpu_name + ")"]
        self._stream = self._cuda.stream_create()
        self._buffers: Dict[str, Tuple[int, int]] = {}  # name -> (device pointer, capacity in bytes)

    # ---- engine loading and building ----------------------------------------------------------
    def _deserialize(self, path: Path) -> Any:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BundleError(str(path) + ": cannot read engine (" + str(exc) + ")") from None
        return self._runtime.deserialize_cuda_engine(data)

    def _cached_or_built(self, model_path: Path) -> Any:
        settings = build_settings(self._options.target, self._options.shapes, self._options.calibration_cache)
        model_sha = self._options.model_sha256 or sha256_file(model_path)
        cache_dir = Path(self._options.cache_dir) if self._options.cache_dir else default_cache_dir()
        cached = engine_cache_path(cache_dir, self.gpu_name, self.compute_capability, self.trt_version, model_sha, settings)
        if cached.is_file():
            engine = self._deserialize(cached)
            if engine is not None:
                self.engine_source = str(cached)
                return engine
            log.warning("cached engine %s does not load; rebuilding it", cached)
        log.warning("building a TensorRT engine for %s on %s (first use; cached in %s)", model_path, self.gpu_name, cached)
        # Implicit int8 takes its scales from the cache; explicit Q/DQ carries them (build_settings' int8_mode).
        serialized = build_serialized_engine(self._trt, model_path, settings, logger=self._logger,
                                             calibration_cache=self._options.calibration_cache)
        atomic_write_bytes(cached, serialized)
        engine = self._runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            raise BundleError(str(model_path) + ": TensorRT built an engine it then could not load")
        self.engine_source = str(cached) + " (built now)"
        return engine

    # ---- inference ------------------------------------------------------------------------------
    def _buffer(self, name: str, nbytes: int) -> int:
        pointer, capacity = self._buffers.get(name, (0, 0))
        if capacity < nbytes:
            self._cuda.free(pointer)
            pointer, capacity = self._cuda.malloc(nbytes), nbytes
            self._buffers[name] = (pointer, capacity)
        return pointer

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return self._execute(self._context, feeds)

    def profile_ops(self, feeds: Mapping[str, np.ndarray], runs: int) -> Optional[List[OpTime]]:
        """Per-layer GPU times from TensorRT's ``IProfiler`` on a second execution context.

        The timed runs never carry the profiler (it synchronises after every layer); host <-> device
        copies are not layers, so they are excluded from these times (the latency includes them).
        """
        from edgeq_runtime.trt_hooks import aggregate_layer_times, make_profiler

        context = self._engine.create_execution_context()
        if context is None:
            return None
        profiler = make_profiler(self._trt)
        context.profiler = profiler
        for _ in range(max(1, runs) + 1):  # + 1: the first run is dropped as warm-up
            profiler.next_run()
            self._execute(context, feeds)
        return aggregate_layer_times(profiler.runs)

    def _execute(self, context: Any, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        hosts = {}
        for name in self._input_names:
            array = np.ascontiguousarray(feeds[name])
            hosts[name] = array  # keep alive until the stream is synchronised
            context.set_input_shape(name, tuple(array.shape))
            pointer = self._buffer(name, array.nbytes)
            context.set_tensor_address(name, pointer)
            self._cuda.copy_to_device(pointer, array.ctypes.data, array.nbytes, self._stream)
        results: Dict[str, np.ndarray] = {}
        for name in self._output_names:
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            dtype = np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name)))
            out = np.empty(shape, dtype=dtype)
            pointer = self._buffer(name, out.nbytes)
            context.set_tensor_address(name, pointer)
            results[name] = out
        if not context.execute_async_v3(self._stream):
            raise BundleError("TensorRT execution failed (see the TensorRT log above)")
        for name, out in results.items():
            self._cuda.copy_to_host(out.ctypes.data, self._buffers[name][0], out.nbytes, self._stream)
        self._cuda.synchronize(self._stream)
        return results

    def versions(self) -> Dict[str, str]:
        return {"tensorrt": self.trt_version}

    def close(self) -> None:
        for pointer, _ in self._buffers.values():
            self._cuda.free(pointer)
        self._buffers = {}
        self._cuda.stream_destroy(self._stream)
        self._stream = 0
        self._context = None
        self._engine = None
