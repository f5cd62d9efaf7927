"""The TensorRT backend's own logic, with stand-ins for ``tensorrt`` and the CUDA runtime.

No GPU or TensorRT is available where these tests run, so they check only edgeq-runtime's side:
it builds an engine on first use, caches it under a key, and loads it from the cache the second
time. A bundled engine that does not load triggers a rebuild. Dynamic inputs without a shape get a
one-line error. Host arrays go through device buffers and come back. The stand-ins do what the
TensorRT and CUDA documentation describes, but they are not TensorRT: whether the real bindings
behave this way is untested here, and so is every engine these tests "build".

The builder (``edgeq_runtime.engine_build``) is also what ``edgeq export --build-engine`` calls;
its settings → builder calls are checked here directly, with the same stand-in.
"""

from __future__ import annotations

import ctypes
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from edgeq_runtime.engine_build import build_serialized_engine, build_settings
from edgeq_runtime.errors import BundleError
from edgeq_runtime.manifest import Manifest
from edgeq_runtime.session import Session
from rt_helpers import dense_model, make_bundle

ENGINE_MAGIC = b"FAKE-ENGINE:"


class FakeCuda:
    """Device memory is host memory here, so the backend's copies are real memmoves."""

    def __init__(self) -> None:
        self._buffers: dict[int, ctypes.Array] = {}

    def current_device(self) -> int:
        return 0

    def device_name(self, device: int) -> str:
        return "Orin (nvgpu)"

    def compute_capability(self, device: int) -> str:
        return "8.7"

    def malloc(self, nbytes: int) -> int:
        buffer = ctypes.create_string_buffer(max(1, nbytes))
        address = ctypes.addressof(buffer)
        self._buffers[address] = buffer
        return address

    def free(self, pointer: int) -> None:
        self._buffers.pop(pointer, None)

    def stream_create(self) -> int:
        return 1

    def stream_destroy(self, stream: int) -> None:
        pass

    def synchronize(self, stream: int) -> None:
        pass

    def copy_to_device(self, device_pointer: int, host_pointer: int, nbytes: int, stream: int) -> None:
        ctypes.memmove(device_pointer, host_pointer, nbytes)

    def copy_to_host(self, host_pointer: int, device_pointer: int, nbytes: int, stream: int) -> None:
        ctypes.memmove(host_pointer, device_pointer, nbytes)


