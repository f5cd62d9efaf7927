"""The shapes a bundle is verified and built with, and the inputs it is verified on.

An engine is built for one shape per dynamic input (min = opt = max), and the onnxruntime check
must run at that same shape, so both come from here: ``--shape``, else the calibration data's
(batch 1), else batch 1 and ``DEFAULT_SEQUENCE`` for other dynamic dims. Without data the check
runs on deterministic synthetic inputs, with ids kept inside the table a Gather indexes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx

from edgeq.errors import ConfigError, UnsupportedError

if TYPE_CHECKING:
    from edgeq.graph.decoder import DecoderInfo

DEFAULT_SEQUENCE = 128  # build/verification length of a dynamic non-batch dimension nobody gave
# A KV-cache decoder is verified on a decode step after a short past: both lengths small, and
# consistent with each other (attention_mask spans past + new tokens, position_ids continue the past).
DECODER_PAST, DECODER_SEQUENCE = 4, 4


def value_dims(value: onnx.ValueInfoProto) -> list[int | str]:
    """A tensor's dims: ints where fixed, the dim name (or ``"?"``) where dynamic."""
    dims: list[int | str] = []
    for dim in value.type.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or "?")
    return dims


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds (old exporters also list initializers as graph inputs)."""
    inits = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in inits]


def parse_shapes(specs: Sequence[str]) -> dict[str, list[int]]:
    """``["input_ids:1x128"]`` -> ``{"input_ids": [1, 128]}`` (the ``--shape`` option)."""
    shapes: dict[str, list[int]] = {}
    for spec in specs:
        name, sep, dims = spec.rpartition(":")
        try:
            values = [int(d) for d in dims.lower().split("x")] if sep and name else []
        except ValueError:
            values = []
        if not values or any(v < 1 for v in values):
            raise ConfigError(f"--shape: {spec!r} is not NAME:DIMS like input_ids:1x128")
        shapes[name] = values
    return shapes


def resolve_shapes(
    model: onnx.ModelProto, given: Mapping[str, Sequence[int]] | None, sample: Mapping[str, np.ndarray] | None,
    decoder: DecoderInfo | None = None,
) -> tuple[dict[str, list[int]], list[str]]:
    """A concrete shape per input: ``--shape``, else the data's (batch 1), else 1 / 128 for dynamic dims.

    For a KV-cache ``decoder`` the dims come from its facts instead (``decoder_shapes``): a 128
    guessed for a head size or a past length nobody gave is a graph that cannot run.
    """
    shapes: dict[str, list[int]] = {}
    notes: list[str] = []
    assumed: list[str] = []
    inputs = graph_inputs(model)
    if decoder is not None:
        given = {**decoder_shapes(model, decoder, given, sample), **(given or {})}
    names = {v.name for v in inputs}
    for name in given or {}:
        if name not in names:
            raise ConfigError(f"--shape: {name!r} is not an input of the model; inputs are {', '.join(sorted(names))}")
    for value in inputs:
        dims = value_dims(value)
        if given and value.name in given:
            shape = list(given[value.name])
            if len(shape) != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(dims, shape, strict=False)):
                raise ConfigError(f"--shape: {value.name} {shape} does not fit the model's {dims}")
            shapes[value.name] = shape
            continue
        if sample is not None and value.name in sample:
            shape = [int(s) for s in np.asarray(sample[value.name]).shape]
            if dims and not isinstance(dims[0], int):
                shape[0] = 1
            shapes[value.name] = shape
            continue
        shape = []
        for axis, dim in enumerate(dims):
            if isinstance(dim, int):
                shape.append(dim)
            elif axis == 0:
                shape.append(1)
            else:
                shape.append(DEFAULT_SEQUENCE)
                assumed.append(f"{value.name}[{axis}] ({dim})")
        shapes[value.name] = shape
    if assumed:
        notes.append(
            f"dynamic dims {', '.join(assumed)} built and verified at {DEFAULT_SEQUENCE}; "
            "pass --shape NAME:1x256 (or --data) to choose"
        )
    return shapes, notes


def decoder_shapes(
    model: onnx.ModelProto, decoder: DecoderInfo, given: Mapping[str, Sequence[int]] | None,
    sample: Mapping[str, np.ndarray] | None,
) -> dict[str, list[int]]:
    """Shapes of a decoder's standard inputs that agree with each other and with ``decoder``.

    The new tokens are ``--shape input_ids``'s (else the data's with no past, else
    ``DECODER_SEQUENCE`` after ``DECODER_PAST`` cached ones); ``attention_mask`` spans past + new,
    the past tensors are [1, KV heads, past, head size]. A head count or size the graph leaves
    dynamic and no source states is refused: no guess makes such a graph run.
    """
    ids = (given or {}).get("input_ids")
    if ids is None and sample is not None and "input_ids" in sample:
        seq, past = int(np.asarray(sample["input_ids"]).shape[-1]), 0
    else:
        seq, past = (int(ids[-1]) if ids is not None else DECODER_SEQUENCE), DECODER_PAST
    shapes: dict[str, list[int]] = {}
    for value in graph_inputs(model):
        dims = value_dims(value)
        name = value.name
        if name in ("input_ids", "position_ids") and len(dims) == 2:
            shapes[name] = [1, seq]
        elif name == "attention_mask" and len(dims) == 2:
            shapes[name] = [1, past + seq]
        elif name.startswith("past_key_values.") and len(dims) == 4:
            heads = dims[1] if isinstance(dims[1], int) else decoder.kv_heads
            size = dims[3] if isinstance(dims[3], int) else decoder.head_size
            if heads is None or size is None:
                what = "KV heads" if heads is None else "head size"
                raise ConfigError(f"{name}: the {what} is dynamic ({dims}) and nothing states it (graph, attention "
                                  "attributes, genai_config.json); pass --shape " + name + ":1xHEADSx4xSIZE")
            shapes[name] = [1, int(heads), past, int(size)]
    return shapes


def _gather_rows(model: onnx.ModelProto, name: str) -> int | None:
    """Rows of the table an integer input indexes (so synthetic ids stay in range)."""
    inits = {t.name: t for t in model.graph.initializer}
    sizes = []
    for node in model.graph.node:
        if node.op_type in ("Gather", "GatherBlockQuantized") and len(node.input) > 1 and node.input[1] == name:
            table = inits.get(node.input[0])
            if table is not None and table.dims:
                sizes.append(int(table.dims[0]))
    return min(sizes) if sizes else None


def synthetic_feeds(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs: normal floats, in-range ids for lookups, ones for other integers,
    and ``position_ids`` that continue the past (``attention_mask`` [1, total] minus the new tokens).

    Shapes whose inputs would not fit in a quarter of the available memory are refused first.
    """
    from edgeq_runtime.errors import BundleError
    from edgeq_runtime.inputs import check_bytes

    try:
        check_bytes({v.name: (tuple(shapes[v.name]), np.dtype(onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)))
                     for v in graph_inputs(model)})
    except BundleError as exc:
        raise ConfigError(str(exc)) from None
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for value in graph_inputs(model):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        shape = tuple(shapes[value.name])
        if value.name == "position_ids" and len(shape) == 2 and "attention_mask" in shapes:
            past = int(shapes["attention_mask"][-1]) - shape[1]
            feeds[value.name] = np.broadcast_to(np.arange(past, past + shape[1]), shape).astype(dtype)
        elif np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            rows = _gather_rows(model, value.name)
            feeds[value.name] = (rng.integers(0, rows, size=shape) if rows else np.ones(shape)).astype(dtype)
        elif dtype == np.bool_:
            feeds[value.name] = np.ones(shape, dtype=bool)
        else:
            raise UnsupportedError(f"input {value.name}: cannot synthesise {dtype} data; pass --data")
    return feeds



def dynamic_shapes(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> dict[str, Sequence[int]]:
    """The build shape of each input with a dynamic dim (what build.sh and the engine profile get)."""
    return {
        v.name: shapes[v.name] for v in graph_inputs(model)
        if any(not isinstance(d, int) for d in value_dims(v))
    }
