"""A validated, re-iterable stream of feed dicts for one model.

Every check that can be made without running the model is made when the source is built:
a wrong input name, dtype, rank or fixed dimension, an empty set or a NaN found after ten
minutes of inference would waste the user's time and, worse, could quietly produce a
calibration table from garbage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from edgeq.data.arrays import RowArray
from edgeq.errors import DataError, UnsupportedError

log = logging.getLogger("edgeq.data")

# Rows scanned at a time for NaN/Inf: bounded so the check never holds the whole set.
_SCAN_BYTES = 64 << 20


@dataclass(frozen=True)
class InputSpec:
    """A model input as the data must match it: dims are ints when fixed, else a symbol or None."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]
    optional: bool = False  # also an initializer: the model has a default

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype} [{dims}]"


def model_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    """The inputs a feed dict must (or may, for ones with an initializer default) provide."""
    initializers = {t.name for t in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if not value.type.HasField("tensor_type"):
            raise UnsupportedError(f"model input '{value.name}' is not a tensor; only tensor inputs can be fed")
        tensor_type = value.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        except (KeyError, TypeError, ValueError):
            raise UnsupportedError(
                f"model input '{value.name}' has element type {tensor_type.elem_type}, which numpy cannot hold"
            ) from None
        dims: list[int | str | None] = []
        if tensor_type.HasField("shape"):
            for dim in tensor_type.shape.dim:
                if dim.HasField("dim_value") and dim.dim_value > 0:
                    dims.append(int(dim.dim_value))
                elif dim.HasField("dim_param") and dim.dim_param:
                    dims.append(dim.dim_param)
                else:
                    dims.append(None)
        specs.append(InputSpec(value.name, dtype, tuple(dims), optional=value.name in initializers))
    return specs


class DataSource:
    """Calibration or evaluation samples for one model, checked against its inputs.

    Iterating yields batches of feeds (``{input name: array}``) and always restarts from
    sample 0, so several passes (calibration, GPTQ, evaluation) can share one source. Only
    one batch is ever read into memory.
    """

    def __init__(
        self,
        arrays: Mapping[str, RowArray],
        model: onnx.ModelProto | list[InputSpec],
        samples: int | None = None,
        batch_size: int = 8,
        origin: str = "data",
    ) -> None:
        self.origin = origin
        self.notes: list[str] = []
        specs = model_inputs(model) if isinstance(model, onnx.ModelProto) else list(model)
        self.specs = {s.name: s for s in specs}
        if batch_size < 1:
            raise DataError(f"--batch-size: {batch_size} is not a positive number of samples")
        if samples is not None and samples < 1:
            raise DataError(f"--samples: {samples} is not a positive number of samples")
        self.arrays = dict(arrays)
        self._check_names()
        self.input_names = [s.name for s in specs if s.name in self.arrays]
        # Inputs whose files hold samples without a batch axis, for a model without one.
        self.unbatched = self._check_shapes()
        available = self._check_counts()
        self.num_samples = available if samples is None else min(samples, available)
        if samples is not None and samples > available:
            self._note(f"{origin} has {available} samples; using all of them, not the {samples} asked for")
        self.batch_size = self._choose_batch_size(batch_size)
        self._check_finite()

    # --- validation ----------------------------------------------------------------------

    def _note(self, message: str) -> None:
        self.notes.append(message)
        log.info(message)

    def _check_names(self) -> None:
        if not self.arrays:
            raise DataError(f"{self.origin}: holds no arrays; expected one per model input ({self._expected()})")
        for name in self.arrays:
            if name not in self.specs:
                raise DataError(
                    f"{self.origin}: '{name}' is not an input of the model; the model's inputs are {self._expected()}"
                )
        for spec in self.specs.values():
            if not spec.optional and spec.name not in self.arrays:
                raise DataError(f"{self.origin}: no data for model input '{spec.name}' ({spec.describe()})")

    def _expected(self) -> str:
        return ", ".join(f"'{s.name}' {s.describe()}" for s in self.specs.values() if not s.optional)

    def _check_shapes(self) -> bool:
        symbols: dict[str, tuple[int, str]] = {}
        modes = set()
        for name in self.input_names:
            array, spec = self.arrays[name], self.specs[name]
            if array.dtype != spec.dtype:
                raise DataError(
                    f"{array.label}: input '{name}' is {array.dtype}, the model expects {spec.dtype}"
                )
            rank = len(spec.shape)
            if len(array.shape) == rank and rank > 0:
                sample_dims, model_dims, first_axis = array.shape[1:], spec.shape[1:], 1
                modes.add("batched")
            elif len(array.shape) == rank + 1:
                # Samples stacked along axis 0, each of the model's full input shape (its batch axis included, if any).
                sample_dims, model_dims, first_axis = array.shape[1:], spec.shape, 0
                modes.add("unbatched")
            else:
                raise DataError(
                    f"{array.label}: input '{name}' has rank {len(array.shape)} (samples along axis 0: "
                    f"{list(array.shape)}); the model expects {spec.describe()}, so rank {rank}"
                )
            for axis, (have, want) in enumerate(zip(sample_dims, model_dims, strict=True)):
                model_axis = axis + first_axis
                if isinstance(want, int) and have != want:
                    raise DataError(
                        f"{array.label}: input '{name}' has size {have} on axis {model_axis}, "
                        f"the model expects {spec.describe()}"
                    )
                if isinstance(want, str):
                    seen = symbols.setdefault(want, (have, name))
                    if seen[0] != have:
                        raise DataError(
                            f"{array.label}: input '{name}' has {want}={have} but input '{seen[1]}' has "
                            f"{want}={seen[0]}; the model needs them equal"
                        )
        if len(modes) > 1:
            raise DataError(f"{self.origin}: some inputs carry a batch axis and some do not; give every input the same layout")
        return modes == {"unbatched"}

    def _check_counts(self) -> int:
        counts = {name: len(self.arrays[name]) for name in self.input_names}
        first = self.input_names[0]
        for name, count in counts.items():
            if count != counts[first]:
                raise DataError(
                    f"{self.origin}: input '{name}' has {count} samples but '{first}' has {counts[first]}; "
                    "every input needs the same number"
                )
        if counts[first] == 0:
            raise DataError(f"{self.origin}: holds no samples (input '{first}' has 0 along axis 0)")
        return counts[first]

    def _choose_batch_size(self, requested: int) -> int:
        if self.unbatched:
            if requested != 1:
                shapes = ", ".join(f"'{n}' {list(self.arrays[n].shape)}" for n in self.input_names)
                self._note(f"each sample already has the model's full input shape ({shapes}: samples along axis 0): "
                           "feeding one sample per inference")
            return 1
        fixed = {self.specs[n].shape[0] for n in self.input_names if self.specs[n].shape and isinstance(self.specs[n].shape[0], int)}
        if not fixed:
            return min(requested, self.num_samples)
        if len(fixed) > 1:
            raise UnsupportedError(f"the model's inputs fix different batch sizes {sorted(fixed)}")  # type: ignore[type-var]
        batch = int(fixed.pop())  # type: ignore[arg-type]
        if batch != requested:
            self._note(f"the model has a fixed batch dimension of {batch}: feeding {batch} sample(s) per inference")
        usable = self.num_samples - self.num_samples % batch
        if usable == 0:
            raise DataError(f"{self.origin}: {self.num_samples} samples cannot fill one batch of {batch}, which the model fixes")
        if usable != self.num_samples:
            self._note(f"dropping the last {self.num_samples - usable} samples: the model's fixed batch of {batch} does not divide {self.num_samples}")
            self.num_samples = usable
        return batch

    def _check_finite(self) -> None:
        for name in self.input_names:
            array = self.arrays[name]
            if array.dtype.kind not in "fc" or getattr(array, "finite_guaranteed", False):
                continue
            row_bytes = max(1, int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize)
            step = max(1, _SCAN_BYTES // row_bytes)
            for start in range(0, self.num_samples, step):
                chunk = array.read(start, min(start + step, self.num_samples))
                finite = np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1)
                if not finite.all():
                    row = int(np.argmin(finite))
                    what = "NaN" if np.isnan(chunk[row]).any() else "Inf"
                    raise DataError(f"{array.label}: input '{name}' sample {start + row} contains {what}")

    # --- iteration -----------------------------------------------------------------------

    def batches(self, batch_size: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Feeds of ``batch_size`` samples (the model's fixed batch, if it has one), from sample 0."""
        size = self.batch_size
        if batch_size is not None and batch_size != self.batch_size and not self._batch_fixed():
            size = batch_size
        for start in range(0, self.num_samples, size):
            stop = min(start + size, self.num_samples)
            feeds = {name: self.arrays[name].read(start, stop) for name in self.input_names}
            if self.unbatched:
                feeds = {name: value[0] for name, value in feeds.items()}
            yield feeds

    def _batch_fixed(self) -> bool:
        return self.unbatched or any(
            self.specs[n].shape and isinstance(self.specs[n].shape[0], int) for n in self.input_names
        )

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self.batches()

    def num_batches(self, batch_size: int | None = None) -> int:
        size = self.batch_size if batch_size is None or self._batch_fixed() else batch_size
        return -(-self.num_samples // size)

    def batch_samples(self, feeds: Mapping[str, np.ndarray]) -> int:
        """How many samples a batch from this source holds (1 for a model without a batch axis)."""
        return 1 if self.unbatched else len(next(iter(feeds.values())))

    def __repr__(self) -> str:
        return f"DataSource({self.origin!r}, inputs={self.input_names}, samples={self.num_samples}, batch_size={self.batch_size})"
