"""The float model with every target weight fed as a graph input, to measure one substitution at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper

from edgeq.calibrate.collector import INTRA_OP_THREADS, expose_tensors
from edgeq.errors import UnsupportedError
from edgeq.graph.passes.base import NameMaker, constant, input_value
from edgeq.graph.passes.weight_only import WeightTarget
from edgeq.graph.session import cpu_session
from edgeq.numerics.allocation import OutputError

# Activations kept from the reference run so one-matrix measurements run only downstream nodes.
CUT_CACHE_BYTES = 512 << 20


def _session(model: onnx.ModelProto) -> Any:
    """A session on the probe (or one of its downstream parts), at the calibration thread count."""
    return cpu_session(model, purpose="the model to measure sensitivities", threads=INTRA_OP_THREADS, error=UnsupportedError)


def _downstream(graph: onnx.GraphProto, start: int) -> tuple[list[onnx.NodeProto], set[str]]:
    """Node ``start`` and the later nodes that read from it (transitively), and every tensor they produce."""
    produced = set(graph.node[start].output)
    nodes = [graph.node[start]]
    for node in list(graph.node)[start + 1 :]:
        if any(x in produced for x in node.input if x):
            produced.update(node.output)
            nodes.append(node)
    return nodes, produced


def _fed_value(name: str, dtype: np.dtype, shape: Sequence[int]) -> ir.Value:
    """A graph input of ``dtype`` and ``shape`` for a tensor the probe is fed."""
    return ir.Value(name=name, type=ir.TensorType(ir.DataType.from_numpy(np.dtype(dtype))), shape=ir.Shape(list(shape)))


def _drop_unread_initializers(graph: ir.Graph) -> None:
    """Remove initializers no node reads (the fed weights'), keeping every node where it is."""
    for name, value in list(graph.initializers.items()):
        if not value.uses() and not value.is_graph_output():
            del graph.initializers[name]


class WeightProbe:
    """The float model with every target weight fed as a graph input: one session, any substitution.

    Each target node reads its own new input, so a weight shared by two nodes is still
    substituted for one node only. ``error(overrides)`` runs the calibration batches with some
    weights replaced (``{target index: effective [rows, cols] weight}``) and returns the
    relative output error against the float reference.

    A single substituted matrix changes nothing upstream of its node, so the reference run also
    keeps every tensor that crosses into some target's downstream part, and a one-matrix
    measurement runs only the nodes downstream of it (about half the model on average for a
    stack of layers). Models with control flow, or whose cached crossings would exceed
    ``CUT_CACHE_BYTES``, run whole.

    With ``with_bias`` every MatMul/Gemm output also gets an ``Add`` of a fed vector (zeros by
    default), for the bias corrections GPTQ and AWQ return along with the weight.
    """

    def __init__(
        self, model: onnx.ModelProto, targets: Sequence[WeightTarget], batches: list[dict[str, np.ndarray]],
        mask_name: str | None, downstream_only: bool = True, with_bias: bool = False,
    ) -> None:
        # onnx-ir wraps ``model``'s tensors without copying them; the rewiring below leaves ``model``
        # as it is, and the target weights (fed instead) are not serialised into the probe.
        probe = ir.serde.deserialize_model(model)
        nodes = list(probe.graph)
        names = NameMaker(probe.graph)
        self.targets = list(targets)
        self.inputs: list[str] = []
        self.stored: list[np.ndarray] = []
        probed_nodes = []
        for target in self.targets:
            # A tied head is probed at its table: the lookup and the head's Transpose read the fed
            # weight, as both will read the one quantized copy.
            probed = target.shared_lookup or target
            node = nodes[probed.node_index]
            probed_nodes.append(node)
            position = 0 if probed.is_embedding else 1
            weight = input_value(node, position)
            if weight is None or weight.name != target.weight:
                raise ValueError(f"{probed.name}: input {position} is not the weight {target.weight}")
            value = constant(weight)
            if value is None:
                raise ValueError(f"{target.weight} is not a constant")
            fed = _fed_value(names(f"edgeq_probe_{target.weight}"), target.dtype, value.shape)
            if target.shared_lookup is not None:
                for use in list(weight.uses()):
                    use.node.replace_input_with(use.idx, fed)
            else:
                node.replace_input_with(position, fed)
            probe.graph.inputs.append(fed)
            self.inputs.append(fed.name or "")
            self.stored.append(np.ascontiguousarray(value.astype(target.dtype)))
        self.bias_inputs: dict[int, str] = {}
        if with_bias:
            self._add_bias_inputs(probe.graph, [nodes[t.node_index] for t in self.targets], names)
        position_of = {node: index for index, node in enumerate(probe.graph)}
        self.node_index = [position_of[node] for node in probed_nodes]
        _drop_unread_initializers(probe.graph)
        self.probe = ir.serde.serialize_model(probe)
        self.session = _session(self.probe)
        self.output_names = [o.name for o in self.session.get_outputs() if "float" in o.type]
        if not self.output_names:
            raise UnsupportedError("the model has no float output to measure quantization error on")
        self.batches = batches
        self.mask_name = mask_name
        self.runs = 0
        self.cuts: list[list[str] | None] = [None] * len(self.targets)
        self.cached: list[dict[str, np.ndarray]] = [{} for _ in batches]
        self._sub: tuple[int, Any, list[str]] | None = None
        self._exposed: Any = None
        crossings = self._plan_cuts() if downstream_only else []
        self.reference = [self._reference(b, crossings) for b in range(len(batches))]

    def _add_bias_inputs(self, graph: ir.Graph, nodes: list[ir.Node], names: NameMaker) -> None:
        """``output = product + bias_i`` after every MatMul/Gemm target, ``bias_i`` a graph input."""
        for i, (target, node) in enumerate(zip(self.targets, nodes, strict=True)):
            if target.is_embedding:
                continue
            product = node.outputs[0]
            product.name, bias_name = names(f"{target.output}_edgeq_product"), names(f"edgeq_probe_bias_{target.weight}")
            output = ir.Value(name=target.output, type=product.type, shape=product.shape)
            product.replace_all_uses_with(output, replace_graph_outputs=True)
            bias = _fed_value(bias_name, target.dtype, (target.rows,))
            graph.insert_after(node, ir.Node("", "Add", [product, bias], outputs=[output], name=names(f"{target.name}_edgeq_bias")))
            graph.inputs.append(bias)
            self.bias_inputs[i] = bias_name

    # -- downstream parts ---------------------------------------------------------------------

    def _plan_cuts(self) -> list[str]:
        """Per target: the activations its downstream nodes read from upstream. Returns their union."""
        graph = self.probe.graph
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
            return []
        feeds = {i.name for i in graph.input} | {t.name for t in graph.initializer}
        union: dict[str, None] = {}
        for i, start in enumerate(self.node_index):
            nodes, produced = _downstream(graph, start)
            reads = dict.fromkeys(x for node in nodes[1:] for x in node.input if x and x not in produced)
            reads.update(dict.fromkeys(x for x in graph.node[start].input if x))
            cut = [x for x in reads if x not in feeds and x not in produced]
            self.cuts[i] = cut
            union.update(dict.fromkeys(cut))
        return list(union)

    def _reference(self, b: int, crossings: list[str]) -> list[np.ndarray]:
        feeds = self._feeds(self.batches[b], {})
        if not crossings:
            return list(self.session.run(self.output_names, feeds))
        if b == 0:
            self._exposed = _session(expose_tensors(self.probe, crossings))
        values = self._exposed.run([*self.output_names, *crossings], feeds)
        cached = dict(zip(crossings, values[len(self.output_names) :], strict=True))
        size = sum(v.nbytes for v in cached.values())
        if b == 0 and size * len(self.batches) > CUT_CACHE_BYTES:
            self.cuts = [None] * len(self.targets)  # too much to keep: run whole models instead
            crossings.clear()
            self._exposed = None
        else:
            self.cached[b] = cached
        if b == len(self.batches) - 1:
            self._exposed = None
        return list(values[: len(self.output_names)])

    def _sub_session(self, i: int) -> tuple[Any, list[str]] | None:
        """The session of target ``i``'s downstream nodes (built once, kept for its candidates)."""
        cut = self.cuts[i]
        if cut is None:
            return None
        if self._sub is not None and self._sub[0] == i:
            return self._sub[1], self._sub[2]
        graph = self.probe.graph
        nodes, produced = _downstream(graph, self.node_index[i])
        outputs = [o for o in graph.output if o.name in produced and o.name in self.output_names]
        if not outputs:
            return None
        read = {x for n in nodes for x in n.input if x}
        sample = self.cached[0]
        inputs = [v for v in graph.input if v.name in read]
        inputs += [helper.make_tensor_value_info(x, helper.np_dtype_to_tensor_dtype(sample[x].dtype), None) for x in cut]
        sub = helper.make_graph(nodes, "downstream", inputs, outputs, [t for t in graph.initializer if t.name in read])
        model = helper.make_model(
            sub, opset_imports=list(self.probe.opset_import), ir_version=self.probe.ir_version, functions=list(self.probe.functions)
        )
        session = _session(model)
        fetched = [o.name for o in outputs]
        self._sub = (i, session, fetched)
        return session, fetched

    # -- runs ------------------------------------------------------------------------------------

    def stored_layout(self, i: int, effective: np.ndarray) -> np.ndarray:
        """An effective ``[rows, cols]`` weight back in the stored layout and dtype of target ``i``."""
        target = self.targets[i]
        w = np.asarray(effective, np.float64)
        if target.alpha != 1.0:
            w = w / target.alpha
        if target.transpose:
            w = w.T
        return np.ascontiguousarray(w.reshape(self.stored[i].shape).astype(target.dtype))

    def _feeds(
        self, feeds: dict[str, np.ndarray], overrides: dict[int, np.ndarray], biases: dict[int, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        full = dict(feeds)
        for i, name in enumerate(self.inputs):
            full[name] = overrides.get(i, self.stored[i])
        for i, name in self.bias_inputs.items():
            bias = (biases or {}).get(i)
            dtype = self.targets[i].dtype
            full[name] = np.zeros(self.targets[i].rows, dtype) if bias is None else np.asarray(bias).astype(dtype)
        return full

    def error(
        self, overrides: dict[int, np.ndarray], biases: dict[int, np.ndarray] | None = None, downstream_only: bool = True
    ) -> float:
        """Output error with ``overrides`` (effective ``[rows, cols]`` weights) and their bias corrections."""
        if biases and any(i not in self.bias_inputs for i in biases):
            raise ValueError("bias corrections need a probe built with_bias, for MatMul/Gemm targets")
        stored = {i: self.stored_layout(i, w) for i, w in overrides.items()}
        sub = self._sub_session(next(iter(stored))) if downstream_only and len(stored) == 1 else None
        accumulator = OutputError(len(self.output_names))
        for b, (feeds, reference) in enumerate(zip(self.batches, self.reference, strict=True)):
            full = self._feeds(feeds, stored, biases)
            if sub is None:
                outputs = list(self.session.run(self.output_names, full))
            else:
                session, fetched = sub
                wanted = {i.name for i in session.get_inputs()}
                values = {k: v for k, v in {**full, **self.cached[b]}.items() if k in wanted}
                got = dict(zip(fetched, session.run(fetched, values), strict=True))
                outputs = [got.get(name, ref) for name, ref in zip(self.output_names, reference, strict=True)]
            mask = feeds.get(self.mask_name) if self.mask_name else None
            accumulator.update(reference, outputs, mask)
        self.runs += 1
        return accumulator.value()

    def model_error(self, model: onnx.ModelProto) -> float:
        """The same error for a whole (quantized) model fed the same batches."""
        session = _session(model)
        accumulator = OutputError(len(self.output_names))
        for feeds, reference in zip(self.batches, self.reference, strict=True):
            outputs = session.run(self.output_names, feeds)
            mask = feeds.get(self.mask_name) if self.mask_name else None
            accumulator.update(reference, outputs, mask)
        return accumulator.value()
