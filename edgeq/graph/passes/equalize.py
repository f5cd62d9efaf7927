"""Cross-layer equalization: rescale channels between two convolutions, function unchanged.

The pass finds ``Conv -> [Relu | Clip(0, c)] -> Conv`` chains whose middle tensors have no
other reader and applies per-channel factors chosen elsewhere
(``edgeq.numerics.int8.equalize``): the first conv's output channel ``i`` (weights and bias)
is multiplied by ``t_i`` and the second conv's input channel ``i`` divided by it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from edgeq.graph.passes.base import GraphIndex, NameMaker, Pass, PassResult, get_attribute, set_initializer

# Activations that commute with a positive per-channel scale (Clip only with min 0 and with
# the scale capped at its clip point, see int8_equalize).
_ACTIVATIONS = ("Relu", "Clip")


@dataclass(frozen=True)
class EqualizationPair:
    """Two convs whose shared channels can be rescaled; ``tensor`` is the second conv's input."""

    producer: str
    consumer: str
    activation: str | None  # node name of the Relu/Clip in between, if any
    tensor: str
    channels: int
    clip: float | None  # upper bound of Clip, None for Relu / no activation
    consumer_depthwise: bool


def _clip_bounds(index: GraphIndex, node: onnx.NodeProto) -> tuple[float | None, float | None] | None:
    """(min, max) of a Clip, None if either bound is not a constant."""
    if len(node.input) > 1:
        lo = index.constant(node.input[1]) if node.input[1] else None
        hi = index.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if (node.input[1] and lo is None) or (len(node.input) > 2 and node.input[2] and hi is None):
            return None
        return (None if lo is None else float(lo), None if hi is None else float(hi))
    lo_attr = get_attribute(node, "min")
    hi_attr = get_attribute(node, "max")
    return (
        None if lo_attr is None else float(lo_attr),
        None if hi_attr is None else float(hi_attr),
    )


def _is_plain_conv(index: GraphIndex, node: onnx.NodeProto) -> bool:
    return (
        node.op_type == "Conv"
        and len(node.input) >= 2
        and index.constant(node.input[1]) is not None
        and (len(node.input) < 3 or not node.input[2] or index.constant(node.input[2]) is not None)
    )


def find_equalization_pairs(model: onnx.ModelProto) -> list[EqualizationPair]:
    """Every Conv -> [Relu | Clip(0, c)] -> Conv chain whose channels can be rescaled."""
    graph = model.graph
    index = GraphIndex(graph)
    pairs: list[EqualizationPair] = []
    for node in graph.node:
        if not _is_plain_conv(index, node):
            continue
        w1 = index.constant(node.input[1])
        assert w1 is not None
        group1 = int(get_attribute(node, "group", 1))
        if group1 != 1 and not (group1 == w1.shape[0] and w1.shape[1] == 1):
            continue  # grouped (not depthwise): channel i of the output mixes a group of inputs
        tensor = node.output[0]
        activation = None
        clip = None
        reader = index.single_reader(tensor)
        if reader is not None and reader.op_type in _ACTIVATIONS:
            if reader.op_type == "Clip":
                bounds = _clip_bounds(index, reader)
                if bounds is None or bounds[0] is None or bounds[0] != 0.0 or bounds[1] is None:
                    continue
                clip = bounds[1]
            activation = reader.name
            tensor = reader.output[0]
            reader = index.single_reader(tensor)
        if reader is None or not _is_plain_conv(index, reader) or reader.input[0] != tensor:
            continue
        w2 = index.constant(reader.input[1])
        assert w2 is not None
        group2 = int(get_attribute(reader, "group", 1))
        channels = w1.shape[0]
        if group2 == 1 and w2.shape[1] == channels:
            depthwise = False
        elif group2 == channels and w2.shape[0] == channels and w2.shape[1] == 1:
            depthwise = True
        else:
            continue
        pairs.append(EqualizationPair(node.name, reader.name, activation, tensor, channels, clip, depthwise))
    return pairs


