"""Input shapes, synthetic inputs and input validation.

A benchmark on the board usually has no real data at hand, and latency and energy do not depend on
the values, only on shapes and dtypes (token ids must still be valid indices, masks ones). So inputs
are synthesised from the tensor specs; a user who cares passes an ``.npz``.
"""

from __future__ import annotations

import collections.abc
import re
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

from edgeq_runtime.errors import BundleError
from edgeq_runtime.manifest import TensorSpec

DEFAULT_DYNAMIC_DIM = 128

_SHAPE_OVERRIDE = re.compile(r"^([^:]+):(\d+(?:x\d+)*)$")


def parse_shape_overrides(values: Iterable[str]) -> Dict[str, List[int]]:
    """``["input_ids:1x128", ...]`` → ``{"input_ids": [1, 128]}``."""
    shapes: Dict[str, List[int]] = {}
    for value in values:
        match = _SHAPE_OVERRIDE.match(value.strip())
        if not match:
            raise BundleError("--shape " + repr(value) + " must look like NAME:1x128 (dims separated by 'x')")
        shapes[match.group(1)] = [int(d) for d in match.group(2).split("x")]
    return shapes


def resolve_shapes(
    specs: Sequence[TensorSpec],
    batch: Optional[int] = None,
    overrides: Optional[Mapping[str, List[int]]] = None,
    default_dim: int = DEFAULT_DYNAMIC_DIM,
) -> Dict[str, List[int]]:
    """A concrete shape for every input: overrides first, then ``batch`` for a dynamic first dim and
    ``default_dim`` for the other dynamic dims. Fixed dims are never changed."""
    overrides = dict(overrides or {})
    known = {spec.name for spec in specs}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise BundleError("--shape names unknown input " + ", ".join(unknown) + " (inputs: " + ", ".join(sorted(known)) + ")")
    if batch is not None and batch < 1:
        raise BundleError("--batch must be at least 1, got " + str(batch))
    shapes: Dict[str, List[int]] = {}
    for spec in specs:
        if spec.name in overrides:
            shape = list(overrides[spec.name])
            _check_shape(spec, shape, "--shape " + spec.name)
            shapes[spec.name] = shape
            continue
        shape = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int):
                if axis == 0 and batch is not None and dim != batch:
                    raise BundleError(
                        "input " + repr(spec.name) + " has a fixed batch dimension of " + str(dim) + "; --batch "
                        + str(batch) + " is not possible with this model"
                    )
                shape.append(dim)
            elif axis == 0:
                shape.append(batch if batch is not None else 1)
            else:
                shape.append(default_dim)
        shapes[spec.name] = shape
    return shapes


def _check_shape(spec: TensorSpec, shape: Sequence[int], what: str) -> None:
    if len(shape) != spec.rank:
        raise BundleError(
            what + " has rank " + str(len(shape)) + " " + _fmt(shape) + ", model expects rank " + str(spec.rank)
            + " " + _fmt(spec.shape)
        )
    for axis, (got, want) in enumerate(zip(shape, spec.shape)):
        if isinstance(want, int) and got != want:
            raise BundleError(
                what + " has shape " + _fmt(shape) + " but dim " + str(axis) + " must be " + str(want)
                + " (model shape " + _fmt(spec.shape) + ")"
            )