def fake_tensorrt(log: list[str]) -> types.ModuleType:
    """An engine computing y = 2·x for input x [batch, 8] → y [batch, 8] (float32)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"  # type: ignore[attr-defined]
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})  # type: ignore[attr-defined]
    trt.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")  # type: ignore[attr-defined]
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1)  # type: ignore[attr-defined]
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")  # type: ignore[attr-defined]
    trt.BuilderFlag = types.SimpleNamespace(FP16="fp16", INT8="int8", GPU_FALLBACK="gpu_fallback")  # type: ignore[attr-defined]
    trt.DeviceType = types.SimpleNamespace(DLA="dla", GPU="gpu")  # type: ignore[attr-defined]
    trt.nptype = lambda dtype: np.float32  # type: ignore[attr-defined]

    class IInt8EntropyCalibrator2:
        def __init__(self) -> None:
            pass

    trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2  # type: ignore[attr-defined]

    class Context:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: tuple) -> bool:
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple:
            return self.shapes["x"]

        def set_tensor_address(self, name: str, address: int) -> bool:
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream: int) -> bool:
            count = int(np.prod(self.shapes["x"]))
            x = np.ctypeslib.as_array((ctypes.c_float * count).from_address(self.addresses["x"]))
            y = np.ctypeslib.as_array((ctypes.c_float * count).from_address(self.addresses["y"]))
            y[:] = 2.0 * x
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i: int) -> str:
            return ["x", "y"][i]

        def get_tensor_mode(self, name: str) -> str:
            return "input" if name == "x" else "output"

        def get_tensor_dtype(self, name: str) -> str:
            return "float"

        def get_tensor_shape(self, name: str) -> tuple:
            return (-1, 8)

        def create_execution_context(self) -> Context:
            return Context()

    class Runtime:
        def __init__(self, logger: object) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            log.append("deserialize")
            return Engine() if bytes(data).startswith(ENGINE_MAGIC) else None

    class Tensor:
        name = "x"
        shape = (-1, 8)

    class Network:
        num_inputs = 1

        def get_input(self, i: int) -> Tensor:
            return Tensor()

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return self.data + b"+timings"

    class Config:
        def __init__(self) -> None:
            self.flags: list[str] = []

        def __setattr__(self, name: str, value: object) -> None:
            if name not in ("flags", "timing"):  # default_device_type, DLA_core, int8_calibrator, max_workspace_size
                log.append(f"set {name} {value if name != 'int8_calibrator' else 'calibrator'}")
            object.__setattr__(self, name, value)

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            log.append(f"workspace {size}")

        def create_timing_cache(self, data: bytes) -> TimingCache:
            log.append(f"timing cache in {data!r}")
            return TimingCache(data)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> None:
            self.timing = cache

        def get_timing_cache(self) -> TimingCache:
            return self.timing

        def set_flag(self, flag: str) -> None:
            log.append(f"flag {flag}")

        def add_optimization_profile(self, profile: Profile) -> None:
            log.append(f"profile {profile.shapes}")

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, name: str, low: tuple, opt: tuple, high: tuple) -> None:
            assert low == opt == high
            self.shapes[name] = opt

    class Builder:
        def __init__(self, logger: object) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            log.append(f"network flags {flags}")
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            calibrator = getattr(config, "int8_calibrator", None)
            if calibrator is not None:
                log.append("calibration cache " + calibrator.read_calibration_cache().decode())
            log.append("build")
            return ENGINE_MAGIC + b"built"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: Network, logger: object) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            log.append("parse " + Path(path).name)
            return True

    trt.Runtime = Runtime  # type: ignore[attr-defined]
    trt.Builder = Builder  # type: ignore[attr-defined]
    trt.OnnxParser = OnnxParser  # type: ignore[attr-defined]
    return trt


@pytest.fixture()
def trt_log(monkeypatch) -> list[str]:
    log: list[str] = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(log))
    monkeypatch.setattr("edgeq_runtime.backends._cuda.CudaRuntime", FakeCuda)
    return log


def test_engine_is_built_once_then_loaded_from_cache(tmp_path, trt_log):
    bundle = make_bundle(tmp_path / "bundle", target={"name": "jetson-orin-nano", "backend": "tensorrt", "fp16": True,
                                                      "workspace_mib": 64})
    cache = tmp_path / "cache"
    x = np.arange(16, dtype=np.float32).reshape(2, 8)
    with Session(bundle, cache_dir=cache, shapes={"x": [2, 8]}) as session:
        assert session.backend_name == "tensorrt"
        assert session.providers == ["TensorRT 10.3.0 (Orin (nvgpu))"]
        assert "(built now)" in session.backend.engine_source  # type: ignore[attr-defined]
        np.testing.assert_array_equal(session.run({"x": x})["y"], 2 * x)
    assert "build" in trt_log and "flag fp16" in trt_log and f"workspace {64 << 20}" in trt_log
    assert "profile {'x': (2, 8)}" in trt_log
    (cached,) = cache.glob("*.engine")
    assert cached.name.startswith("Orin-nvgpu-sm87-trt10.3.0-")
    trt_log.clear()
    with Session(bundle, cache_dir=cache, shapes={"x": [2, 8]}) as session:
        assert session.backend.engine_source == str(cached)  # type: ignore[attr-defined]
    assert "build" not in trt_log
    with Session(bundle, cache_dir=cache, shapes={"x": [4, 8]}):  # other shapes: another engine
        pass
    assert "build" in trt_log and len(list(cache.glob("*.engine"))) == 2


def test_bundled_engine_that_does_not_load_is_rebuilt(tmp_path, trt_log):
    bundle = make_bundle(tmp_path / "bundle", target={"backend": "tensorrt"})
    (bundle / "model.engine").write_bytes(b"built for another GPU")
    manifest = Manifest.read(bundle)
    manifest.engine = "model.engine"
    manifest.files = Manifest.describe_files(bundle, ["model.onnx", "model.engine"])
    manifest.write(bundle)
    with Session(bundle, cache_dir=tmp_path / "cache", shapes={"x": [1, 8]}) as session:
        assert "(built now)" in session.backend.engine_source  # type: ignore[attr-defined]
    assert trt_log[:2] == ["deserialize", "network flags 0"]
    (bundle / "good.engine").write_bytes(ENGINE_MAGIC + b"bundled")
    with Session(bundle / "good.engine") as session:
        assert session.backend.engine_source == str(bundle / "good.engine")  # type: ignore[attr-defined]
        assert [s.shape for s in session.inputs] == [["x_dim0", 8]]


def test_dynamic_input_without_shape_is_a_one_line_error(tmp_path, trt_log):
    with pytest.raises(BundleError) as info:
        Session(dense_model(tmp_path / "dense.onnx"), backend="tensorrt", cache_dir=tmp_path / "cache")
    assert str(info.value) == ("input 'x' has dynamic dims; give its shape (--shape x:1x128) to build a TensorRT engine")
    (tmp_path / "bad.engine").write_bytes(b"nope")
    with pytest.raises(BundleError, match="cannot load this engine"):
        Session(tmp_path / "bad.engine")


def test_strongly_typed_build_sets_the_flag_and_no_precision_flags(tmp_path, trt_log):
    bundle = make_bundle(tmp_path / "bundle", target={"backend": "tensorrt", "strongly_typed": True, "fp16": True})
    with Session(bundle, cache_dir=tmp_path / "cache", shapes={"x": [1, 8]}):
        pass
    assert "network flags 2" in trt_log and "flag fp16" not in trt_log


def test_implicit_int8_bundle_hands_its_calibration_cache_to_the_builder(tmp_path, trt_log):
    target = {"backend": "tensorrt", "int8": True, "fp16": True, "calibration_cache": "calibration.cache"}
    bundle = make_bundle(tmp_path / "bundle", target=target)
    cache_text = "TRT-8502-EntropyCalibration2\nx: 3c010204\n"
    (bundle / "calibration.cache").write_text(cache_text)
    manifest = Manifest.read(bundle)
    manifest.files = Manifest.describe_files(bundle, ["model.onnx", "calibration.cache"])
    manifest.write(bundle)
    with Session(bundle, cache_dir=tmp_path / "cache", shapes={"x": [1, 8]}):
        pass
    assert "flag int8" in trt_log and "calibration cache " + cache_text in trt_log
    # A different cache is a different engine.
    (bundle / "calibration.cache").write_text(cache_text.replace("3c010204", "3c010205"))
    manifest.files = Manifest.describe_files(bundle, ["model.onnx", "calibration.cache"])
    manifest.write(bundle)
    trt_log.clear()
    with Session(bundle, cache_dir=tmp_path / "cache", shapes={"x": [1, 8]}):
        pass
    assert "build" in trt_log


def test_implicit_int8_without_a_cache_is_refused(tmp_path, trt_log):
    bundle = make_bundle(tmp_path / "bundle", target={"backend": "tensorrt", "int8": True, "int8_mode": "implicit"})
    with pytest.raises(BundleError, match="names no calibration cache"):
        Session(bundle, cache_dir=tmp_path / "cache", shapes={"x": [1, 8]})


@pytest.mark.parametrize("target", [
    {"backend": "tensorrt", "int8": True, "int8_mode": "explicit"},  # TensorRT 8.5: Q/DQ with the INT8 flag
    {"backend": "tensorrt", "int8": True},  # a manifest from before int8_mode: no cache means explicit
])
def test_explicit_qdq_int8_on_tensorrt_8_builds_with_the_int8_flag_and_no_calibrator(tmp_path, trt_log, target):
    """Xavier / Orin on JetPack 5.1: the INT8 builder flag for a Q/DQ network, no calibration cache asked."""
    bundle = make_bundle(tmp_path / "bundle", target=target)
    with Session(bundle, cache_dir=tmp_path / "cache", shapes={"x": [1, 8]}):
        pass
    assert "build" in trt_log and "flag int8" in trt_log
    assert not [line for line in trt_log if "calibrator" in line or "calibration cache" in line]


def test_an_unknown_int8_mode_is_one_line(tmp_path, trt_log):
    bundle = make_bundle(tmp_path / "bundle", target={"backend": "tensorrt", "int8": True, "int8_mode": "magic"})
    with pytest.raises(BundleError, match="int8_mode 'magic'"):
        Session(bundle, cache_dir=tmp_path / "cache", shapes={"x": [1, 8]})


def test_the_declared_quantization_decides_the_int8_mode_and_must_agree_with_the_flags():
    from edgeq_runtime.engine_build import int8_mode

    assert int8_mode({"int8": True, "quantization": "explicit", "calibration_cache": "calibration.cache"}) == "explicit"
    assert int8_mode({"int8": True, "quantization": "implicit"}) == "implicit"
    assert int8_mode({"strongly_typed": True, "quantization": "strongly_typed"}) is None
    with pytest.raises(BundleError, match="quantization is strongly_typed but strongly_typed is false"):
        int8_mode({"quantization": "strongly_typed"})
    with pytest.raises(BundleError, match="quantization 'qat'"):
        int8_mode({"quantization": "qat"})


def test_dla_bundle_builds_on_its_dla_core_with_gpu_fallback(tmp_path, trt_log):
    bundle = make_bundle(tmp_path / "bundle", target={"backend": "tensorrt", "fp16": True, "dla_core": 1,
                                                      "gpu_fallback": True})
    with Session(bundle, cache_dir=tmp_path / "cache", shapes={"x": [1, 8]}):
        pass
    assert "set default_device_type dla" in trt_log and "set DLA_core 1" in trt_log
    assert "flag gpu_fallback" in trt_log and "flag fp16" in trt_log


def test_no_dla_means_no_device_change_and_no_fallback_flag(tmp_path, trt_log):
    bundle = make_bundle(tmp_path / "bundle", target={"backend": "tensorrt", "fp16": True})
    with Session(bundle, cache_dir=tmp_path / "cache", shapes={"x": [1, 8]}):
        pass
    assert not [line for line in trt_log if "DLA" in line or "device_type" in line or "gpu_fallback" in line]


def _settings(**target: object) -> dict:
    return build_settings(target, {"x": [1, 8]})


def test_builder_explicit_int8_sets_the_flag_without_a_calibrator(tmp_path, trt_log):
    import tensorrt

    model = dense_model(tmp_path / "dense.onnx")
    data = build_serialized_engine(tensorrt, model, _settings(int8=True, fp16=True), implicit_int8=False)
    assert data.startswith(ENGINE_MAGIC)
    assert "flag int8" in trt_log and "set int8_calibrator calibrator" not in trt_log
    with pytest.raises(BundleError, match="names no calibration cache"):
        build_serialized_engine(tensorrt, model, _settings(int8=True), implicit_int8=True)
    with pytest.raises(BundleError, match="calibration cache implicit int8 needs is missing"):
        build_serialized_engine(tensorrt, model, _settings(int8=True, int8_mode="implicit"),
                                calibration_cache=tmp_path / "absent.cache")


def test_builder_reads_and_rewrites_the_timing_cache(tmp_path, trt_log):
    import tensorrt

    model = dense_model(tmp_path / "dense.onnx")
    timing = tmp_path / "timing.cache"
    build_serialized_engine(tensorrt, model, _settings(fp16=True), timing_cache=timing)
    assert "timing cache in b''" in trt_log and timing.read_bytes() == b"+timings"
    build_serialized_engine(tensorrt, model, _settings(fp16=True), timing_cache=timing)
    assert "timing cache in b'+timings'" in trt_log and timing.read_bytes() == b"+timings+timings"


def test_builder_before_tensorrt_8_4_sets_max_workspace_size(tmp_path, trt_log, monkeypatch):
    import tensorrt

    monkeypatch.setattr(tensorrt, "__version__", "8.2.1")  # JetPack 4 (Jetson Nano)
    build_serialized_engine(tensorrt, dense_model(tmp_path / "dense.onnx"), _settings(workspace_mib=64))
    assert f"set max_workspace_size {64 << 20}" in trt_log and not [x for x in trt_log if x.startswith("workspace")]
    assert "network flags 1" in trt_log  # explicit batch before TensorRT 10
