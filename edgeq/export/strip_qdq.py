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
import onnx_ir as ir
from onnx import helper

from edgeq.errors import UnsupportedError
from edgeq.graph.passes.base import (
    GraphPass,
    constant,
    input_value,
    is_constant,
    readers,
    set_initializer,
    tidy,
    to_ir,
)

INT8_MAX = 127.0


def _scalar(value: ir.Value | None, what: str, node: str) -> float:
    array = constant(value)
    if array is None or array.size != 1:
        raise UnsupportedError(f"{node}: {what} is not a constant scalar; DLA needs per-tensor activation scales")
    return float(array.reshape(()))


def _node_name(node: ir.Node, position: int) -> str:
    """What messages call a node (as ``edgeq.graph.quantizable.node_name`` does for protobuf)."""
    return node.name or f"{node.op_type}_{position}"


def _is_default(node: ir.Node | None, op_type: str) -> bool:
    return node is not None and node.op_type == op_type and node.domain == ""


class StripQdq(GraphPass):
    """Activation Q/DQ pairs out (their scales into ``amax``), weight (Q ->) DQ chains folded to float."""

    def __init__(self) -> None:
        super().__init__()
        self.amax: dict[str, float] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        self.amax = {}
        rename: dict[ir.Value, ir.Value] = {}  # DQ output -> the value that replaces it
        drop: list[ir.Node] = []
        nodes = list(graph)

        for position, node in enumerate(nodes):
            if not _is_default(node, "QuantizeLinear"):
                continue
            name = _node_name(node, position)
            source = node.inputs[0]
            assert source is not None
            if is_constant(source):
                continue  # a fake-quantized weight: folded below with its DQ
            scale = _scalar(input_value(node, 1), "the scale", name)
            zero_point = input_value(node, 2)
            zero = _scalar(zero_point, "the zero point", name) if zero_point is not None else 0.0
            if zero != 0.0:
                raise UnsupportedError(f"{name}: zero point {zero:g}; TensorRT int8 is symmetric (zero point 0)")
            key = source.name or ""
            self.amax[key] = max(self.amax.get(key, 0.0), abs(scale) * INT8_MAX)
            drop.append(node)
            for reader in readers(node.outputs[0]):
                if reader.op_type != "DequantizeLinear":
                    raise UnsupportedError(f"{name}: its output feeds {reader.op_type}, not a DequantizeLinear")
                rename[reader.outputs[0]] = source

        weights: list[ir.Node] = []
        for node in nodes:
            if node.op_type != "DequantizeLinear":
                continue
            if node.outputs[0] in rename:
                drop.append(node)
            elif is_constant(node.inputs[0]) or _is_q(node.inputs[0].producer() if node.inputs[0] is not None else None):
                weights.append(node)

        # Weights: evaluate the (Q ->) DQ chain once; the float result replaces it.
        folded: list[tuple[ir.Value, np.ndarray]] = []
        for node in weights:
            producer = node.inputs[0].producer() if node.inputs[0] is not None else None
            chain = [producer, node] if producer is not None and producer.op_type == "QuantizeLinear" else [node]
            folded.append((node.outputs[0], _evaluate_chain(model, chain)))
            drop.append(node)
            if producer is not None and len(chain) == 2 and all(
                r.op_type == "DequantizeLinear" for r in readers(producer.outputs[0])
            ):
                drop.append(producer)

        for old in rename:
            if old.is_graph_output():
                raise UnsupportedError(f"graph output {old.name} comes straight from a DequantizeLinear; cannot strip it")
        for old, new in rename.items():
            old.replace_all_uses_with(new)
        for output, value in folded:
            name = output.name or ""
            output.name = None  # the float initializer takes the DQ output's name
            weight = set_initializer(graph, name, value.astype(np.float32))
            output.replace_all_uses_with(weight, replace_graph_outputs=True)
        graph.remove(list(dict.fromkeys(drop)), safe=True)
        tidy(model, sort=False)  # initializers only the Q/DQ read
        return ir.passes.PassResult(model, modified=bool(drop))


def _is_q(node: ir.Node | None) -> bool:
    """A QuantizeLinear of a constant: the first half of a fake-quantized weight."""
    return node is not None and node.op_type == "QuantizeLinear" and is_constant(node.inputs[0])


def strip_qdq(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, float]]:
    """A float copy of ``model`` without Q/DQ, and the amax of every activation that had a Q."""
    strip = StripQdq()
    result = strip(to_ir(model))
    out = ir.serde.serialize_model(result.model)
    del out.graph.value_info[:]  # types of tensors that changed (int8 -> float); onnx infers them again
    return out, strip.amax


def _evaluate_chain(model: ir.Model, chain: list[ir.Node]) -> np.ndarray:
    """The float weight a constant (Q ->) DQ chain yields, computed by onnxruntime's own kernels."""
    from edgeq.graph.session import run_nodes

    values = {v.name: v for n in chain for v in n.inputs if v is not None and v.name}
    inits = []
    for name, value in values.items():
        array = constant(value)
        if value.const_value is not None:
            tensor = ir.serde.serialize_tensor(value.const_value)
            tensor.name = name
            inits.append(tensor)
        elif array is not None:
            inits.append(onnx.numpy_helper.from_array(array, name))
    scale = constant(input_value(chain[-1], 1))
    out_type = helper.np_dtype_to_tensor_dtype(scale.dtype) if scale is not None else onnx.TensorProto.FLOAT
    opsets = [helper.make_opsetid(domain, version) for domain, version in model.opset_imports.items()]
    return run_nodes([ir.serde.serialize_node(n) for n in chain], opsets, model.ir_version, inits, output_type=out_type)
