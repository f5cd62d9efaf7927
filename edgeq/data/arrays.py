"""Row-addressable arrays: the one abstraction every data source is built from.

A calibration set of 1024 images at 224x224 is 600 MB; holding it in memory would dominate
the calibrator's footprint and make peak memory grow with the sample count. So every source
(an ``.npy`` file, a member of an ``.npz``, a folder of images) is a :class:`RowArray` that
knows its shape and dtype without reading the data, and reads only the rows asked for.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from edgeq.errors import DataError


class RowArray:
    """Samples along axis 0, read a slice at a time.

    ``label`` names the array in error messages (``calib.npz:input``), so a user can find
    the offending file.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    label: str

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def read_all(self) -> np.ndarray:
        return self.read(0, self.shape[0])


class MemoryArray(RowArray):
    def __init__(self, array: np.ndarray, label: str) -> None:
        self.array = array
        self.shape = tuple(int(d) for d in array.shape)
        self.dtype = array.dtype
        self.label = label

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.ascontiguousarray(self.array[start:stop])

    def read_all(self) -> np.ndarray:
        return np.ascontiguousarray(self.array)


class OneSample(RowArray):
    """A file that holds one sample without the sample axis (``sample_0001.npy`` of shape C,H,W)."""

    def __init__(self, inner: RowArray) -> None:
        self.inner = inner
        self.shape = (1, *inner.shape)
        self.dtype = inner.dtype
        self.label = inner.label

    def read(self, start: int, stop: int) -> np.ndarray:
        if start >= min(stop, 1):
            return np.empty((0, *self.inner.shape), dtype=self.dtype)
        return self.inner.read_all()[None]


class NpyStream(RowArray):
    """An ``.npy`` payload at a byte offset in a file (a plain ``.npy`` or a stored ``.npz`` member).

    Rows are read with ``readinto`` into a fresh buffer rather than memory-mapped: a mapping's
    touched pages count towards the process's resident set until the kernel evicts them, so a
    memory map would make peak memory grow with the number of samples.
    """

    def __init__(self, path: Path, data_offset: int, shape: tuple[int, ...], dtype: np.dtype, label: str) -> None:
        self.path = path
        self.data_offset = data_offset
        self.shape = shape
        self.dtype = dtype
        self.label = label
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize

    def _read_bytes(self, offset: int, out: np.ndarray) -> None:
        view = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            got = handle.readinto(view)
        if got != view.nbytes:
            raise DataError(f"{self.label}: file is truncated (expected {view.nbytes} bytes at offset {offset}, read {got})")

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(stop, self.shape[0])
        out = np.empty((max(0, stop - start), *self.shape[1:]), dtype=self.dtype)
        if out.size:
            self._read_bytes(self.data_offset + start * self.row_bytes, out)
        return out

    def read_all(self) -> np.ndarray:
        """The whole payload (also for a file that is one sample without the sample axis)."""
        out = np.empty(self.shape, dtype=self.dtype)
        if out.size:
            self._read_bytes(self.data_offset, out)
        return out


class LoadedMember(RowArray):
    """A compressed ``.npz`` member: the header is read up front, the data on first use and kept.

    Deflate streams cannot be read from the middle, so streaming row by row would mean
    decompressing from the start for every batch; loading the one member once is cheaper.
    """

    def __init__(self, path: Path, key: str, shape: tuple[int, ...], dtype: np.dtype, label: str) -> None:
        self.path = path
        self.key = key
        self.shape = shape
        self.dtype = dtype
        self.label = label
        self._array: np.ndarray | None = None

    def read(self, start: int, stop: int) -> np.ndarray:
        if self._array is None:
            try:
                with np.load(self.path, allow_pickle=False) as archive:
                    self._array = np.asarray(archive[self.key])
            except (OSError, ValueError, zipfile.BadZipFile) as exc:
                raise DataError(f"{self.label}: cannot read ({exc})") from None
        return np.ascontiguousarray(self._array[start:stop])


