"""``file.py:factory`` specs exported once and cached, keyed by everything the graph depends on.

Factory specs are exported with ``to_onnx`` and cached under ``$XDG_CACHE_HOME/edgeq/torch/<key>/``
(``~/.cache/edgeq/torch`` by default, outside the user's project so nothing appears next to their
code). The factory runs on every use — building a module and loading its weights is quick,
exporting it is what is slow — so the key can cover everything the exported graph depends on: the
torch and onnxscript versions, the factory file, the source files of every module class in the
network, every parameter and buffer byte, the example inputs and the export options. A retrained
checkpoint or an edited model file therefore never reuses a stale export. Delete the folder to
clear the cache. torch is imported only inside the functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from edgeq.errors import ConfigError, ModelLoadError
from edgeq.frontends.decoder_export import DECODER_ATOL, DECODER_RTOL, decoder_to_onnx
from edgeq.frontends.torch_export import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    TorchExportResult,
    as_input_tuple,
    to_onnx,
)
from edgeq.frontends.torch_support import import_torch

logger = logging.getLogger(__name__)

#: Bumped whenever what is written into a cache entry changes, so old entries are not reused.
CACHE_FORMAT = 1


@dataclass
class FactoryModel:
    """What a factory returned, checked: the module, its example inputs, optional dynamic shapes."""

    module: Any
    example_inputs: tuple[Any, ...]
    dynamic_shapes: Any = None


def _unpack_factory_output(torch: Any, spec: Any, value: Any) -> FactoryModel:
    """Check the factory's return value, so a wrong shape is one line naming the spec."""
    expected = "(module, example_inputs) or (module, example_inputs, dynamic_shapes)"
    if not isinstance(value, (tuple, list)) or len(value) not in (2, 3):
        got = f"a {len(value)}-tuple" if isinstance(value, (tuple, list)) else type(value).__name__
        raise ConfigError(f"{spec}: the factory must return {expected}, it returned {got}")
    module, example_inputs = value[0], value[1]
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(
            f"{spec}: the factory's first value must be a torch.nn.Module, got {type(module).__name__}"
        )
    try:
        inputs = as_input_tuple(torch, example_inputs)
    except ConfigError as exc:
        raise ConfigError(f"{spec}: {exc}") from None
    return FactoryModel(module, inputs, value[2] if len(value) == 3 else None)


def _unpack_decoder(spec: Any, value: Any) -> FactoryModel:
    """A decoder factory returns the module alone; its trace inputs come from its cache layout."""
    from edgeq.frontends.decoder_export import kv_cache_layout, trace_inputs, vocab_size_of

    torch = import_torch()
    if not isinstance(value, torch.nn.Module):
        raise ConfigError(
            f"{spec}: EDGEQ_EXPORT says decoder, so the factory must return the decoder module alone, "
            f"it returned {type(value).__name__}"
        )
    try:
        return FactoryModel(value, trace_inputs(kv_cache_layout(value), vocab_size_of(value)))
    except ConfigError as exc:
        raise ConfigError(f"{spec}: {exc}") from None


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/edgeq/torch``: the users' cache, never a folder next to their code."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeq" / "torch"


def _update_tensor(digest: Any, torch: Any, name: str, tensor: Any) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    if tensor.numel():
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def _class_source_digests(module: Any) -> list[str]:
    """Digests of the files defining the network's own classes (torch's own come with its version)."""
    files: set[str] = set()
    for sub in module.modules():
        cls = type(sub)
        if cls.__module__.split(".")[0] == "torch":
            continue
        with contextlib.suppress(TypeError, OSError):
            source = inspect.getsourcefile(cls)
            if source:
                files.add(source)
    out = []
    for source in sorted(files):
        with contextlib.suppress(OSError):
            out.append(f"{source}:{hashlib.sha256(Path(source).read_bytes()).hexdigest()}")
    return out


