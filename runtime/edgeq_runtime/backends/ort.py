"""ONNX Runtime backend: TensorRT, CUDA or CPU execution providers, whichever this machine has."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from edgeq_runtime.backends import register
from edgeq_runtime.backends.base import Backend, BackendOptions, OpTime, rank_op_times
from edgeq_runtime.errors import BundleError, MissingDependencyError
from edgeq_runtime.manifest import TensorSpec

# Best first. Others the user names explicitly (OpenVINO, ...) are passed through untouched.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


def _spec(name: str, ort_type: str, shape: Any, model: str) -> TensorSpec:
    if ort_type not in _ORT_TYPES:
        raise BundleError(model + ": tensor " + repr(name) + " has type " + ort_type + ", which edgeq-runtime cannot feed")
    dims: List[Union[int, str]] = []
    for i, dim in enumerate(shape or []):
        if (isinstance(dim, int) and dim >= 0) or (isinstance(dim, str) and dim):
            dims.append(dim)
        else:  # unnamed dynamic dimension
            dims.append(name + "_dim" + str(i))
    return TensorSpec(name=name, dtype=_ORT_TYPES[ort_type], shape=dims)


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError(
            "the ort backend needs the onnxruntime package (pip install onnxruntime, or onnxruntime-gpu; "
            "on Jetson the wheels from jetson-ai-lab / elinux.org)"
        ) from None
    return onnxruntime


@register
class OrtBackend(Backend):
    """Runs the ONNX model with onnxruntime; TensorRT/CUDA execution providers are used where installed."""

    name = "ort"

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        try:
            _import_ort()
        except MissingDependencyError as exc:
            return str(exc)
        return None

    def __init__(self, model_path: Optional[Path], engine_path: Optional[Path], options: BackendOptions) -> None:
        ort = _import_ort()
        if model_path is None:
            raise BundleError("the ort backend needs an ONNX model; " + str(engine_path) + " is a TensorRT engine")
        self._ort = ort
        self._model_path = Path(model_path)
        self._options = options
        available = list(ort.get_available_providers())
        self.providers_requested = self._choose_providers(options.providers, available)
        self._session = self._make_session(profile_prefix=None)
        self.providers = list(self._session.get_providers())
        self.inputs = [_spec(i.name, i.type, i.shape, str(model_path)) for i in self._session.get_inputs()]
        self.outputs = [_spec(o.name, o.type, o.shape, str(model_path)) for o in self._session.get_outputs()]
        self._output_names = [o.name for o in self.outputs]

    @staticmethod
    def _choose_providers(requested: Optional[List[str]], available: List[str]) -> List[str]:
        if requested:
            missing = [p for p in requested if p not in available]
            if missing:
                raise BundleError(
                    "execution provider " + ", ".join(missing) + " is not available in this onnxruntime build "
                    "(available: " + ", ".join(available) + ")"
                )
            return list(requested)
        return [p for p in PREFERRED_PROVIDERS if p in available]

    def _provider_options(self) -> List[Tuple[str, Dict[str, Any]]]:
        chosen: List[Tuple[str, Dict[str, Any]]] = []
        target = self._options.target
        for provider in self.providers_requested:
            settings: Dict[str, Any] = {}
            if provider == "TensorrtExecutionProvider":
                # ORT's TensorRT EP rebuilds engines every start unless cached; cache beside our own engines.
                if self._options.cache_dir is not None:
                    cache = Path(self._options.cache_dir) / "ort-trt"
                    cache.mkdir(parents=True, exist_ok=True)
                    settings["trt_engine_cache_enable"] = True
                    settings["trt_engine_cache_path"] = str(cache)
                if target.get("fp16"):
                    settings["trt_fp16_enable"] = True
                if target.get("int8"):
                    settings["trt_int8_enable"] = True
                if target.get("dla_core") is not None:
                    settings["trt_dla_enable"] = True
                    settings["trt_dla_core"] = int(target["dla_core"])
                if target.get("workspace_mib"):
                    settings["trt_max_workspace_size"] = int(float(target["workspace_mib"]) * (1 << 20))
            chosen.append((provider, settings))
        return chosen

    def _make_session(self, profile_prefix: Optional[str]) -> Any:
        ort = self._ort
        so = ort.SessionOptions()
        # Failures come back as exceptions and become one line; onnxruntime's own (coloured) log
        # line for the same failure would only precede it.
        so.log_severity_level = 4
        if self._options.threads is not None:
            so.intra_op_num_threads = int(self._options.threads)
        if profile_prefix is not None:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        # What the exporter found the graph runs best with (a weight-only DequantizeLinear graph
        # folds its weights at load instead of dequantizing them on every run).
        for key, value in dict(self._options.target.get("ort_session_config") or {}).items():
            so.add_session_config_entry(str(key), str(value))
        pairs = self._provider_options()
        try:
            return ort.InferenceSession(
                str(self._model_path), so, providers=[p for p, _ in pairs], provider_options=[o for _, o in pairs]
            )
        except Exception as exc:  # onnxruntime raises its own exception types for a bad model
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(str(self._model_path) + ": onnxruntime cannot load the model (" + first + ")") from None

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        try:
            values = self._session.run(self._output_names, dict(feeds))
        except Exception as exc:  # onnxruntime's Fail/InvalidArgument: the model cannot run on these inputs
            raise BundleError(str(self._model_path) + ": onnxruntime failed running the model ("
                              + " ".join(str(exc).split()) + ")") from None
        return dict(zip(self._output_names, values))

    def profile_ops(self, feeds: Mapping[str, np.ndarray], runs: int) -> Optional[List[OpTime]]:
        """Run a separate profiling session so the profiler's overhead never touches the timed runs."""
        workdir = tempfile.mkdtemp(prefix="edgeq-run-profile-")
        try:
            session = self._make_session(profile_prefix=os.path.join(workdir, "profile"))
            for _ in range(max(1, runs) + 1):  # + 1: the first run is dropped as warm-up
                session.run(self._output_names, dict(feeds))
            trace_file = session.end_profiling()
            with open(trace_file, encoding="utf-8") as handle:
                events = json.load(handle)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return aggregate_node_events(events)

    def versions(self) -> Dict[str, str]:
        return {"onnxruntime": str(self._ort.__version__)}

    @property
    def ort_session(self) -> Any:
        """The ``onnxruntime.InferenceSession``, for IO binding (``kv_runner`` keeps a decoder's cache in it)."""
        if self._session is None:
            raise BundleError(str(self._model_path) + ": session is closed")
        return self._session

    @property
    def ort_module(self) -> Any:
        return self._ort

    def close(self) -> None:
        self._session = None


def aggregate_node_events(events: Any, skip_first: bool = True) -> List[OpTime]:
    """Sum onnxruntime profiler "Node" kernel events per node, largest first, with each node's share.

    ``skip_first`` drops each node's first event: the first run of a session pays one-time costs
    (allocation, kernel selection) that would otherwise dominate a short profile.
    """
    samples: List[Tuple[str, str, float]] = []
    seen = set()
    if isinstance(events, dict):  # some versions wrap the list
        events = events.get("traceEvents", [])
    for event in events:
        if not isinstance(event, dict) or event.get("cat") != "Node":
            continue
        raw_name = str(event.get("name", ""))
        if not raw_name.endswith("_kernel_time"):
            continue  # fence events and the like, not kernel time
        args = event.get("args") or {}
        op_type = str(args.get("op_name", "?"))
        node = raw_name[: -len("_kernel_time")] or (op_type + "#" + str(args.get("node_index", "?")))
        if skip_first and node not in seen:
            seen.add(node)
            continue
        samples.append((node, op_type, float(event.get("dur", 0.0)) / 1000.0))
    return rank_op_times(samples)
