"""One entry point for every quantization scheme.

``quantize(model, config)`` looks up the handler registered for the config's type. Handlers
live one per file in ``edgeq.quantize.schemes`` and register with ``@register(ConfigType)``;
adding a scheme is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import onnx

from edgeq.errors import ConfigError
from edgeq.quantize.summary import QuantizationSummary


@dataclass
class QuantizeInputs:
    """What a handler may need beyond the model: calibration data and/or a calibration table.

    ``data`` is an ``edgeq.data.DataSource`` (re-iterable batches of feed dicts);
    ``calibration`` an ``edgeq.calibrate.CalibrationTable``. Either may be None when the
    scheme is data-free (RTN, HQQ).
    """

    data: Any = None
    calibration: Any = None
    model_path: str = ""
    progress: bool = True


@dataclass
class QuantizeResult:
    model: onnx.ModelProto
    summary: QuantizationSummary


Handler = Callable[[onnx.ModelProto, Any, QuantizeInputs], QuantizeResult]
_HANDLERS: dict[type, Handler] = {}
C = TypeVar("C")


def register(config_type: type) -> Callable[[Handler], Handler]:
    def decorate(handler: Handler) -> Handler:
        _HANDLERS[config_type] = handler
        return handler

    return decorate


def _load_schemes() -> None:
    import edgeq.quantize.schemes as schemes

    for module in pkgutil.iter_modules(schemes.__path__):
        importlib.import_module(f"{schemes.__name__}.{module.name}")


def quantize(
    model: onnx.ModelProto, config: Any, inputs: QuantizeInputs | None = None, copy: bool = True
) -> QuantizeResult:
    """Quantize ``model`` according to ``config``.

    ``copy=False`` lets the handler rewrite ``model`` in place, so a caller that loaded the
    model only to quantize it holds one float copy of the weights, not two.
    """
    handler = _HANDLERS.get(type(config))
    if handler is None:  # a scheme module imported directly registers only itself: load them all
        _load_schemes()
        handler = _HANDLERS.get(type(config))
    if handler is None:
        raise ConfigError(f"no quantization scheme is registered for {type(config).__name__}")
    if copy:
        duplicate = onnx.ModelProto()
        duplicate.CopyFrom(model)
        model = duplicate
    return handler(model, config, inputs or QuantizeInputs())


def quantize_file(
    model_path: str | Path,
    config: Any,
    output: str | Path,
    data: str | Path | None = None,
    calibration: str | Path | None = None,
    summary_path: str | Path | None = None,
    samples: int | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> QuantizeResult:
    """Load, quantize, check and save atomically; the public function behind ``edgeq quantize``."""
    from edgeq.frontends.resolve import load_model_spec
    from edgeq.graph.io import save_model

    model = load_model_spec(model_path)
    source = None
    table = None
    if data is not None:
        from edgeq.data import load_data

        source = load_data(data, model, samples=samples, batch_size=batch_size)
    if calibration is not None:
        from edgeq.calibrate.table import CalibrationTable

        table = CalibrationTable.load(calibration)
    result = quantize(model, config, QuantizeInputs(source, table, str(model_path), progress), copy=False)
    save_model(result.model, output)
    if summary_path is not None:
        result.summary.save(summary_path)
    return result