class ConcatArray(RowArray):
    """Several arrays with the same per-sample shape, one after the other (a folder of files)."""

    def __init__(self, parts: Sequence[RowArray], label: str) -> None:
        first = parts[0]
        for part in parts[1:]:
            if part.shape[1:] != first.shape[1:] or part.dtype != first.dtype:
                raise DataError(
                    f"{label}: {part.label} has samples of {part.dtype} {list(part.shape[1:])}, "
                    f"but {first.label} has {first.dtype} {list(first.shape[1:])}; all files must agree"
                )
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.offsets[-1]), *first.shape[1:])
        self.dtype = first.dtype
        self.label = label

    def read(self, start: int, stop: int) -> np.ndarray:
        pieces = []
        for index, part in enumerate(self.parts):
            lo, hi = int(self.offsets[index]), int(self.offsets[index + 1])
            if hi <= start or lo >= stop:
                continue
            pieces.append(part.read(max(start, lo) - lo, min(stop, hi) - lo))
        if not pieces:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


class MappedRows(RowArray):
    """Rows produced on demand by a function of the row index (decoded, preprocessed images)."""

    def __init__(self, count: int, sample_shape: tuple[int, ...], dtype: np.dtype, make_row: Callable[[int], np.ndarray], label: str) -> None:
        self.shape = (count, *sample_shape)
        self.dtype = dtype
        self.make_row = make_row
        self.label = label

    def read(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, self.shape[0])
        out = np.empty((max(0, stop - start), *self.shape[1:]), dtype=self.dtype)
        for offset, row in enumerate(range(start, stop)):
            out[offset] = self.make_row(row)
        return out


# --- reading .npy / .npz headers without reading the data ------------------------------------


def _read_npy_header(handle: BinaryIO, label: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as exc:
        raise DataError(f"{label}: not a readable .npy array ({exc})") from None
    if dtype.hasobject:
        raise DataError(f"{label}: holds Python objects (dtype {dtype}); save numeric arrays")
    return tuple(int(d) for d in shape), bool(fortran), dtype


def open_npy(path: Path) -> RowArray:
    label = str(path)
    try:
        with open(path, "rb") as handle:
            shape, fortran, dtype = _read_npy_header(handle, label)
            offset = handle.tell()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if fortran and len(shape) > 1:
        return MemoryArray(np.ascontiguousarray(np.load(path, allow_pickle=False)), label)
    return NpyStream(path, offset, shape, dtype, label)


def _stored_data_offset(raw: BinaryIO, info: zipfile.ZipInfo) -> int:
    """Where a stored (uncompressed) member's bytes begin: after its local file header."""
    raw.seek(info.header_offset)
    header = raw.read(30)
    if header[:4] != b"PK\x03\x04":
        raise ValueError("bad local file header")
    name_len = int.from_bytes(header[26:28], "little")
    extra_len = int.from_bytes(header[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len


def open_npz(path: Path) -> dict[str, RowArray]:
    """Every array in an ``.npz``, keyed by its name; stored members stream, compressed ones load."""
    arrays: dict[str, RowArray] = {}
    try:
        with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                key = info.filename[: -len(".npy")]
                label = f"{path}:{key}"
                if info.compress_type == zipfile.ZIP_STORED:
                    start = _stored_data_offset(raw, info)
                    raw.seek(start)
                    shape, fortran, dtype = _read_npy_header(raw, label)
                    if not fortran or len(shape) <= 1:
                        arrays[key] = NpyStream(path, raw.tell(), shape, dtype, label)
                        continue
                with archive.open(info) as member:
                    shape, _, dtype = _read_npy_header(member, label)  # type: ignore[arg-type]
                arrays[key] = LoadedMember(path, key, shape, dtype, label)
    except zipfile.BadZipFile:
        raise DataError(f"{path}: not a valid .npz file (bad zip archive)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise DataError(f"{path}: not a valid .npz file ({exc})") from None
    return arrays
