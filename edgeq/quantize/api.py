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
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import onnx

from edgeq.errors import ConfigError
from edgeq.quantize.config import QuantizeConfig
from edgeq.quantize.summary import QuantizationSummary

if TYPE_CHECKING:  # types only: the handlers import data and calibrate when they need them
    from edgeq.calibrate.table import CalibrationTable
    from edgeq.data import DataSource
    from edgeq.numerics.weight_only import LayerStats


@dataclass
class QuantizeInputs:
    """What a handler may need beyond the model: calibration data and/or a calibration table.

    ``data`` holds re-iterable batches of feed dicts; ``calibration`` a table from ``edgeq
    calibrate`` (read with :func:`edgeq.calibrate.load_calibration`). Either may be None when
    the scheme is data-free (RTN, HQQ). When both are given, the data decides the activation
    ranges (see :mod:`edgeq.calibrate.table`) and the summary notes it.
    """

    data: DataSource | None = None
    calibration: CalibrationTable | None = None
    model_path: str = ""
    progress: bool = True
    # GPTQ/AWQ statistics per activation tensor, collected earlier on ``data`` for this model
    # (a sweep or benchmark quantizing one model many ways collects them once); the scheme
    # collects what they lack. Filled in with what a weight-only run collected.
    layer_stats: dict[str, LayerStats] | None = None


@dataclass
class QuantizeResult:
    model: onnx.ModelProto
    summary: QuantizationSummary


C = TypeVar("C", bound=QuantizeConfig)
# A handler takes the config type it is registered for.
Handler: TypeAlias = Callable[[onnx.ModelProto, C, QuantizeInputs], QuantizeResult]
_HANDLERS: dict[type, Handler[Any]] = {}


def register(config_type: type[C]) -> Callable[[Handler[C]], Handler[C]]:
    def decorate(handler: Handler[C]) -> Handler[C]:
        _HANDLERS[config_type] = handler
        return handler

    return decorate


def _load_schemes() -> None:
    import edgeq.quantize.schemes as schemes

    for module in pkgutil.iter_modules(schemes.__path__):
        importlib.import_module(f"{schemes.__name__}.{module.name}")


def quantize(
    model: onnx.ModelProto, config: QuantizeConfig, inputs: QuantizeInputs | None = None, copy: bool = True
) -> QuantizeResult:
    """Quantize ``model`` according to ``config``.

    ``copy=False`` lets the handler rewrite ``model`` in place, so a caller that loaded the
    model only to quantize it holds one float copy of the weights, not two.
    """
    inputs = inputs or QuantizeInputs()
    handler = _HANDLERS.get(type(config))
    if handler is None:  # a scheme module imported directly registers only itself: load them all
        _load_schemes()
        handler = _HANDLERS.get(type(config))
    if handler is None:
        raise ConfigError(f"no quantization scheme is registered for {type(config).__name__}")
    kv_int8 = config.kv_cache == "int8"
    if kv_int8:  # refused before the scheme runs: nothing computed, nothing written
        from edgeq.quantize.kv_cache import NEEDS_DATA, require_kv_cache

        require_kv_cache(model)
        if inputs.data is None:
            raise ConfigError(NEEDS_DATA)
    if copy:
        duplicate = onnx.ModelProto()
        duplicate.CopyFrom(model)
        model = duplicate
    result = handler(model, config, inputs)
    if kv_int8:  # after the weights: the scales fit the keys and values the quantized model writes
        from edgeq.quantize.kv_cache import kv_cache_int8

        kv = kv_cache_int8(result.model, inputs.data, inputs.progress)
        result.summary.kv_bytes_per_token_before = kv.bytes_before
        result.summary.kv_bytes_per_token_after = kv.bytes_after
        result.summary.notes.append(kv.note())
    if inputs.data is not None and inputs.calibration is not None:
        from edgeq.calibrate.table import BOTH_GIVEN_NOTE

        result.summary.notes.insert(0, BOTH_GIVEN_NOTE)
    return result


def quantize_file(
    model_path: str | Path,
    config: QuantizeConfig,
    output: str | Path,
    data: str | Path | None = None,
    calibration: str | Path | None = None,
    summary_path: str | Path | None = None,
    samples: int | None = None,
    batch_size: int = 8,
    progress: bool = True,
    tokenizer: str | Path | None = None,
    layer_stats: dict[str, LayerStats] | None = None,
) -> QuantizeResult:
    """Load, quantize, check and save atomically; the public function behind ``edgeq quantize``.

    ``calibration`` is read with :func:`edgeq.calibrate.load_calibration`, checked against
    ``model_path``; with ``data`` too, the data decides the activation ranges. A decoder's
    ``data`` may be text (``.txt`` with ``tokenizer``, else the tokenizer beside the model) or
    token ids: it is fed as prefills, so GPTQ/AWQ and ``--kv-cache int8`` see the activations of
    real text.
    """
    from edgeq.fileio import OutputSet
    from edgeq.frontends.resolve import refuse_outputs_over_inputs, resolve_model
    from edgeq.graph.io import load_model, save_model

    refuse_outputs_over_inputs({"-o": output, "--summary": summary_path}, model_path, [data, calibration, tokenizer])
    onnx_path = resolve_model(model_path)  # a file.py:factory spec: its checked, cached export
    model = load_model(onnx_path)
    source = None
    table = None
    if calibration is not None:  # first: a bad table fails before the data is read
        from edgeq.calibrate.table import load_calibration

        table = load_calibration(calibration, onnx_path)
    if data is not None:
        from edgeq.calibrate.streaming import open_data
        from edgeq.data.tokens import text_tokenizer

        # A streaming model's state inputs, when the data leaves them out, carry the float model's state.
        source = open_data(data, model, onnx_path, samples=samples, batch_size=batch_size,
                           tokenizer=text_tokenizer(data, tokenizer, model_path))
    result = quantize(model, config, QuantizeInputs(source, table, str(model_path), progress, layer_stats), copy=False)
    with OutputSet() as outputs:  # the model and its summary land together or not at all
        # The model first: what its check could not cover becomes a note in the summary.
        save_model(result.model, output, outputs=outputs, notes=result.summary.notes)
        if summary_path is not None:
            result.summary.save(outputs.path(summary_path))
    return result
