"""State that a streaming model carries from one chunk to the next (an LSTM's ``h``/``c``).

A voice-activity detector or keyword spotter is run chunk after chunk, each call's state
outputs (``hn``, ``cn``, ``stateN``) fed back as the next call's state inputs (``h``, ``c``,
``state``). Calibrating or scoring it on independent chunks that all start from zero state shows
it states it never meets in use. Here: which inputs are state (paired with an output by name
and shape), and a carrier that fills them, zeros at the start of the stream and then the
previous call's outputs. Pure numpy: who runs the model (the float one for calibration, each
compared model its own) is the caller's business.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from edgeq.data.source import InputSpec
from edgeq.errors import DataError

# Output names that continue an input named ``x``: xn, xN, x_out, x_next, xout, next_x, x_new.
_SUFFIXES = ("n", "N", "_n", "_out", "out", "_next", "_new", "_1")


@dataclass(frozen=True)
class StatePair:
    """A state input and the output that holds its next value."""

    input: str
    output: str


def _continues(name: str, output: str) -> bool:
    stem = name[:-1] if name.endswith("0") else name  # h0 -> hn, c0 -> cn
    return any(output in (name + s, stem + s) for s in _SUFFIXES) or output in (f"next_{name}", f"{name}_state")


def find_state_pairs(specs: list[InputSpec], outputs: Mapping[str, tuple[int | str | None, ...]]) -> list[StatePair]:
    """Float inputs whose next value is a model output of the same rank (``h`` -> ``hn``, ``state`` -> ``stateN``)."""
    pairs = []
    for spec in specs:
        if spec.dtype.kind != "f":
            continue
        for output, shape in outputs.items():
            if _continues(spec.name, output) and len(shape) == len(spec.shape):
                fixed_match = all(a == b for a, b in zip(spec.shape, shape, strict=True) if isinstance(a, int) and isinstance(b, int))
                if fixed_match:
                    pairs.append(StatePair(spec.name, output))
                    break
    return pairs


class StateCarrier:
    """Fills state inputs: zeros first, then the outputs of the previous call (sliced to a smaller batch).

    Symbolic dimensions of a state input are the batch (silero's ``state`` is ``[2, batch, 128]``):
    they take the number of samples in the current feeds.
    """

    def __init__(self, pairs: list[StatePair], specs: Mapping[str, InputSpec]) -> None:
        self.pairs = pairs
        self.specs = {p.input: specs[p.input] for p in pairs}
        self.state: dict[str, np.ndarray] = {}

    def reset(self) -> None:
        self.state = {}

    def feeds(self, feeds: Mapping[str, np.ndarray], samples: int) -> dict[str, np.ndarray]:
        """``feeds`` plus every state input."""
        full = dict(feeds)
        for pair in self.pairs:
            spec = self.specs[pair.input]
            shape = tuple(d if isinstance(d, int) else samples for d in spec.shape)
            previous = self.state.get(pair.input)
            if previous is None:
                full[pair.input] = np.zeros(shape, spec.dtype)
                continue
            symbolic = [axis for axis, d in enumerate(spec.shape) if not isinstance(d, int)]
            for axis in symbolic:  # a last, smaller batch continues the first streams
                previous = np.take(previous, np.arange(min(samples, previous.shape[axis])), axis=axis)
            if previous.shape != shape:
                raise DataError(
                    f"state input '{pair.input}': the previous call's '{pair.output}' has shape {list(previous.shape)}, "
                    f"this chunk needs {list(shape)}; feed chunks of one stream with the same batch"
                )
            full[pair.input] = previous.astype(spec.dtype, copy=False)
        return full

    def update(self, outputs: Mapping[str, np.ndarray]) -> None:
        """Keep each state output for the next call."""
        for pair in self.pairs:
            self.state[pair.input] = np.asarray(outputs[pair.output])

    def note(self) -> str:
        names = ", ".join(f"{p.input} <- {p.output}" for p in self.pairs)
        return (f"state inputs not in the data ({names}): zeros at the first chunk, then each chunk's state "
                "outputs carried into the next (samples in order are one stream)")
