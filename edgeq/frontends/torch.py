"""PyTorch module → ONNX, checked against the module before anything downstream sees it.

Most users hold an ``nn.Module``, not an ONNX file. This module turns one into the ONNX graph
the rest of edgeq works on, with ``torch.onnx.export`` (the ``torch.export``-based exporter, torch
2.13's default and recommended one), and then runs the exported graph in onnxruntime on the
example inputs and compares it with the module's own outputs: a graph that quietly computes
something else would poison calibration, quantization and every accuracy number after it.

The exporter's optimizer runs (BatchNorm folded into the Conv before it, Linear weights stored
transposed as initializers), and nodes are then named after the module that emitted them, so the
quantization summary and ``--exclude`` speak in the user's layer names.

torch is optional (``pip install 'edgeq[torch]'``) and is imported only inside these functions, so
``import edgeq.frontends.torch`` itself costs nothing. (This file is named ``torch.py`` inside a
package; ``import torch`` in it still finds the real torch because Python 3 imports are absolute.)

Opset: the default is 18, the opset torch 2.13's exporter builds natively. Asking it for a lower
one goes through a version converter that cannot rewrite common graphs (ReduceMean moved its axes
from an attribute to an input in opset 18), so a request it could not honour is refused rather
than returned at another opset. Later steps raise the opset themselves when a format needs it
(blocked int4 DequantizeLinear needs 21), so exporting at the lowest opset that works and letting
the quantizer bump it keeps the float model loadable by the oldest TensorRT that can run it. A
board whose TensorRT reads only up to opset 17 (JetPack 5, TensorRT 8.5) needs the graph lowered
at export for that board.

Factory specs (``file.py:factory``) are exported once and cached under
``$XDG_CACHE_HOME/edgeq/torch/<key>/`` (``~/.cache/edgeq/torch`` by default, outside the user's
project so nothing appears next to their code). The factory runs on every use — building a module
and loading its weights is quick, exporting it is what is slow — so the key can cover everything
the exported graph depends on: the torch and onnxscript versions, the factory file, the source
files of every module class in the network, every parameter and buffer byte, the example inputs
and the export options. A retrained checkpoint or an edited model file therefore never reuses a
stale export. Delete the folder to clear the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
import logging
import os
import re
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx

from edgeq.errors import ConfigError, EdgeqError, MissingDependencyError, ModelLoadError, UnsupportedError
from edgeq.serialization import Serializable

logger = logging.getLogger(__name__)

#: The opset torch 2.13's exporter emits without a version conversion.
DEFAULT_OPSET = 18
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3
#: Bumped whenever what is written into a cache entry changes, so old entries are not reused.
CACHE_FORMAT = 1


def _import_torch() -> ModuleType:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "torch", "the PyTorch frontend") from None
    return torch


@dataclass
class ExportResult(Serializable):
    """What was exported and how closely it matches the module (``max_abs_diff`` None: not checked)."""

    schema_type = "edgeq.TorchExportResult"
    schema_version = 1

    path: str | None
    opset: int
    input_names: list[str]
    output_names: list[str]
    max_abs_diff: float | None
    output_max_abs_diff: dict[str, float]
    atol: float
    rtol: float
    torch_version: str
    cache_key: str | None = None
    # The graph itself is held in memory only; its file is ``path``.
    model: onnx.ModelProto | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        doc = super().to_dict()
        doc["_data"].pop("model", None)
        return doc


# ---------------------------------------------------------------------------------------------
# Exporting a module


def _as_input_tuple(torch: Any, example_inputs: Any) -> tuple[Any, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        for i, value in enumerate(example_inputs):
            if not isinstance(value, torch.Tensor):
                raise ConfigError(
                    f"example_inputs[{i}]: expected a torch.Tensor, got {type(value).__name__} "
                    "(every example input becomes a graph input)"
                )
        if not example_inputs:
            raise ConfigError("example_inputs: empty; give one tensor per input of forward()")
        return tuple(example_inputs)
    raise ConfigError(
        f"example_inputs: expected a tensor or a tuple of tensors, got {type(example_inputs).__name__}"
    )


def _flatten_outputs(torch: Any, value: Any) -> list[Any]:
    """Tensors of a forward() result in the order the exporter makes them graph outputs."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _flatten_outputs(torch, item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _flatten_outputs(torch, item)]
    if value is None:
        return []
    raise UnsupportedError(
        f"forward() returned a {type(value).__name__}; the PyTorch frontend handles tensors and "
        "tuples, lists or dicts of tensors"
    )


