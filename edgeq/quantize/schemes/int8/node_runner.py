"""One compute node at a time in onnxruntime, so the sequential search simulates exactly the
arithmetic of the final Q/DQ graph (the kernels onnxruntime will run), not a numpy imitation.

Each node gets its own small session, cached while its layer is being tuned. The weight of a
compute node can be fed as an input instead of an initializer, so one session scores every
candidate weight grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir
from onnx import helper, numpy_helper

from edgeq.graph.passes.base import constant
from edgeq.graph.session import cpu_session


class NodeRunner:
    """Runs single nodes of a model in onnxruntime; the weight of a compute node is an input."""

    def __init__(self, model: ir.Model, threads: int) -> None:
        self.threads = threads
        self.opset_imports = [helper.make_opsetid(domain, version) for domain, version in model.opset_imports.items()]
        self.ir_version = model.ir_version
        self.sessions: dict[tuple[str, bool], Any] = {}

    def _session(self, node: ir.Node, weight_as_input: bool, feeds: dict[str, np.ndarray]) -> Any:
        key = (node.name or "", weight_as_input)
        if key in self.sessions:
            return self.sessions[key]
        inputs, inits = [], []
        seen: set[str] = set()
        for position, value in enumerate(node.inputs):
            if value is None or not value.name or value.name in seen:
                continue
            name = value.name
            seen.add(name)
            array = constant(value) if not (weight_as_input and position == 1) else None
            if array is not None:
                inits.append(numpy_helper.from_array(array, name))
            else:
                dtype = helper.np_dtype_to_tensor_dtype(feeds[name].dtype)
                inputs.append(helper.make_tensor_value_info(name, dtype, None))
        proto = ir.serde.serialize_node(node)
        outputs = [helper.make_empty_tensor_value_info(o) for o in proto.output if o]
        graph = helper.make_graph([proto], f"node_{node.name}", inputs, outputs, inits)
        model = helper.make_model(graph, opset_imports=self.opset_imports)
        model.ir_version = self.ir_version
        # Hundreds of one-node sessions: an arena per session would keep each one's peak forever.
        session = cpu_session(model, purpose=f"node {node.name!r} alone", threads=self.threads, arena=False)
        self.sessions[key] = session
        return session

    def forget(self, node: ir.Node) -> None:
        """Drop the node's sessions once its layer is done (each holds its weights)."""
        self.sessions.pop((node.name or "", False), None)
        self.sessions.pop((node.name or "", True), None)

    def run(self, node: ir.Node, feeds: dict[str, np.ndarray], weight_as_input: bool = False) -> list[np.ndarray]:
        session = self._session(node, weight_as_input, feeds)
        wanted = {i.name for i in session.get_inputs()}
        return list(session.run(None, {k: v for k, v in feeds.items() if k in wanted}))
