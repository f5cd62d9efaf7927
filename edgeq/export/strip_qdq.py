"""Q/DQ graph -> float graph + per-tensor scales: what DLA (implicit int8 only) needs.

DLA takes no Q/DQ layers: TensorRT builds an int8 DLA engine from a float network and a
calibration cache holding each tensor's scale. A Q/DQ model therefore goes to DLA by taking
its Q/DQ pairs out: an activation pair ``x -> Q -> DQ -> y`` becomes ``x`` with amax
``scale * 127`` recorded for ``x``; a weight DQ becomes the float weight it dequantizes to
(TensorRT re-quantizes weights per channel itself). The scales go to ``calibration.cache``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgeq.errors import UnsupportedError
from edgeq.graph.proto import GraphIndex, replace_nodes
from edgeq.graph.quantizable import node_name

INT8_MAX = 127.0


def _scalar(index: GraphIndex, name: str, what: str, node: str) -> float:
    value = index.constant(name)
    if value is None or value.size != 1:
        raise UnsupportedError(f"{node}: {what} is not a constant scalar; DLA needs per-tensor activation scales")
    return float(value.reshape(()))


def strip_qdq(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, float]]:
    """A float copy of ``model`` without Q/DQ, and the amax of every activation that had a Q."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    index = GraphIndex(graph)
    amax: dict[str, float] = {}
    rename: dict[str, str] = {}  # DQ output -> tensor that replaces it
    drop: set[int] = set()
    weights: list[tuple[int, onnx.NodeProto]] = []

    for position, node in enumerate(graph.node):
        if node.op_type != "QuantizeLinear" or node.domain not in ("", "ai.onnx"):
            continue
        name = node_name(node, position)
        source = node.input[0]
        if index.is_constant(source):
            continue  # a fake-quantized weight: folded below with its DQ
        scale = _scalar(index, node.input[1], "the scale", name)
        zero = _scalar(index, node.input[2], "the zero point", name) if len(node.input) > 2 and node.input[2] else 0.0
        if zero != 0.0:
            raise UnsupportedError(f"{name}: zero point {zero:g}; TensorRT int8 is symmetric (zero point 0)")
        amax[source] = max(amax.get(source, 0.0), abs(scale) * INT8_MAX)
        drop.add(position)
        for reader in index.readers(node.output[0]):
            if reader.op_type != "DequantizeLinear":
                raise UnsupportedError(f"{name}: its output feeds {reader.op_type}, not a DequantizeLinear")
            rename[reader.output[0]] = source

    positions = {id(n): i for i, n in enumerate(graph.node)}
    for position, node in enumerate(graph.node):
        if node.op_type != "DequantizeLinear":
            continue
        if node.output[0] in rename:
            drop.add(position)
        elif index.is_constant(node.input[0]) or (
            node.input[0] in index.producer and index.producer[node.input[0]].op_type == "QuantizeLinear"
            and index.is_constant(index.producer[node.input[0]].input[0])
        ):
            weights.append((position, node))

    # Weights: evaluate the (Q ->) DQ chain once; the float result replaces it.
    for position, node in weights:
        producer = index.producer.get(node.input[0])
        chain = [producer, node] if producer is not None and producer.op_type == "QuantizeLinear" else [node]
        value = _evaluate_chain(out, chain, index)
        tensor = numpy_helper.from_array(value.astype(np.float32), node.output[0])
        graph.initializer.append(tensor)
        drop.add(position)
        if len(chain) == 2:
            q_position = positions.get(id(chain[0]))
            if q_position is None:
                q_position = next(i for i, n in enumerate(graph.node) if n.output[0] == chain[0].output[0])
            if all(r.op_type == "DequantizeLinear" for r in index.readers(chain[0].output[0])):
                drop.add(q_position)

    kept = [n for i, n in enumerate(graph.node) if i not in drop]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    outputs = {o.name for o in graph.output}
    for name in set(rename) & outputs:
        raise UnsupportedError(f"graph output {name} comes straight from a DequantizeLinear; cannot strip it")
    replace_nodes(graph, kept)
    used = {i for n in graph.node for i in n.input} | outputs
    inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.value_info[:]
    return out, amax


def _evaluate_chain(model: onnx.ModelProto, chain: list[onnx.NodeProto], index: GraphIndex) -> np.ndarray:
    """The float weight a constant (Q ->) DQ chain yields, computed by onnxruntime's own kernels."""
    from onnx import helper

    from edgeq.graph.session import run_nodes

    names = {i for n in chain for i in n.input if i}
    inits = []
    for name in names:
        if name in index.initializers:
            inits.append(index.initializers[name])
        else:
            value = index.constant(name)
            if value is not None:
                inits.append(numpy_helper.from_array(value, name))
    scale = index.constant(chain[-1].input[1])
    out_type = helper.np_dtype_to_tensor_dtype(scale.dtype) if scale is not None else onnx.TensorProto.FLOAT
    return run_nodes(chain, model.opset_import, model.ir_version, inits, output_type=out_type)
