"""The few CUDA runtime calls the TensorRT backend needs, through ctypes.

TensorRT's Python bindings take raw device pointers; allocating them usually means pycuda or
cuda-python, neither of which JetPack installs. libcudart is always there next to TensorRT, so a
dozen ctypes declarations keep the runtime free of another dependency.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
from typing import Any, List, Optional

from edgeq_runtime.errors import BundleError

_HOST_TO_DEVICE = 1
_DEVICE_TO_HOST = 2
_ATTR_CC_MAJOR = 75
_ATTR_CC_MINOR = 76

_CANDIDATES = (
    "libcudart.so",
    "libcudart.so.13",
    "libcudart.so.12",
    "libcudart.so.11.0",
    "libcudart.so.10.2",
)
_SEARCH_GLOBS = (
    "/usr/local/cuda/lib64/libcudart.so*",
    "/usr/local/cuda/targets/*/lib/libcudart.so*",
    "/usr/lib/aarch64-linux-gnu/libcudart.so*",
    "/usr/lib/x86_64-linux-gnu/libcudart.so*",
)


def _load_library() -> Any:
    names: List[str] = []
    found = ctypes.util.find_library("cudart")
    if found:
        names.append(found)
    names.extend(_CANDIDATES)
    for pattern in _SEARCH_GLOBS:
        names.extend(sorted(glob.glob(pattern)))
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise BundleError(
        "the TensorRT backend needs the CUDA runtime library libcudart.so, which was not found "
        "(on Jetson it is in /usr/local/cuda/lib64: add it to LD_LIBRARY_PATH)"
    )


class CudaRuntime:
    """A thin, checked wrapper over libcudart: every failing call raises ``BundleError`` naming it."""

    def __init__(self) -> None:
        lib = _load_library()
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        lib.cudaGetErrorString.argtypes = [ctypes.c_int]
        lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        lib.cudaFree.argtypes = [ctypes.c_void_p]
        lib.cudaMemcpyAsync.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
        lib.cudaStreamCreate.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        lib.cudaStreamSynchronize.argtypes = [ctypes.c_void_p]
        lib.cudaStreamDestroy.argtypes = [ctypes.c_void_p]
        lib.cudaDeviceGetAttribute.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_int]
        lib.cudaGetDevice.argtypes = [ctypes.POINTER(ctypes.c_int)]
        self._lib = lib

    def _check(self, status: int, call: str) -> None:
        if status != 0:
            message = self._lib.cudaGetErrorString(status)
            text = message.decode("utf-8", "replace") if message else "error " + str(status)
            raise BundleError("CUDA " + call + " failed: " + text)

    def current_device(self) -> int:
        device = ctypes.c_int(0)
        self._check(self._lib.cudaGetDevice(ctypes.byref(device)), "cudaGetDevice")
        return device.value

    def device_name(self, device: int) -> str:
        # cudaDeviceProp starts with `char name[256]` in every CUDA version; the rest of the struct
        # changes size between versions, so a generous buffer is passed and only the name is read.
        buffer = ctypes.create_string_buffer(16384)
        getter = getattr(self._lib, "cudaGetDeviceProperties_v2", None) or self._lib.cudaGetDeviceProperties
        self._check(getter(buffer, ctypes.c_int(device)), "cudaGetDeviceProperties")
        return buffer.raw[:256].split(b"\0", 1)[0].decode("utf-8", "replace")

    def compute_capability(self, device: int) -> str:
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        self._check(self._lib.cudaDeviceGetAttribute(ctypes.byref(major), _ATTR_CC_MAJOR, device), "cudaDeviceGetAttribute")
        self._check(self._lib.cudaDeviceGetAttribute(ctypes.byref(minor), _ATTR_CC_MINOR, device), "cudaDeviceGetAttribute")
        return str(major.value) + "." + str(minor.value)

    def malloc(self, nbytes: int) -> int:
        pointer = ctypes.c_void_p()
        self._check(self._lib.cudaMalloc(ctypes.byref(pointer), max(1, int(nbytes))), "cudaMalloc")
        return int(pointer.value or 0)

    def free(self, pointer: Optional[int]) -> None:
        if pointer:
            self._check(self._lib.cudaFree(ctypes.c_void_p(pointer)), "cudaFree")

    def stream_create(self) -> int:
        stream = ctypes.c_void_p()
        self._check(self._lib.cudaStreamCreate(ctypes.byref(stream)), "cudaStreamCreate")
        return int(stream.value or 0)

    def stream_destroy(self, stream: int) -> None:
        if stream:
            self._check(self._lib.cudaStreamDestroy(ctypes.c_void_p(stream)), "cudaStreamDestroy")

    def synchronize(self, stream: int) -> None:
        self._check(self._lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")

    def copy_to_device(self, device_pointer: int, host_pointer: int, nbytes: int, stream: int) -> None:
        self._check(
            self._lib.cudaMemcpyAsync(
                ctypes.c_void_p(device_pointer), ctypes.c_void_p(host_pointer), nbytes, _HOST_TO_DEVICE,
                ctypes.c_void_p(stream),
            ),
            "cudaMemcpyAsync (host to device)",
        )

    def copy_to_host(self, host_pointer: int, device_pointer: int, nbytes: int, stream: int) -> None:
        self._check(
            self._lib.cudaMemcpyAsync(
                ctypes.c_void_p(host_pointer), ctypes.c_void_p(device_pointer), nbytes, _DEVICE_TO_HOST,
                ctypes.c_void_p(stream),
            ),
            "cudaMemcpyAsync (device to host)",
        )