def _fmt(shape: Sequence[Union[int, str]]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def available_memory_bytes() -> Optional[int]:
    """Memory the kernel says is available now (Linux ``MemAvailable``), None where unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_input_bytes(specs: Sequence[TensorSpec], shapes: Mapping[str, List[int]]) -> None:
    """Refuse shapes whose inputs alone would take more than a quarter of the available memory,
    before allocating them (``--batch 100000000`` must be one line, not an out-of-memory kill)."""
    check_bytes({spec.name: (shapes[spec.name], np.dtype(spec.dtype)) for spec in specs})


def check_bytes(inputs: Mapping[str, "tuple[Sequence[int], np.dtype]"]) -> None:
    """``check_input_bytes`` on plain (shape, dtype) pairs, for callers without TensorSpecs."""
    total = 0
    shapes = {name: list(shape) for name, (shape, _) in inputs.items()}
    for shape, dtype in inputs.values():  # floats are drawn in float64 first: count the larger
        count = 1
        for dim in shape:
            count *= int(dim)
        total += count * max(dtype.itemsize, 8 if dtype.kind == "f" else 0)
    available = available_memory_bytes()
    if available is not None and total > available // 4:
        raise BundleError(
            "the inputs at shapes " + ", ".join(k + " " + str(list(v)) for k, v in shapes.items())
            + " would take " + _gib(total) + "; at most a quarter of the available memory (" + _gib(available // 4)
            + ") is used for inputs: lower --batch or --shape"
        )


def _gib(n: int) -> str:
    return "%.1f GiB" % (n / 2**30) if n >= 2**30 else "%.1f MiB" % (n / 2**20)


def synthesize_inputs(specs: Sequence[TensorSpec], shapes: Mapping[str, List[int]], seed: int = 0) -> Dict[str, np.ndarray]:
    """Inputs with the right shapes and dtypes whose values keep every model on its normal path:
    standard-normal floats, ones for ids and masks (a valid token id in any vocabulary), zeros for
    token-type/segment ids, 0..n-1 for position ids."""
    check_input_bytes(specs, shapes)
    rng = np.random.default_rng(seed)
    feeds: Dict[str, np.ndarray] = {}
    for spec in specs:
        shape = tuple(shapes[spec.name])
        dtype = np.dtype(spec.dtype)
        lowered = spec.name.lower()
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = np.ones(shape, dtype=dtype)
        elif "position" in lowered and shape:
            feeds[spec.name] = np.broadcast_to(np.arange(shape[-1], dtype=dtype), shape).copy()
        elif "type" in lowered or "segment" in lowered:
            feeds[spec.name] = np.zeros(shape, dtype=dtype)
        else:
            feeds[spec.name] = np.ones(shape, dtype=dtype)
    return feeds


def load_feeds(path: Union[str, Path]) -> Dict[str, np.ndarray]:
    """Arrays from an ``.npz`` file, keyed by input name."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(str(path) + ": feeds file does not exist")
    try:
        with np.load(str(path), allow_pickle=False) as data:
            return {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError) as exc:
        raise BundleError(str(path) + ": not a readable .npz file (" + str(exc).splitlines()[0] + ")") from None


def validate_feeds(feeds: Mapping[str, object], specs: Sequence[TensorSpec], source: str) -> Dict[str, np.ndarray]:
    """Check names, dtypes, ranks and fixed dims against ``specs``; one-line error naming the tensor."""
    if not isinstance(feeds, collections.abc.Mapping):
        raise BundleError(source + ": feeds must be a mapping of input name to array, got " + type(feeds).__name__)
    names = [spec.name for spec in specs]
    unknown = sorted(set(feeds) - set(names))
    if unknown:
        raise BundleError(source + ": unknown input " + ", ".join(repr(u) for u in unknown) + " (model inputs: "
                          + ", ".join(names) + ")")
    missing = [n for n in names if n not in feeds]
    if missing:
        raise BundleError(source + ": missing input " + ", ".join(repr(m) for m in missing) + " (model inputs: "
                          + ", ".join(names) + ")")
    checked: Dict[str, np.ndarray] = {}
    for spec in specs:
        value = feeds[spec.name]
        if not isinstance(value, np.ndarray):
            raise BundleError(source + ": input " + repr(spec.name) + " must be a numpy array, got " + type(value).__name__)
        if value.dtype != np.dtype(spec.dtype):
            raise BundleError(
                source + ": input " + repr(spec.name) + " has dtype " + value.dtype.name + ", model expects "
                + spec.dtype
            )
        _check_shape(spec, list(value.shape), source + ": input " + repr(spec.name))
        checked[spec.name] = value
    return checked