def _to_numpy(torch: Any, tensor: Any) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return np.asarray(tensor.numpy())


def _check_names(names: Sequence[str] | None, expected: int, what: str) -> list[str] | None:
    if names is None:
        return None
    names = list(names)
    if len(names) != expected:
        raise ConfigError(f"{what}: {len(names)} names given for {expected} {what.split('_')[0]}s: {names}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{what}: names must be unique, got {names}")
    return names


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """Keep the exporter's progress lines, warnings and internal tracebacks off the user's terminal.

    A failed export is reported as one line naming the root cause instead. torch.export also
    prints graphs straight to ``sys.stderr`` when it fails, hence the redirection (for the
    duration of the export only).
    """
    torch_loggers = [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name == "torch" or name.startswith(("torch.", "onnxscript"))
    ] + [logging.getLogger("torch"), logging.getLogger("onnxscript")]
    saved = [(lg, lg.level) for lg in torch_loggers]
    try:
        for lg, _ in saved:
            lg.setLevel(logging.CRITICAL)
        sink = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)


def _root_cause(exc: BaseException) -> str:
    """First line of the innermost exception: the exporter wraps the real reason in several layers."""
    seen: set[int] = set()
    while (exc.__cause__ or exc.__context__) is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


_NAME_SCOPES = "pkg.torch.onnx.name_scopes"
_WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _module_path(node: onnx.NodeProto) -> str:
    """Dotted path of the innermost ``nn.Module`` that emitted ``node`` ("" at the top level)."""
    import ast

    for prop in node.metadata_props:
        if prop.key == _NAME_SCOPES:
            with contextlib.suppress(ValueError, SyntaxError):
                scopes = ast.literal_eval(prop.value)
                # [..., module path, aten call name]: the last entry is the call, not a module.
                if isinstance(scopes, list) and len(scopes) >= 2:
                    path = str(scopes[-2])
                    return "" if path.startswith("_empty_nn_module_stack") else path
    return ""


