"""Calibration data for a streaming model: the state the float model carries from chunk to chunk.

When the data holds the chunks but not the state inputs (``h``/``c``, ``state``), the samples
are taken in order as one stream: the first chunk starts from zero state, and every later one
gets the state outputs the float model produced on the chunk before, so the observers see the
states the model really meets in use (said once, in the source's notes). Data that holds the
state inputs is used as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeq.data import DataSource, load_data
from edgeq.data.source import InputSpec, model_inputs
from edgeq.data.state import StateCarrier, StatePair, find_state_pairs
from edgeq.errors import DataError
from edgeq.graph.session import cpu_session, onnxruntime_message


def output_shapes(model: onnx.ModelProto) -> dict[str, tuple[int | str | None, ...]]:
    shapes: dict[str, tuple[int | str | None, ...]] = {}
    for value in model.graph.output:
        dims: list[int | str | None] = []
        for dim in value.type.tensor_type.shape.dim:
            dims.append(int(dim.dim_value) if dim.HasField("dim_value") else (dim.dim_param or None))
        shapes[value.name] = tuple(dims)
    return shapes


def state_pairs(model: onnx.ModelProto) -> list[StatePair]:
    """The model's state inputs and the outputs that continue them (empty for a stateless model)."""
    return find_state_pairs(model_inputs(model), output_shapes(model))


def _shell(model: onnx.ModelProto, optional: set[str]) -> onnx.ModelProto:
    """The model's inputs only, ``optional`` ones marked as having a default (what ``load_data`` checks)."""
    shell = onnx.ModelProto()
    shell.graph.input.extend(model.graph.input)
    shell.graph.initializer.extend(onnx.TensorProto(name=name) for name in optional)
    return shell


class StreamingSource(DataSource):
    """A :class:`DataSource` whose batches carry the float model's state from one chunk to the next."""

    def __init__(self, inner: DataSource, model: onnx.ModelProto | str | Path, pairs: list[StatePair], specs: list[InputSpec]) -> None:
        super().__init__(inner.arrays, list(inner.specs.values()), samples=inner.num_samples, batch_size=inner.batch_size, origin=inner.origin)
        self.notes = list(inner.notes)
        self.pairs = pairs
        self.state_specs = {s.name: s for s in specs}
        self.model = model
        self._session: Any = None
        self.notes.append(StateCarrier(pairs, self.state_specs).note())

    def carrier(self) -> StateCarrier:
        """A fresh carrier (zero state) for one pass over the stream."""
        return StateCarrier(self.pairs, self.state_specs)

    def chunks(self, batch_size: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """The data's own feeds, without state: for callers that carry each model's state themselves."""
        yield from super().batches(batch_size)

    def batches(self, batch_size: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        if self._session is None:
            self._session = cpu_session(self.model, purpose="the float model that carries the state", optimize=False, error=DataError)
        outputs = [p.output for p in self.pairs]
        carrier = self.carrier()
        for feeds in self.chunks(batch_size):
            full = carrier.feeds(feeds, self.batch_samples(feeds))
            yield full
            try:
                values = self._session.run(outputs, full)
            except Exception as exc:
                raise DataError(f"{self.origin}: the float model failed carrying its state ({onnxruntime_message(exc)})") from None
            carrier.update(dict(zip(outputs, values, strict=True)))


def open_data(
    spec: Any, model: onnx.ModelProto, model_file: str | Path | None = None, samples: int | None = None, batch_size: int = 8,
    tokenizer: str | Path | None = None,
) -> DataSource:
    """``load_data`` for any model; for one with state inputs the data leaves out, a :class:`StreamingSource`.

    ``model_file`` (the float model on disk) is what the state is computed with; without it, the
    in-memory ``model`` (then it must not be changed while the data is in use). ``tokenizer`` is
    for a decoder's text data (``load_data``).
    """
    pairs = state_pairs(model)
    if not pairs:
        return load_data(spec, model, samples=samples, batch_size=batch_size, tokenizer=tokenizer)
    source = load_data(spec, _shell(model, {p.input for p in pairs}), samples=samples, batch_size=batch_size)
    missing = [p for p in pairs if p.input not in source.input_names]
    if not missing:
        return source
    if len(missing) < len(pairs):
        given = ", ".join(p.input for p in pairs if p not in missing)
        raise DataError(
            f"{source.origin}: holds state input(s) {given} but not {', '.join(p.input for p in missing)}; "
            "give every state input, or none to carry the state from chunk to chunk"
        )
    reference: onnx.ModelProto | str | Path = model_file if model_file is not None else model
    return StreamingSource(source, reference, pairs, model_inputs(model))
