"""Streaming the data through onnxruntime and feeding observers, one batch at a time.

The tensors to observe become extra outputs of a copy of the model, so one inference yields
them all. Each batch's activations are handed to the observers and dropped before the next
batch runs: memory stays at one batch of activations however many samples are calibrated
(onnxruntime's own histogram calibrators keep every batch's outputs until the end).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from edgeq.calibrate.observers.base import Observer
from edgeq.data.source import DataSource
from edgeq.errors import ConfigError, DataError
from edgeq.graph.io import EXTERNAL_DATA_THRESHOLD
from edgeq.graph.ops import INT8_PASSTHROUGH_OPS
from edgeq.graph.quantizable import find_quantizable, initializer_map
from edgeq.graph.session import cpu_session

# onnxruntime threads per session: calibration shares the machine with the user's other work.
INTRA_OP_THREADS = 2
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}



def activation_inputs(model: onnx.ModelProto, nodes: str | None = None) -> list[str]:
    """Activation inputs of the quantizable nodes (optionally only nodes whose name matches
    ``nodes``), plus what int8 Q/DQ placement may also quantize, so a table serves ``quantize
    --calib`` in either layout: both inputs of every residual ``Add`` such a conv feeds (directly
    or through the BatchNormalization int8 folds into it; TensorRT's layout quantizes the residual
    side, onnxruntime's the conv side too) and the float data inputs of pooling, Concat and Pad
    nodes (kept in int8 between quantized layers)."""
    pattern = _compile(nodes)
    found, _ = find_quantizable(model)
    constants = set(initializer_map(model.graph))
    names: list[str] = []
    convs: set[str] = set()
    for node in found:
        if pattern is not None and not pattern.search(node.name):
            continue
        if node.activation not in constants and node.activation not in names:
            names.append(node.activation)
        proto = model.graph.node[node.index]
        if proto.op_type in ("Conv", "ConvTranspose"):
            convs.add(proto.output[0])
    for node in model.graph.node:  # a BatchNormalization after a conv: its output is the conv's, folded
        if node.op_type == "BatchNormalization" and node.input[0] in convs:
            convs.add(node.output[0])
    types = _tensor_types(model) if pattern is None else {}
    for node in model.graph.node:
        if node.op_type == "Add" and any(t in convs for t in node.input):
            names += [t for t in node.input if t and t not in constants and t not in names]
        elif node.op_type in INT8_PASSTHROUGH_OPS and pattern is None:
            data = node.input if node.op_type == "Concat" else node.input[:1]
            names += [t for t in data if t and t not in constants and t not in names and types.get(t) in _FLOAT_TYPES]
    return names


def all_activations(model: onnx.ModelProto) -> list[str]:
    """Every float tensor computed at run time (graph inputs and node outputs), in graph order.

    This is the set TensorRT's implicit int8 mode wants a scale for, and the set
    onnxruntime's calibrators observe by default.
    """
    types = _tensor_types(model)
    constants = set(initializer_map(model.graph))
    names: list[str] = []
    seen: set[str] = set()
    candidates = [i.name for i in model.graph.input] + [o for n in model.graph.node for o in n.output]
    for name in candidates:
        if not name or name in seen or name in constants:
            continue
        seen.add(name)
        if types.get(name) in _FLOAT_TYPES:
            names.append(name)
    return names


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"--nodes: {pattern!r} is not a valid regular expression ({exc})") from None


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Typed value info of every tensor onnx shape inference can type (none inferred above 2 GB)."""
    graph = model.graph
    values = list(graph.value_info) + list(graph.input) + list(graph.output)
    if model.ByteSize() < EXTERNAL_DATA_THRESHOLD:
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
            values = list(inferred.graph.value_info) + values
        except (onnx.shape_inference.InferenceError, ValueError, RuntimeError):
            pass
    return {v.name: v for v in values if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type}


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    types = {name: v.type.tensor_type.elem_type for name, v in _value_infos(model).items()}
    for tensor in model.graph.initializer:
        types[tensor.name] = tensor.data_type
    return types


def expose_tensors(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose outputs also include ``names`` (graph inputs are read from the feeds)."""
    graph = model.graph
    produced = {o for n in graph.node for o in n.output}
    inputs = {i.name for i in graph.input}
    constants = set(initializer_map(graph))
    for name in names:
        if name in constants and name not in inputs:
            raise ConfigError(f"tensor '{name}' is a constant (initializer), not an activation; it has no calibration range")
        if name not in produced and name not in inputs:
            raise ConfigError(f"tensor '{name}' is not produced by any node of the model nor a model input")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    existing = {o.name for o in copy.graph.output}
    infos = _value_infos(model)
    for name in names:
        if name in existing or name in inputs:
            continue
        value = onnx.ValueInfoProto()
        if name in infos:
            value.CopyFrom(infos[name])
        value.name = name  # untyped if inference could not type it: onnxruntime still runs it
        copy.graph.output.append(value)
        existing.add(name)
    return copy


def session_for(model: onnx.ModelProto) -> Any:
    """An onnxruntime CPU session for calibration, with the model's graph as written (no fusions).

    Graph optimisations could fuse the nodes around an observed tensor and change the
    values the model computes slightly; calibration should see what the model says.
    """
    # Between runs the observers work in Python; spinning pool threads would only burn the
    # cores they need (measured: a third less CPU per sample, and faster on a busy machine).
    return cpu_session(model, purpose="the model for calibration", threads=INTRA_OP_THREADS,
                       optimize=False, spin=False, error=ConfigError)


class SampleProgress:
    """A rich progress bar on stderr counting samples, with samples/s; silent when disabled."""

    def __init__(self, total: int, description: str, enabled: bool) -> None:
        self.enabled = enabled
        self.total = total
        self.description = description
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> SampleProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                ProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.text import Text

            class SpeedColumn(ProgressColumn):
                def render(self, task: Any) -> Text:
                    speed = task.finished_speed or task.speed
                    return Text("" if speed is None else f"{speed:.1f} samples/s")

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                SpeedColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total)
        return self

    def advance(self, samples: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, samples)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def collect(
    model: onnx.ModelProto,
    data: DataSource,
    observers: Mapping[str, Sequence[Observer]],
    progress: bool = False,
    batch_size: int | None = None,
    description: str = "calibrating",
) -> int:
    """Run every batch of ``data`` through ``model`` and feed each observed tensor's observers.

    Returns the number of samples seen. The model itself is not modified.
    """
    names = [name for name, group in observers.items() if group]
    session = session_for(expose_tensors(model, names))
    input_names = {i.name for i in model.graph.input}
    fetched = [n for n in names if n not in input_names]
    samples = 0
    with SampleProgress(data.num_samples, description, progress) as bar:
        for feeds in data.batches(batch_size):
            outputs = _run(session, fetched, feeds, samples)
            values: dict[str, np.ndarray] = dict(zip(fetched, outputs, strict=True))
            del outputs
            for name in names:
                value = values[name] if name in values else feeds[name]
                for observer in observers[name]:
                    observer.update(value)
            del values
            count = data.batch_samples(feeds)
            samples += count
            bar.advance(count)
    return samples


def _run(session: Any, fetched: list[str], feeds: dict[str, np.ndarray], first_sample: int) -> list[np.ndarray]:
    if not fetched:
        return []
    try:
        return list(session.run(fetched, feeds))
    except Exception as exc:  # onnxruntime's InvalidArgument / RuntimeException carry the reason
        message = " ".join(str(exc).split())[:300]
        raise DataError(f"onnxruntime failed on the batch starting at sample {first_sample}: {message}") from None


def unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))
