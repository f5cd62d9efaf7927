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
from edgeq.data.source import DataSource, InputSpec, model_inputs
from edgeq.errors import DataError

__all__ = ["DataSource", "InputSpec", "load_data", "model_inputs"]


def load_data(
    spec: str | Path | Mapping[str, np.ndarray] | DataSource,
    model: onnx.ModelProto,
    samples: int | None = None,
    batch_size: int = 8,
) -> DataSource:
    """Open ``spec`` as samples for ``model``, checked against its inputs before any inference.

    ``spec`` is an ``.npz`` (keys are input names, axis 0 the samples), a folder of
    ``.npy``/``.npz`` files (concatenated in name order), a recipe ``.toml`` from
    ``calibration/``, an in-memory mapping of arrays, or an existing ``DataSource`` (re-sliced
    to ``samples``/``batch_size``).
    """
    specs = model_inputs(model)
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