def pair_weight_ranges(model: onnx.ModelProto, pair: EqualizationPair) -> tuple[np.ndarray, np.ndarray]:
    """(producer output-channel absmax, consumer input-channel absmax) for data-free CLE."""
    index = GraphIndex(model.graph)
    nodes = {n.name: n for n in model.graph.node}
    w1 = index.constant(nodes[pair.producer].input[1])
    w2 = index.constant(nodes[pair.consumer].input[1])
    assert w1 is not None and w2 is not None
    r1 = np.abs(w1.reshape(w1.shape[0], -1)).max(axis=1)
    if pair.consumer_depthwise:
        r2 = np.abs(w2.reshape(w2.shape[0], -1)).max(axis=1)
    else:
        r2 = np.abs(np.moveaxis(w2, 1, 0).reshape(w2.shape[1], -1)).max(axis=1)
    return r1, r2


def _rename_output(graph: onnx.GraphProto, node: onnx.NodeProto, new: str) -> None:
    old = node.output[0]
    node.output[0] = new
    for reader in graph.node:
        for slot, name in enumerate(reader.input):
            if name == old:
                reader.input[slot] = new


class CrossLayerEqualization(Pass):
    """Apply ``scales[(producer, consumer)]`` (factors ``t``, one per channel) to each pair."""

    def __init__(self, pairs: list[EqualizationPair], scales: dict[tuple[str, str], np.ndarray]) -> None:
        self.pairs = pairs
        self.scales = scales
        self.applied: list[EqualizationPair] = []

    @staticmethod
    def _rename_scaled(graph: onnx.GraphProto, names: NameMaker, producer: onnx.NodeProto, pair: EqualizationPair) -> None:
        """Tensors between the pair now hold rescaled values: new names, so comparisons by name
        with the float model do not pair them."""
        if not producer.output[0].endswith("_equalized"):
            _rename_output(graph, producer, names(f"{producer.output[0]}_equalized"))
        if pair.activation is not None:
            act = next(n for n in graph.node if n.name == pair.activation)
            if not act.output[0].endswith("_equalized"):
                _rename_output(graph, act, names(f"{act.output[0]}_equalized"))

    def call(self, model: onnx.ModelProto) -> PassResult:
        graph = model.graph
        names = NameMaker(graph)
        modified = False
        for pair in self.pairs:
            t = self.scales.get((pair.producer, pair.consumer))
            if t is None or np.allclose(t, 1.0):
                continue
            index = GraphIndex(graph)  # earlier pairs may have renamed weights
            nodes = {n.name: n for n in graph.node}
            producer, consumer = nodes[pair.producer], nodes[pair.consumer]
            t64 = np.asarray(t, np.float64)
            w1 = index.constant(producer.input[1])
            w2 = index.constant(consumer.input[1])
            assert w1 is not None and w2 is not None
            new_w1 = (w1.astype(np.float64) * t64.reshape(-1, *[1] * (w1.ndim - 1))).astype(w1.dtype)
            if pair.consumer_depthwise:
                new_w2 = (w2.astype(np.float64) / t64.reshape(-1, *[1] * (w2.ndim - 1))).astype(w2.dtype)
            else:
                new_w2 = (w2.astype(np.float64) / t64.reshape(1, -1, *[1] * (w2.ndim - 2))).astype(w2.dtype)
            w1_name = names(f"{producer.name}.weight_equalized")
            w2_name = names(f"{consumer.name}.weight_equalized")
            set_initializer(graph, w1_name, new_w1)
            set_initializer(graph, w2_name, new_w2)
            producer.input[1] = w1_name
            consumer.input[1] = w2_name
            if len(producer.input) > 2 and producer.input[2]:
                b1 = index.constant(producer.input[2])
                assert b1 is not None
                b1_name = names(f"{producer.name}.bias_equalized")
                set_initializer(graph, b1_name, (b1.astype(np.float64) * t64).astype(b1.dtype))
                producer.input[2] = b1_name
            self._rename_scaled(graph, names, producer, pair)
            self.applied.append(pair)
            modified = True
        if modified:
            from edgeq.graph.passes.base import remove_unused_initializers

            remove_unused_initializers(graph)
        return PassResult(model, modified)
