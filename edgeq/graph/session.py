"""The one way the toolkit opens an onnxruntime CPU session on a model in memory.

Protobuf cannot serialise a message past 2 GiB, so a model above ``EXTERNAL_DATA_THRESHOLD``
goes through a temporary file with external data; every caller gets that for free, and every
failure to load becomes one ``EdgeqError`` line naming what the session was for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from edgeq.errors import ConfigError, EdgeqError
from edgeq.graph.io import EXTERNAL_DATA_THRESHOLD, temporary_model_file

CPU = ["CPUExecutionProvider"]


def onnxruntime_message(exc: BaseException) -> str:
    """onnxruntime's error text on one line (its own exception types carry multi-line dumps)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# onnxruntime keeps a DequantizeLinear whose input is a constant unfolded by default (to fuse it
# with a QuantizeLinear into an int8 kernel), so a weight-only DequantizeLinear graph (LSTM/Conv
# weights, --format qdq) dequantizes its weights on every run: 4-5x float's latency on silero-vad
# (benchmarks/recurrent.py). With no QuantizeLinear in the graph there is nothing to fuse, and
# this entry lets onnxruntime fold the weights once at load: float's speed, the file's size.
WEIGHT_ONLY_DQ_CONFIG = {"session.disable_quant_qdq": "1"}


def session_config(model: onnx.ModelProto) -> dict[str, str]:
    """The onnxruntime session config entries ``model`` runs best with (see WEIGHT_ONLY_DQ_CONFIG)."""
    from edgeq.graph.check import all_nodes

    ops = {n.op_type for n in all_nodes(model.graph)}
    if "DequantizeLinear" in ops and "QuantizeLinear" not in ops and "DynamicQuantizeLinear" not in ops:
        return dict(WEIGHT_ONLY_DQ_CONFIG)
    return {}


def cpu_session(
    model: onnx.ModelProto | str | Path,
    *,
    purpose: str = "the model",
    threads: int | None = None,
    optimize: bool = True,
    spin: bool = True,
    arena: bool = True,
    error: type[EdgeqError] = ConfigError,
    config: Mapping[str, str] | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU provider, quiet (log severity 3).

    ``optimize=False`` runs every node as written (no fusions), which is what calibration and
    accuracy comparisons need; ``spin=False`` stops idle pool threads from burning the cores
    Python-side work between runs needs; ``config`` adds session config entries (e.g.
    :func:`session_config`). A model that onnxruntime cannot load raises ``error`` with
    "onnxruntime cannot load {purpose}: ..." on one line.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not arena:
        options.enable_cpu_mem_arena = False
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    options.log_severity_level = 4  # errors arrive as exceptions, said once
    try:
        if not isinstance(model, onnx.ModelProto):
            return ort.InferenceSession(str(model), options, providers=CPU)
        if model.ByteSize() < EXTERNAL_DATA_THRESHOLD:
            return ort.InferenceSession(model.SerializeToString(), options, providers=CPU)
        with temporary_model_file(model) as path:
            return ort.InferenceSession(str(path), options, providers=CPU)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise error(f"onnxruntime cannot load {purpose}: {onnxruntime_message(exc)}") from None


def run_nodes(
    nodes: Sequence[onnx.NodeProto],
    opset_imports: Iterable[onnx.OperatorSetIdProto],
    ir_version: int,
    initializers: Sequence[onnx.TensorProto] = (),
    feeds: Mapping[str, np.ndarray] | None = None,
    output_type: int = onnx.TensorProto.FLOAT,
) -> np.ndarray:
    """Run a few nodes alone in onnxruntime and return the last node's first output.

    Folding a constant chain or checking one kernel's arithmetic must use the kernel the
    quantized model is verified with, not a numpy re-implementation of it.
    """
    feeds = dict(feeds or {})
    inputs = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
              for k, v in feeds.items()]
    output = helper.make_tensor_value_info(nodes[-1].output[0], output_type, None)
    graph = helper.make_graph(list(nodes), "run_nodes", inputs, [output], list(initializers))
    tiny = helper.make_model(graph, opset_imports=list(opset_imports), ir_version=ir_version)
    session = cpu_session(tiny, purpose=f"the {nodes[-1].op_type} node alone")
    return np.asarray(session.run(None, feeds)[0])