def factory_cache_key(spec: Any, built: FactoryModel, options: dict[str, Any]) -> str:
    """Everything the exported graph depends on, hashed (see the module docstring)."""
    from edgeq.frontends.spec import file_sha256

    torch = import_torch()
    digest = hashlib.sha256()
    try:
        import onnxscript

        onnxscript_version = str(onnxscript.__version__)
    except ImportError:  # pragma: no cover - torch's exporter needs it
        onnxscript_version = "none"
    header = {
        "format": CACHE_FORMAT,
        "torch": str(torch.__version__),
        "onnxscript": onnxscript_version,
        "onnx": onnx.__version__,
        "file": file_sha256(spec.file),
        "function": spec.function,
        "classes": _class_source_digests(built.module),
        "dynamic_shapes": repr(built.dynamic_shapes),
        "options": options,
    }
    digest.update(json.dumps(header, sort_keys=True, default=repr).encode())
    for name, tensor in built.module.named_parameters():
        _update_tensor(digest, torch, f"p:{name}", tensor)
    for name, tensor in built.module.named_buffers():
        _update_tensor(digest, torch, f"b:{name}", tensor)
    for i, tensor in enumerate(built.example_inputs):
        _update_tensor(digest, torch, f"x:{i}", tensor)
    return digest.hexdigest()


def export_factory(spec: str | Path, cache_dir: str | Path | None = None) -> TorchExportResult:
    """Build the model a ``file.py:factory`` spec names and return its (cached) checked ONNX export."""
    from edgeq.fileio import atomic_directory
    from edgeq.frontends.spec import call_factory, export_options, parse_factory_spec

    parsed = parse_factory_spec(spec)
    options = export_options(parsed)
    torch = import_torch()
    decoder = bool(options.get("decoder", False))
    value = call_factory(parsed)
    built = _unpack_decoder(parsed, value) if decoder else _unpack_factory_output(torch, parsed, value)
    key = factory_cache_key(parsed, built, options)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = root / key[:32]
    model_path, record_path = entry / "model.onnx", entry / "export.json"
    if model_path.is_file() and record_path.is_file():
        with contextlib.suppress(ConfigError):
            cached = TorchExportResult.load(record_path)
            if cached.cache_key == key:
                cached.path = str(model_path)
                logger.info("%s: using cached export %s", parsed, model_path)
                return cached
    try:
        with atomic_directory(entry) as tmp:
            result = decoder_to_onnx(
                built.module,
                output_path=tmp / "model.onnx",
                opset=options.get("opset"),
                atol=float(options.get("atol", DECODER_ATOL)),
                rtol=float(options.get("rtol", DECODER_RTOL)),
            ) if decoder else to_onnx(
                built.module,
                built.example_inputs,
                output_path=tmp / "model.onnx",
                input_names=options.get("input_names"),
                output_names=options.get("output_names"),
                dynamic_shapes=built.dynamic_shapes,
                opset=options.get("opset"),
                atol=float(options.get("atol", DEFAULT_ATOL)),
                rtol=float(options.get("rtol", DEFAULT_RTOL)),
            )
            result.cache_key = key
            result.path = str(model_path)
            result.save(tmp / "export.json")
    except OSError as exc:
        raise ConfigError(f"{root}: cannot write the export cache ({exc.strerror})") from None
    logger.info("%s: exported to %s (max abs diff %.3g)", parsed, model_path, result.max_abs_diff or 0.0)
    return result


def load_factory_model(spec: str | Path, cache_dir: str | Path | None = None) -> onnx.ModelProto:
    """The checked ONNX graph of a ``file.py:factory`` spec, as every command loads a model."""
    result = export_factory(spec, cache_dir)
    if result.model is not None:
        return result.model
    from edgeq.graph.io import load_model

    assert result.path is not None  # export_factory always sets it
    return load_model(result.path)


def factory_model_path(spec: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Path of the checked, cached ONNX export of a ``file.py:factory`` spec (for path-based tools)."""
    result = export_factory(spec, cache_dir)
    if result.path is None:  # pragma: no cover - export_factory always writes a file
        raise ModelLoadError(f"{spec}: the export wrote no file")
    return Path(result.path)
