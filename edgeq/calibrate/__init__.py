"""Calibration: measure activation ranges on representative data, once, for every later pass.

``calibrate(model, data)`` streams the data through onnxruntime, keeps one fixed-size
histogram per observed tensor, and returns a :class:`CalibrationTable` with the threshold of
every method. Other passes (GPTQ's X^T X, AWQ's salience, SmoothQuant's channel maxima) reuse
:func:`collect` with their own observers, on the model as they have transformed it.
:func:`load_calibration` reads a table file back, with every check.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import onnx

from edgeq.calibrate.collector import activation_inputs, all_activations, collect
from edgeq.calibrate.observers import (
    METHODS,
    ChannelMagnitudeObserver,
    HessianObserver,
    HistogramObserver,
    MinMaxObserver,
    Observer,
)
from edgeq.calibrate.table import CalibrationTable, TensorRange, load_calibration
from edgeq.data import DataSource
from edgeq.errors import ConfigError, DataError

__all__ = [
    "METHODS",
    "CalibrationTable",
    "ChannelMagnitudeObserver",
    "HessianObserver",
    "HistogramObserver",
    "MinMaxObserver",
    "Observer",
    "TensorRange",
    "activation_inputs",
    "all_activations",
    "calibrate",
    "collect",
    "load_calibration",
]


def calibrate(
    model: str | Path | onnx.ModelProto,
    data: str | Path | DataSource,
    method: str = "entropy",
    percentile: float = 99.99,
    samples: int | None = None,
    batch_size: int = 8,
    nodes: str | None = None,
    progress: bool = True,
    tensors: Sequence[str] | str | None = None,
    bins: int = 2048,
    model_sha256: str | None = None,
) -> CalibrationTable:
    """Calibrate ``model`` on ``data`` and return the table (the library behind ``edgeq calibrate``).

    ``tensors`` overrides what is observed: a list of tensor names, or ``"all"`` for every
    float activation (what TensorRT's implicit int8 needs). By default the activation inputs
    of the quantizable nodes are observed, restricted by the ``nodes`` regex on node names.
    A ``DataSource`` is used as it is (its batch size included) unless ``samples`` asks
    for fewer. ``model_sha256`` names the file an in-memory ``model`` was loaded from
    (default: the digest of its serialised bytes).
    """
    if method not in METHODS:
        raise ConfigError(f"--method: unknown value {method!r}; expected one of {', '.join(METHODS)}")
    if not 0 < percentile <= 100:
        raise ConfigError(f"--percentile: {percentile} is not in (0, 100]")
    if isinstance(model, onnx.ModelProto):
        proto, digest = model, model_sha256 or hashlib.sha256(model.SerializeToString()).hexdigest()
    else:
        from edgeq.graph.io import load_model
        from edgeq.graph.io import model_sha256 as file_sha256

        proto, digest = load_model(model), file_sha256(model)
    if isinstance(data, DataSource) and samples is None:
        source = data
    else:
        from edgeq.calibrate.streaming import open_data

        source = open_data(data, proto, None if isinstance(model, onnx.ModelProto) else model, samples=samples, batch_size=batch_size)

    if tensors is not None and nodes is not None:
        raise ConfigError("--nodes selects nodes whose inputs to observe; it cannot be combined with an explicit tensor list")
    if tensors is None:
        names = activation_inputs(proto, nodes)
    elif isinstance(tensors, str):
        if tensors != "all":
            raise ConfigError(f"tensors={tensors!r}: give a list of tensor names or \"all\"")
        names = all_activations(proto)
    else:
        names = list(dict.fromkeys(tensors))
    if not names:
        where = f" matching --nodes {nodes!r}" if nodes else ""
        raise ConfigError(
            f"no quantizable nodes (Conv, ConvTranspose, MatMul, Gemm with a constant weight){where}: nothing to calibrate"
        )

    histograms = {name: HistogramObserver(bins) for name in names}
    observers: dict[str, list[Observer]] = {name: [histograms[name]] for name in names}
    seen = collect(proto, source, observers, progress=progress)

    # A tensor empty on every sample (a decoder's past cache during prefill) has no range to
    # measure: it is left out of the table, and said so; one with only NaN/Inf is an error.
    unfilled = [name for name, h in histograms.items() if h.count == 0 and h.nonfinite == 0]
    if unfilled:
        logging.getLogger("edgeq.calibrate").warning(
            "%d tensor(s) held no values on any sample (first: '%s'), such as an empty KV cache: left out of the table",
            len(unfilled), unfilled[0],
        )
        for name in unfilled:
            del histograms[name]
    empty = [name for name, h in histograms.items() if h.count == 0]
    if empty:
        raise DataError(
            f"{len(empty)} tensor(s) produced no finite values on this data (first: '{empty[0]}'); "
            "the model overflows or the data is wrong"
        )
    ranges: dict[str, TensorRange] = {}
    for name, histogram in histograms.items():
        thresholds = histogram.thresholds(percentile)
        ranges[name] = TensorRange(
            name=name,
            min=histogram.min,
            max=histogram.max,
            amax=thresholds[method],
            thresholds=thresholds,
            count=histogram.count,
        )
    return CalibrationTable(
        model_sha256=digest, method=method, samples=seen, tensors=ranges, percentile=percentile, bins=bins
    )
