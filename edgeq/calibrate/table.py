"""The calibration table: what ``edgeq calibrate`` measured, tied to one model file.

It keeps, per tensor, the exact min/max and the threshold every method would choose from the
same histogram, so a later pass (int8 QDQ, a TensorRT cache) can pick a method per tensor
without calibrating again. The model's sha256 lets a reader notice a table that belongs to
another model.

Loading: :func:`load_calibration` is the one entry point (``edgeq quantize --calib`` and
``edgeq export --calib`` both go through it), so a bad file gets the same one-line error
everywhere: missing or unreadable, not JSON, not a table or a newer schema, a non-finite
range, or made for another model file.

Precedence when both ``--data`` and ``--calib`` are given (int8 quantize, explicit and
implicit export alike): the activation ranges are measured on ``--data``, and the table is
loaded and checked but its ranges are not used. The data-driven steps (cross-layer
equalization, re-centering, SmoothQuant, the layer-by-layer search) change the activations a
table measured beforehand, so only ranges measured on the data describe the model that is
written. The quantization summary (or the export notes) says so: :data:`BOTH_GIVEN_NOTE`.

Tables from older edgeq versions may carry per-channel ``channel_absmax`` / ``channel_absmean``
lists; nothing ever read them, so they are no longer measured or written, and a reader ignores them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgeq.calibrate.observers.histogram import METHODS
from edgeq.errors import ConfigError
from edgeq.serialization import Serializable

BOTH_GIVEN_NOTE = (
    "--data and --calib both given: --data is used, activation ranges are measured on it (the data-driven "
    "steps change the activations the table saw); the table was checked, its ranges not used"
)


@dataclass
class TensorRange:
    """One observed tensor. ``amax`` is the threshold under the table's method."""

    name: str
    min: float
    max: float
    amax: float
    thresholds: dict[str, float] = field(default_factory=dict)  # amax under every method
    count: int = 0  # values observed

    @property
    def minmax_amax(self) -> float:
        return max(abs(self.min), abs(self.max))


@dataclass
class CalibrationTable(Serializable):
    schema_type: ClassVar[str] = "edgeq.CalibrationTable"
    schema_version: ClassVar[int] = 1

    model_sha256: str
    method: str
    samples: int
    tensors: dict[str, TensorRange]
    percentile: float = 99.99
    bins: int = 2048

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"calibration method {self.method!r}; expected one of {', '.join(METHODS)}")
        for item in self.tensors.values():
            for value in (item.min, item.max, item.amax, *item.thresholds.values()):
                if not math.isfinite(value):
                    raise ConfigError(f"calibration table: tensor '{item.name}' has a non-finite range ({value})")

    @classmethod
    def _from_data(cls, data: dict[str, Any]) -> CalibrationTable:
        tensors = {}
        for name, item in data["tensors"].items():
            tensors[name] = TensorRange(
                name=item["name"],
                min=float(item["min"]),
                max=float(item["max"]),
                amax=float(item["amax"]),
                thresholds={k: float(v) for k, v in item.get("thresholds", {}).items()},
                count=int(item.get("count", 0)),
            )
        return cls(
            model_sha256=str(data["model_sha256"]),
            method=str(data["method"]),
            samples=int(data["samples"]),
            tensors=tensors,
            percentile=float(data.get("percentile", 99.99)),
            bins=int(data.get("bins", 2048)),
        )

    @classmethod
    def load(cls, path: str | Path) -> CalibrationTable:
        """Same as :func:`load_calibration` without a model: the one reader, every file check."""
        return load_calibration(path)

    def __getitem__(self, name: str) -> TensorRange:
        try:
            return self.tensors[name]
        except KeyError:
            raise ConfigError(
                f"tensor '{name}' is not in the calibration table ({len(self.tensors)} tensors, "
                f"calibrated for model sha256 {self.model_sha256[:12]}); recalibrate with this tensor observed"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def amax(self, name: str, method: str | None = None) -> float:
        """The symmetric range of ``name`` under ``method`` (default: the table's method)."""
        item = self[name]
        if method is None or method == self.method:
            return item.amax
        if method == "minmax":
            return item.minmax_amax
        if method not in item.thresholds:
            raise ConfigError(f"calibration table has no {method!r} threshold for tensor '{name}'; known: {', '.join(item.thresholds)}")
        return item.thresholds[method]

    def thresholds_for(self, name: str, role: str) -> dict[str, float]:
        """Every method's threshold for ``name`` (min/max included): what int8 chooses from.

        ``role`` says why the tensor is needed, for the error when the table lacks it.
        """
        item = self.tensors.get(name)
        if item is None:
            raise ConfigError(f"calibration table has no range for tensor {name!r} ({role}); recalibrate with this model")
        return {"minmax": item.minmax_amax, **item.thresholds}

    def check_model(self, model_path: str | Path) -> None:
        """Refuse a table calibrated on a different model file."""
        from edgeq.graph.io import model_sha256

        digest = model_sha256(model_path)
        if digest != self.model_sha256:
            raise ConfigError(
                f"calibration table was made for model sha256 {self.model_sha256[:12]}…, "
                f"but {model_path} has {digest[:12]}…; recalibrate for this model"
            )

    def write_trt_cache(
        self,
        path: str | Path,
        trt_version: str = "8502",
        algorithm: str = "EntropyCalibration2",
        method: str | None = None,
    ) -> Path:
        """Write a TensorRT calibration cache (atomically) with scale = amax / 127 per tensor."""
        from edgeq.calibrate.trt_cache import format_cache
        from edgeq.fileio import atomic_write_text

        text = format_cache({name: self.amax(name, method) for name in self.tensors}, trt_version, algorithm)
        return atomic_write_text(path, text)

    @classmethod
    def read_trt_cache(cls, path: str | Path) -> dict[str, float]:
        """Scales (amax / 127) by tensor name from a TensorRT calibration cache."""
        from edgeq.calibrate.trt_cache import read_cache

        return read_cache(path)[2]

    def format_text(self, limit: int | None = 20) -> str:
        """A short human summary: per tensor, min/max and the chosen amax."""
        lines = [f"calibration: {self.method}, {self.samples} samples, {len(self.tensors)} tensors"]
        items = list(self.tensors.values())
        width = max((len(t.name) for t in items[:limit]), default=0)
        for item in items if limit is None else items[:limit]:
            clipped = 100 * (1 - item.amax / item.minmax_amax) if item.minmax_amax > 0 else 0.0
            lines.append(
                f"  {item.name:<{width}}  min {item.min:+.4g}  max {item.max:+.4g}  amax {item.amax:.4g}"
                + (f"  (clips {clipped:.0f}% of range)" if clipped >= 0.5 else "")
            )
        if limit is not None and len(items) > limit:
            lines.append(f"  ... {len(items) - limit} more (--json for all)")
        return "\n".join(lines)


def load_calibration(path: str | Path, model: str | Path | None = None) -> CalibrationTable:
    """The one way a calibration table file is read: every check, one line naming the file.

    The file must exist and be readable, parse as JSON, be an ``edgeq.CalibrationTable`` of a
    schema version this edgeq reads, and hold finite ranges under a known method. With
    ``model`` (the model file about to be quantized), the table must have been made for that
    file (same sha256), so every tensor it names is a tensor of that model.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: calibration table not found (write one with edgeq calibrate)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the calibration table ({exc})") from None
    try:
        table = CalibrationTable.from_json(text, source=str(path))
        if model is not None:
            table.check_model(model)
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    return table
