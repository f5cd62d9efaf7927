"""PyTorch module → ONNX, checked against the module before anything downstream sees it.

Most users hold an ``nn.Module``, not an ONNX file. ``to_onnx`` turns one into the ONNX graph
the rest of edgeq works on, with ``torch.onnx.export`` (the ``torch.export``-based exporter, torch
2.13's default and recommended one), and then runs the exported graph in onnxruntime on the
example inputs and compares it with the module's own outputs: a graph that quietly computes
something else would poison calibration, quantization and every accuracy number after it.

The exporter's optimizer runs (BatchNorm folded into the Conv before it, Linear weights stored
transposed as initializers), and nodes are then named after the module that emitted them
(``edgeq.frontends.module_names``), so the quantization summary and ``--exclude`` speak in the
user's layer names. torch is imported only inside the functions.

Opset: the default is 18, the opset torch 2.13's exporter builds natively. Asking it for a lower
one goes through a version converter that cannot rewrite common graphs (ReduceMean moved its axes
from an attribute to an input in opset 18), so a request it could not honour is refused rather
than returned at another opset. Later steps raise the opset themselves when a format needs it
(blocked int4 DequantizeLinear needs 21), so exporting at the lowest opset that works and letting
the quantizer bump it keeps the float model loadable by the oldest TensorRT that can run it. A
board whose TensorRT reads only up to opset 17 (JetPack 5, TensorRT 8.5) needs the graph lowered
at export for that board.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeq.errors import ConfigError, EdgeqError, UnsupportedError
from edgeq.frontends.module_names import name_after_modules
from edgeq.frontends.torch_support import import_torch, root_cause
from edgeq.graph.session import cpu_session
from edgeq.serialization import Serializable

#: The opset torch 2.13's exporter emits without a version conversion.
DEFAULT_OPSET = 18
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3


@dataclass
class TorchExportResult(Serializable):
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


def as_input_tuple(torch: Any, example_inputs: Any) -> tuple[Any, ...]:
    """``example_inputs`` as the tuple ``forward`` is called with: one tensor per graph input."""
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



def _default_domain_opset(model: onnx.ModelProto) -> int:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)



def _run_onnx(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = cpu_session(model, purpose="the exported graph", error=UnsupportedError)
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
) -> TorchExportResult:
    """Export ``module`` with ``torch.onnx.export`` and check the graph against the module.

    ``example_inputs`` is a tensor or a tuple of tensors, one per ``forward`` argument.
    ``dynamic_shapes`` is passed to torch as is: per input (tuple, or dict keyed by ``forward``
    argument name) a dict ``{axis: "name"}`` or ``{axis: torch.export.Dim(...)}``; axes sharing
    a name share a size. The module is exported and checked in eval mode (dropout off, batch
    norm on running statistics) and left in the mode it was in. With ``output_path`` the file is
    written atomically, and only once the check has passed.
    """
    torch = import_torch()
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    inputs = as_input_tuple(torch, example_inputs)
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
                f"{name}: forward() failed on the example inputs: {root_cause(exc)}"
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
                f"torch.onnx.export could not export {name}: {root_cause(exc)} "
                "(torch.onnx.export(..., report=True) writes a full report)"
            ) from exc
    finally:
        module.train(was_training)

    model: onnx.ModelProto = program.model_proto
    name_after_modules(model)
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
                f"{name}: onnxruntime cannot run the exported graph: {root_cause(exc)}"
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
    return TorchExportResult(
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
