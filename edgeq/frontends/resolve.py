"""A model argument (an ONNX path, a bundle folder, or ``file.py:factory``) turned into an ONNX path.

Every command that takes ``MODEL.onnx`` also takes a factory spec. The graph layer below only
ever sees files, so the entry points that accept a user's model argument (the CLI commands and
the library functions above the frontends: ``quantize_file``, ``export_bundle``,
``compare_models``, ``profile``) call ``resolve_model`` once, before anything loads the model.
Recognising a spec costs a regular expression and one ``stat``; torch is imported only when the
argument is one.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from edgeq.frontends.spec import is_factory_spec, parse_factory_spec
from edgeq.graph.io import load_model, model_files


def resolve_model(spec: str | Path) -> Path:
    """The ONNX file a model argument names.

    An ONNX path (or bundle folder) comes back unchanged. A PyTorch ``path/to/file.py:factory``
    spec (a function returning ``(module, example_inputs[, dynamic_shapes])``) is exported once,
    checked against the module and cached; the cached file's path comes back (see
    ``edgeq.frontends.factory_cache``).
    """
    if is_factory_spec(spec):
        from edgeq.frontends.factory_cache import factory_model_path

        return factory_model_path(spec)
    return Path(spec)


def load_model_spec(spec: str | Path, load_external_data: bool = True) -> onnx.ModelProto:
    """``load_model`` for a model argument that may be a ``file.py:factory`` spec."""
    return load_model(resolve_model(spec), load_external_data=load_external_data)


def model_input_files(spec: str | Path) -> list[Path]:
    """The user's files a model argument reads: the ONNX file and its external data, the bundle's
    model, or a factory spec's Python file. An output that is one of them must be refused."""
    if is_factory_spec(spec):
        return [parse_factory_spec(spec).file]
    path = Path(spec)
    if path.is_dir():
        return [path, *model_files(path / "model.onnx")] if (path / "model.onnx").is_file() else [path]
    return model_files(path)


def refuse_outputs_over_inputs(outputs: dict[str, str | Path | None], model: str | Path | None = None,
                               others: list[str | Path | None] | None = None, folders: tuple[str, ...] = ()) -> None:
    """One check at every entry point, before any work: every output writable, none replacing an input."""
    from edgeq.fileio import check_output_paths, refuse_overwriting_inputs

    check_output_paths(outputs, folders)
    inputs: list[str | Path] = [] if model is None else list(model_input_files(model))
    inputs += [p for p in (others or []) if p is not None]
    refuse_overwriting_inputs(outputs, inputs)
