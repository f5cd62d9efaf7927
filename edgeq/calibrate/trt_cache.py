"""TensorRT calibration cache: the text file ``trtexec --calib`` and IInt8Calibrator read.

Format: a header ``TRT-<version>-<Algorithm>`` (e.g. ``TRT-8502-EntropyCalibration2``), then
one line per tensor ``<name>: <8 hex digits>``, the scale amax/127 as a big-endian IEEE-754
float32. TensorRT ignores a cache whose algorithm differs from its calibrator's, and
trtexec's calibrator is EntropyCalibration2, hence the default.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from pathlib import Path

from edgeq.errors import ConfigError

ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")
INT8_MAX = 127.0
_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")


def scale_hex(scale: float) -> str:
    """The scale as TensorRT writes it: big-endian float32, 8 lowercase hex digits."""
    return struct.pack(">f", scale).hex()


def hex_scale(text: str) -> float:
    return float(struct.unpack(">f", bytes.fromhex(text))[0])


def format_cache(amax: Mapping[str, float], trt_version: str = "8502", algorithm: str = "EntropyCalibration2") -> str:
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"TensorRT calibration algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
    if not str(trt_version).isdigit():
        raise ConfigError(f"TensorRT version {trt_version!r} must be digits, e.g. 8502 for 8.5.2")
    lines = [f"TRT-{trt_version}-{algorithm}"]
    for name, value in amax.items():
        if "\n" in name:
            raise ConfigError(f"tensor name {name!r} contains a newline; it cannot go into a TensorRT cache")
        lines.append(f"{name}: {scale_hex(float(value) / INT8_MAX)}")
    return "\n".join(lines) + "\n"


def parse_cache(text: str, source: str = "cache") -> tuple[str, str, dict[str, float]]:
    """(version, algorithm, {tensor: scale}) from a cache's text."""
    lines = text.splitlines()
    if not lines:
        raise ConfigError(f"{source}: empty TensorRT calibration cache")
    header = _HEADER.match(lines[0].strip())
    if header is None:
        raise ConfigError(f"{source}: first line {lines[0][:60]!r} is not a TRT-<version>-<Algorithm> header")
    scales: dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, value = line.rpartition(": ")
        value = value.strip()
        if not sep or len(value) != 8 or any(c not in "0123456789abcdefABCDEF" for c in value):
            raise ConfigError(f"{source}:{number}: expected '<tensor>: <8 hex digits>', found {line[:80]!r}")
        scales[name] = hex_scale(value)
    return header.group(1), header.group(2), scales


def read_cache(path: str | Path) -> tuple[str, str, dict[str, float]]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read TensorRT calibration cache ({exc.strerror})") from None
    return parse_cache(text, str(path))