def _name_after_modules(model: onnx.ModelProto) -> None:
    """Name nodes ``<module path>/<OpType>`` and drop the exporter's per-node annotations.

    Summaries and ``--exclude`` regexes speak in node and weight names: ``blocks.3.fc1/MatMul``
    and ``blocks.3.fc1.weight_t`` point at a layer of the user's module, ``node_MatMul_117`` and
    ``val_126`` do not (``_t``: a MatMul weight is stored [in, out], torch's Linear weight
    transposed). The annotations hold source paths and stack traces of the exporting machine,
    which would also make identical models differ byte for byte.
    """
    initializers = {t.name for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    taken: dict[str, int] = {}
    renamed: dict[str, str] = {}
    for node in model.graph.node:
        scope = _module_path(node)
        weight = node.input[1] if len(node.input) > 1 else ""
        if weight in initializers and weight.endswith(".weight") and node.op_type in _WEIGHTED_OPS:
            # A Conv with its BatchNorm folded in carries the BatchNorm's scope; name it after
            # the layer whose weight it holds.
            scope = weight[: -len(".weight")]
        base = f"{scope}/{node.op_type}" if scope else node.op_type
        count = taken.get(base, 0)
        taken[base] = count + 1
        node.name = base if count == 0 else f"{base}_{count}"
        wanted = f"{scope}.weight_t"
        unique = uses.get(weight) == 1 and wanted not in initializers and wanted not in renamed.values()
        if node.op_type == "MatMul" and scope and weight in initializers and unique:
            renamed[weight] = wanted
        del node.metadata_props[:]
        node.doc_string = ""
    for tensor in model.graph.initializer:
        tensor.name = renamed.get(tensor.name, tensor.name)
        del tensor.metadata_props[:]
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        del value.metadata_props[:]
    del model.graph.metadata_props[:]


def _default_domain_opset(model: onnx.ModelProto) -> int:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _run_onnx(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    from edgeq.graph.io import temporary_model_file

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if model.ByteSize() < (1 << 31) - (1 << 20):
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return list(session.run(None, feeds))
    with temporary_model_file(model) as on_disk:  # type: ignore[var-annotated]
        session = ort.InferenceSession(str(on_disk), options, providers=["CPUExecutionProvider"])
        return list(session.run(None, feeds))


def to_onnx(
    module: Any,
    example_inputs: Any,
    output_path: str | Path | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_shapes: Any = None,
    opset: int | None = None,
    check: bool = True,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> ExportResult:
    """Export ``module`` with ``torch.onnx.export`` and check the graph against the module.

    ``example_inputs`` is a tensor or a tuple of tensors, one per ``forward`` argument.
    ``dynamic_shapes`` is passed to torch as is: per input (tuple, or dict keyed by ``forward``
    argument name) a dict ``{axis: "name"}`` or ``{axis: torch.export.Dim(...)}``; axes sharing
    a name share a size. The module is exported and checked in eval mode (dropout off, batch
    norm on running statistics) and left in the mode it was in. With ``output_path`` the file is
    written atomically, and only once the check has passed.
    """
    torch = _import_torch()
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    inputs = _as_input_tuple(torch, example_inputs)
    input_names = _check_names(input_names, len(inputs), "input_names")
    target_opset = DEFAULT_OPSET if opset is None else int(opset)
    if atol < 0 or rtol < 0:
        raise ConfigError(f"atol/rtol: tolerances must be >= 0, got atol={atol}, rtol={rtol}")
    name = type(module).__name__

    was_training = module.training
    module.eval()
    try:
        # The module's own answer first: a forward() that fails on its example inputs is the
        # user's bug, and says so more clearly than the exporter would.
        try:
            with torch.no_grad():
                reference = _flatten_outputs(torch, module(*inputs))
        except EdgeqError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"{name}: forward() failed on the example inputs: {_root_cause(exc)}"
            ) from exc
        output_names = _check_names(output_names, len(reference), "output_names")
        try:
            with _quiet_torch():
                program = torch.onnx.export(
                    module,
                    inputs,
                    input_names=input_names,
                    output_names=output_names,
                    opset_version=target_opset,
                    dynamic_shapes=dynamic_shapes,
                    dynamo=True,
                    optimize=True,
                    verbose=False,
                )
        except Exception as exc:  # the exporter's many error types all mean "could not export"
            raise UnsupportedError(
                f"torch.onnx.export could not export {name}: {_root_cause(exc)} "
                "(torch.onnx.export(..., report=True) writes a full report)"
            ) from exc
    finally:
        module.train(was_training)

    model: onnx.ModelProto = program.model_proto
    _name_after_modules(model)
    got_opset = _default_domain_opset(model)
    if got_opset != target_opset:
        raise UnsupportedError(
            f"torch.onnx.export could not convert {name} to opset {target_opset} (it produced opset "
            f"{got_opset}); export at opset {DEFAULT_OPSET} or above and let later steps raise it"
        )
    graph_inputs = [i.name for i in model.graph.input]
    graph_outputs = [o.name for o in model.graph.output]
    if len(graph_inputs) != len(inputs):
        # An input forward() ignores is dropped from the graph; feeding it would fail obscurely.
        raise UnsupportedError(
            f"{name}: the exported graph has {len(graph_inputs)} inputs {graph_inputs} for "
            f"{len(inputs)} example inputs; forward() does not use all of its inputs"
        )
    if len(graph_outputs) != len(reference):
        raise UnsupportedError(
            f"{name}: the exported graph has {len(graph_outputs)} outputs for the module's {len(reference)}"
        )

    per_output: dict[str, float] = {}
    worst: float | None = None
    if check:
        feeds = {n: _to_numpy(torch, t) for n, t in zip(graph_inputs, inputs, strict=True)}
        try:
            got = _run_onnx(model, feeds)
        except Exception as exc:
            raise UnsupportedError(
                f"{name}: onnxruntime cannot run the exported graph: {_root_cause(exc)}"
            ) from exc
        failures = []
        for out_name, expected_t, actual in zip(graph_outputs, reference, got, strict=True):
            expected = _to_numpy(torch, expected_t).astype(np.float64)
            actual64 = np.asarray(actual).astype(np.float64)
            if expected.shape != actual64.shape:
                raise UnsupportedError(
                    f"{name}: exported output {out_name!r} has shape {list(actual64.shape)}, "
                    f"the module's has {list(expected.shape)}"
                )
            diff = float(np.max(np.abs(actual64 - expected))) if expected.size else 0.0
            per_output[out_name] = diff
            if not np.allclose(actual64, expected, atol=atol, rtol=rtol, equal_nan=True):
                failures.append(f"{out_name!r} max abs diff {diff:.3g}")
        worst = max(per_output.values(), default=0.0)
        if failures:
            raise UnsupportedError(
                f"{name}: the exported ONNX graph disagrees with the module on the example inputs "
                f"({'; '.join(failures)}; tolerance atol={atol:g}, rtol={rtol:g}); no file was written"
            )

    path: str | None = None
    if output_path is not None:
        from edgeq.graph.io import save_model

        path = str(save_model(model, output_path))
    else:
        onnx.checker.check_model(model, full_check=True)
    return ExportResult(
        path=path,
        opset=got_opset,
        input_names=graph_inputs,
        output_names=graph_outputs,
        max_abs_diff=worst,
        output_max_abs_diff=per_output,
        atol=float(atol),
        rtol=float(rtol),
        torch_version=str(torch.__version__),
        model=model,
    )


# ---------------------------------------------------------------------------------------------
# Checkpoints

_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _is_tensor_dict(torch: Any, value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A state dict from a ``torch.save`` file, loaded with ``weights_only=True`` and nothing else.

    A pickle can run any code when it is loaded; a checkpoint should hold tensors only, so one
    that needs more is refused with the class it wanted to build, never loaded "just this once".
    Training checkpoints that wrap the state dict (``{"state_dict": ..., "epoch": 3}``) are
    unwrapped.
    """
    torch = _import_torch()
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        message = str(exc)
        found = _UNSUPPORTED_GLOBAL.search(message)
        if found:
            raise ModelLoadError(
                f"{path}: the checkpoint contains arbitrary Python objects ({found.group(1)}); edgeq only "
                "loads tensors (torch.load weights_only=True), because unpickling anything else can run "
                "code; re-save it with torch.save(model.state_dict(), path)"
            ) from None
        if not zipfile.is_zipfile(path) or "Weights only load failed" not in message:
            raise ModelLoadError(f"{path}: not a PyTorch checkpoint ({_root_cause(exc)})") from None
        raise ModelLoadError(
            f"{path}: the checkpoint needs more than tensors to load ({_root_cause(exc)}); edgeq only "
            "loads tensors (weights_only=True); re-save it with torch.save(model.state_dict(), path)"
        ) from None
    if _is_tensor_dict(torch, obj):
        return dict(obj)
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if _is_tensor_dict(torch, obj.get(key)):
                return dict(obj[key])
    kind = f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else type(obj).__name__
    raise ModelLoadError(
        f"{path}: expected a state dict (names → tensors), found {kind}; "
        "save one with torch.save(model.state_dict(), path)"
    )


# ---------------------------------------------------------------------------------------------
# file.py:factory specs


@dataclass
class FactoryModel:
    """What a factory returned, checked: the module, its example inputs, optional dynamic shapes."""

    module: Any
    example_inputs: tuple[Any, ...]
    dynamic_shapes: Any = None


def _unpack_factory_output(torch: Any, spec: Any, value: Any) -> FactoryModel:
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
        inputs = _as_input_tuple(torch, example_inputs)
    except ConfigError as exc:
        raise ConfigError(f"{spec}: {exc}") from None
    return FactoryModel(module, inputs, value[2] if len(value) == 3 else None)


def default_cache_dir() -> Path:
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

    torch = _import_torch()
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


def export_factory(spec: str | Path, cache_dir: str | Path | None = None) -> ExportResult:
    """Build the model a ``file.py:factory`` spec names and return its (cached) checked ONNX export."""
    from edgeq.fileio import atomic_directory
    from edgeq.frontends.spec import call_factory, export_options, parse_factory_spec

    parsed = parse_factory_spec(spec)
    options = export_options(parsed)
    torch = _import_torch()
    built = _unpack_factory_output(torch, parsed, call_factory(parsed))
    key = factory_cache_key(parsed, built, options)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = root / key[:32]
    model_path, record_path = entry / "model.onnx", entry / "export.json"
    if model_path.is_file() and record_path.is_file():
        with contextlib.suppress(ConfigError):
            cached = ExportResult.load(record_path)
            if cached.cache_key == key:
                cached.path = str(model_path)
                logger.info("%s: using cached export %s", parsed, model_path)
                return cached
    try:
        with atomic_directory(entry) as tmp:
            result = to_onnx(
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
