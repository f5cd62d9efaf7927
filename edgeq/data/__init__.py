"""Calibration and evaluation data: ``.npz`` files, folders of ``.npy``/``.npz``, recipes.

``load_data(spec, model)`` is the one entry point every command uses, so every command
accepts the same ``--data`` forms and reports bad data with the same one-line errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from edgeq.data.arrays import ConcatArray, MemoryArray, OneSample, RowArray, open_npy, open_npz
from edgeq.data.prefill import is_decoder_inputs, prefill_arrays
from edgeq.data.source import DataSource, InputSpec, model_inputs
from edgeq.data.tokens import TOKEN_KEYS, load_tokens
from edgeq.errors import DataError

__all__ = ["DataSource", "InputSpec", "load_data", "model_inputs"]

# Calibration windows of text for a decoder: long enough for attention over real context, short
# enough that a batch's logits ([batch, tokens, vocabulary] float32) stay a few hundred MB.
PREFILL_SEQ_LEN = 256


def load_data(
    spec: str | Path | Mapping[str, np.ndarray] | DataSource,
    model: onnx.ModelProto,
    samples: int | None = None,
    batch_size: int = 8,
    tokenizer: str | Path | None = None,
    seq_len: int = PREFILL_SEQ_LEN,
) -> DataSource:
    """Open ``spec`` as samples for ``model``, checked against its inputs before any inference.

    ``spec`` is an ``.npz`` (keys are input names, axis 0 the samples), a folder of
    ``.npy``/``.npz`` files (concatenated in name order), a recipe ``.toml`` from
    ``calibration/``, an in-memory mapping of arrays, or an existing ``DataSource`` (re-sliced
    to ``samples``/``batch_size``). For a KV-cache decoder, ``spec`` may also be text: a ``.txt``
    with its ``tokenizer`` or a token ``.npz`` (``input_ids`` / ``tokens``), cut into ``seq_len``-token
    windows and fed as prefills from an empty cache (:mod:`edgeq.data.prefill`).
    """
    specs = model_inputs(model)
    if _is_token_data(spec, specs):
        return _prefill_source(spec, specs, samples, batch_size, tokenizer, seq_len)  # type: ignore[arg-type]
    if tokenizer is not None:
        raise DataError(f"--tokenizer is for text data (a .txt) fed to a KV-cache decoder, not for {_describe(spec)}")
    if isinstance(spec, DataSource):
        return DataSource(spec.arrays, specs, samples=samples or spec.num_samples, batch_size=batch_size, origin=spec.origin)
    if isinstance(spec, Mapping):
        arrays: dict[str, RowArray] = {k: MemoryArray(np.asarray(v), f"data:{k}") for k, v in spec.items()}
        return DataSource(arrays, specs, samples=samples, batch_size=batch_size, origin="data")
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{path}: not found; --data takes an .npz, a folder of .npy/.npz files, or a recipe .toml")
    if path.is_dir():
        arrays = _folder_arrays(path, specs)
    elif path.suffix == ".npz":
        arrays = open_npz(path)
    elif path.suffix == ".npy":
        arrays = {_npy_input(path, specs): open_npy(path)}
    elif path.suffix == ".toml":
        from edgeq.data.recipe import recipe_arrays

        arrays, _ = recipe_arrays(path, specs)
    else:
        raise DataError(f"{path}: unknown data format {path.suffix!r}; expected .npz, .npy, a folder of them, or a recipe .toml")
    return DataSource(arrays, specs, samples=samples, batch_size=batch_size, origin=str(path))


def _describe(spec: object) -> str:
    return str(spec) if isinstance(spec, (str, Path)) else "in-memory data"


def _is_token_data(spec: object, specs: list[InputSpec]) -> bool:
    """Text or token ids (no per-input arrays) for a decoder, or a ``.txt`` given to any model."""
    if isinstance(spec, DataSource):
        return False
    if isinstance(spec, Mapping):
        keys = set(spec)
    else:
        path = Path(spec)  # type: ignore[arg-type]
        if path.suffix == ".txt":
            return True  # refused in one line below when the model is no decoder
        if path.suffix != ".npz" or not path.is_file():
            return False
        try:
            with np.load(path, allow_pickle=False) as npz:
                keys = set(npz.files)
        except (OSError, ValueError):
            return False  # open_npz says what is wrong with it
    return bool(keys) and keys <= set(TOKEN_KEYS) and is_decoder_inputs(specs)


def _prefill_source(
    spec: str | Path | Mapping[str, np.ndarray], specs: list[InputSpec], samples: int | None,
    batch_size: int, tokenizer: str | Path | None, seq_len: int,
) -> DataSource:
    origin = _describe(spec)
    if not is_decoder_inputs(specs):
        prefill_arrays(np.zeros((1, 2), np.int64), specs, origin)  # raises: names the model's inputs
    tokens = load_tokens(spec, tokenizer, seq_len=seq_len, samples=samples)
    arrays = prefill_arrays(tokens.sequences, specs, tokens.origin)
    source = DataSource(arrays, specs, batch_size=batch_size, origin=tokens.origin)
    source.notes.append(
        f"{tokens.origin}: {tokens.sequences.shape[0]} prefill sequences of {tokens.sequences.shape[1]} tokens "
        "from an empty KV cache"
    )
    return source


def _npy_input(path: Path, specs: list[InputSpec]) -> str:
    """Which model input an ``.npy`` file feeds: the one it is named after, or the only one."""
    names = [s.name for s in specs]
    if path.stem in names:
        return path.stem
    required = [s.name for s in specs if not s.optional]
    if len(required) == 1:
        return required[0]
    raise DataError(
        f"{path}: cannot tell which of the model inputs ({', '.join(required)}) this file feeds; "
        "name it <input>.npy or use an .npz keyed by input name"
    )


def _folder_arrays(folder: Path, specs: list[InputSpec]) -> dict[str, RowArray]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".npy", ".npz"))
    if not files:
        raise DataError(f"{folder}: no .npy or .npz files in the folder")
    ranks = {s.name: len(s.shape) for s in specs}
    parts: dict[str, list[RowArray]] = {}
    for file in files:
        found = open_npz(file) if file.suffix == ".npz" else {_npy_input(file, specs): open_npy(file)}
        for name, array in found.items():
            # A file holding one sample without the sample axis (sample_0001.npy of C x H x W).
            if name in ranks and len(array.shape) == ranks[name] - 1 and ranks[name] > 0:
                array = OneSample(array)
            parts.setdefault(name, []).append(array)
    return {name: group[0] if len(group) == 1 else ConcatArray(group, f"{folder}:{name}") for name, group in parts.items()}
