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
import onnx_ir as ir

from edgeq.graph.passes.base import (
    GraphPass,
    NameMaker,
    constant,
    input_value,
    nodes_by_name,
    set_initializer,
    single_reader,
    tidy,
    to_ir,
)

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


def _clip_bounds(node: ir.Node) -> tuple[float | None, float | None] | None:
    """(min, max) of a Clip, None if either bound is not a constant."""
    if len(node.inputs) > 1:
        lo_value, hi_value = input_value(node, 1), input_value(node, 2)
        lo, hi = constant(lo_value), constant(hi_value)
        if (lo_value is not None and lo is None) or (hi_value is not None and hi is None):
            return None
        return (None if lo is None else float(lo), None if hi is None else float(hi))
    lo_attr = node.attributes.get_float("min")
    hi_attr = node.attributes.get_float("max")
    return (
        None if lo_attr is None else float(lo_attr),
        None if hi_attr is None else float(hi_attr),
    )


def _is_plain_conv(node: ir.Node) -> bool:
    bias = input_value(node, 2)
    return (
        node.op_type == "Conv"
        and constant(input_value(node, 1)) is not None
        and (bias is None or constant(bias) is not None)
    )


def find_equalization_pairs(model: onnx.ModelProto | ir.Model) -> list[EqualizationPair]:
    """Every Conv -> [Relu | Clip(0, c)] -> Conv chain whose channels can be rescaled."""
    pairs: list[EqualizationPair] = []
    for node in to_ir(model).graph:
        if not _is_plain_conv(node):
            continue
        w1 = constant(node.inputs[1])
        assert w1 is not None
        group1 = node.attributes.get_int("group", 1)
        if group1 != 1 and not (group1 == w1.shape[0] and w1.shape[1] == 1):
            continue  # grouped (not depthwise): channel i of the output mixes a group of inputs
        tensor = node.outputs[0]
        activation = None
        clip = None
        reader = single_reader(tensor)
        if reader is not None and reader.op_type in _ACTIVATIONS:
            if reader.op_type == "Clip":
                bounds = _clip_bounds(reader)
                if bounds is None or bounds[0] is None or bounds[0] != 0.0 or bounds[1] is None:
                    continue
                clip = bounds[1]
            activation = reader.name
            tensor = reader.outputs[0]
            reader = single_reader(tensor)
        if reader is None or not _is_plain_conv(reader) or reader.inputs[0] is not tensor:
            continue
        w2 = constant(reader.inputs[1])
        assert w2 is not None
        group2 = reader.attributes.get_int("group", 1)
        channels = w1.shape[0]
        if group2 == 1 and w2.shape[1] == channels:
            depthwise = False
        elif group2 == channels and w2.shape[0] == channels and w2.shape[1] == 1:
            depthwise = True
        else:
            continue
        pairs.append(EqualizationPair(node.name or "", reader.name or "", activation, tensor.name or "", channels, clip, depthwise))
    return pairs


def pair_weight_ranges(model: onnx.ModelProto | ir.Model, pair: EqualizationPair) -> tuple[np.ndarray, np.ndarray]:
    """(producer output-channel absmax, consumer input-channel absmax) for data-free CLE."""
    nodes = nodes_by_name(to_ir(model).graph)
    w1 = constant(nodes[pair.producer].inputs[1])
    w2 = constant(nodes[pair.consumer].inputs[1])
    assert w1 is not None and w2 is not None
    r1 = np.abs(w1.reshape(w1.shape[0], -1)).max(axis=1)
    if pair.consumer_depthwise:
        r2 = np.abs(w2.reshape(w2.shape[0], -1)).max(axis=1)
    else:
        r2 = np.abs(np.moveaxis(w2, 1, 0).reshape(w2.shape[1], -1)).max(axis=1)
    return r1, r2


class CrossLayerEqualization(GraphPass):
    """Apply ``scales[(producer, consumer)]`` (factors ``t``, one per channel) to each pair."""

    def __init__(self, pairs: list[EqualizationPair], scales: dict[tuple[str, str], np.ndarray]) -> None:
        super().__init__()
        self.pairs = pairs
        self.scales = scales
        self.applied: list[EqualizationPair] = []

    @staticmethod
    def _rename_scaled(names: NameMaker, nodes: dict[str, ir.Node], producer: ir.Node, pair: EqualizationPair) -> None:
        """Tensors between the pair now hold rescaled values: new names, so comparisons by name
        with the float model do not pair them."""
        scaled = [producer] if pair.activation is None else [producer, nodes[pair.activation]]
        for node in scaled:
            value = node.outputs[0]
            if not (value.name or "").endswith("_equalized"):
                value.name = names(f"{value.name}_equalized")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        names = NameMaker(graph)
        nodes = nodes_by_name(graph)
        modified = False
        for pair in self.pairs:
            t = self.scales.get((pair.producer, pair.consumer))
            if t is None or np.allclose(t, 1.0):
                continue
            producer, consumer = nodes[pair.producer], nodes[pair.consumer]
            t64 = np.asarray(t, np.float64)
            w1 = constant(producer.inputs[1])
            w2 = constant(consumer.inputs[1])
            assert w1 is not None and w2 is not None
            new_w1 = (w1.astype(np.float64) * t64.reshape(-1, *[1] * (w1.ndim - 1))).astype(w1.dtype)
            if pair.consumer_depthwise:
                new_w2 = (w2.astype(np.float64) / t64.reshape(-1, *[1] * (w2.ndim - 1))).astype(w2.dtype)
            else:
                new_w2 = (w2.astype(np.float64) / t64.reshape(1, -1, *[1] * (w2.ndim - 2))).astype(w2.dtype)
            w1_name = names(f"{producer.name}.weight_equalized")
            w2_name = names(f"{consumer.name}.weight_equalized")
            producer.replace_input_with(1, set_initializer(graph, w1_name, new_w1))
            consumer.replace_input_with(1, set_initializer(graph, w2_name, new_w2))
            bias = input_value(producer, 2)
            if bias is not None:
                b1 = constant(bias)
                assert b1 is not None
                b1_name = names(f"{producer.name}.bias_equalized")
                producer.replace_input_with(2, set_initializer(graph, b1_name, (b1.astype(np.float64) * t64).astype(b1.dtype)))
            self._rename_scaled(names, nodes, producer, pair)
            self.applied.append(pair)
            modified = True
        if modified:
            tidy(model, sort=False)
        return ir.passes.PassResult(model, modified)
