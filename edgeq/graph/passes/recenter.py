"""Re-center bounded activations so a symmetric int8 grid uses both halves.

TensorRT's int8 is symmetric (zero point 0), so a ReLU6 output in [0, 6] uses only codes
0..127: one bit of the eight is lost on exactly the tensors that hurt depthwise-separable
networks most. Shifting the activation by the middle of its range, ``x' = x - c`` with
``c = hi / 2``, puts it in ``[-c, c]`` and halves the step size. The shift is exact: the
producer's bias absorbs ``-c`` (``relu6(z) - c == clip(z - c, -c, 6 - c)``) and each consumer
adds back ``W @ c`` to its bias. A consumer that zero-pads its input would pad with the wrong
value, so its padding moves into an explicit ``Pad`` with value ``-c`` in front of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from edgeq.graph.passes.base import (
    GraphIndex,
    NameMaker,
    Pass,
    PassResult,
    get_attribute,
    remove_unused_initializers,
    set_initializer,
    shift_bias,
    topological_sort,
)

_SHAPE_OPS = ("Flatten", "Reshape", "Squeeze", "Unsqueeze")


@dataclass(frozen=True)
class RecenterSite:
    producer: str  # Conv whose bias absorbs -c
    clip: str  # the Clip(0, hi) node
    center: float
    consumers: tuple[str, ...]  # Conv / Gemm nodes whose bias gets W @ c
    means: tuple[str, ...]  # ReduceMean / GlobalAveragePool nodes between the clip and a consumer


def centered_amax(center: float) -> float:
    """The int8 range for a tensor re-centered into [-c, c]: -c lands exactly on code -128."""
    return center * 127.0 / 128.0


def _clip_range(index: GraphIndex, node: onnx.NodeProto) -> tuple[float, float] | None:
    if len(node.input) < 3 or not node.input[1] or not node.input[2]:
        return None
    lo, hi = index.constant(node.input[1]), index.constant(node.input[2])
    if lo is None or hi is None or lo.size != 1 or hi.size != 1:
        return None
    return float(lo), float(hi)


def _conv_ok(index: GraphIndex, node: onnx.NodeProto, tensor: str) -> bool:
    if node.op_type != "Conv" or node.input[0] != tensor or index.constant(node.input[1]) is None:
        return False
    if len(node.input) > 2 and node.input[2] and index.constant(node.input[2]) is None:
        return False
    auto_pad = get_attribute(node, "auto_pad", b"NOTSET")
    return (auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)) == "NOTSET"


def _is_spatial_mean(node: onnx.NodeProto, index: GraphIndex) -> bool:
    if node.op_type == "GlobalAveragePool":
        return True
    if node.op_type != "ReduceMean":
        return False
    axes = index.constant(node.input[1]) if len(node.input) > 1 and node.input[1] else get_attribute(node, "axes")
    return axes is not None and sorted(int(a) for a in np.ravel(axes)) in ([2, 3], [-2, -1])


def find_recenter_sites(model: onnx.ModelProto, quantized: set[str]) -> list[RecenterSite]:
    """Conv -> Clip(0, hi) whose every reader is a quantized Conv, or a spatial mean feeding a quantized Gemm."""
    index = GraphIndex(model.graph)
    sites: list[RecenterSite] = []
    for clip in model.graph.node:
        if clip.op_type != "Clip":
            continue
        bounds = _clip_range(index, clip)
        if bounds is None or bounds[0] != 0.0 or bounds[1] <= 0:
            continue
        producer = index.producer.get(clip.input[0])
        if producer is None or not _conv_ok(index, producer, producer.input[0]) or index.single_reader(clip.input[0]) is None:
            continue
        tensor = clip.output[0]
        if tensor in index.graph_outputs:
            continue
        consumers: list[str] = []
        means: list[str] = []
        ok = True
        for reader in index.readers(tensor):
            if reader.name in quantized and _conv_ok(index, reader, tensor):
                consumers.append(reader.name)
            elif _is_spatial_mean(reader, index) and int(get_attribute(reader, "keepdims", 1)) in (0, 1):
                follower = index.single_reader(reader.output[0])
                while follower is not None and follower.op_type in _SHAPE_OPS:
                    follower = index.single_reader(follower.output[0])
                if (
                    follower is not None
                    and follower.name in quantized
                    and follower.op_type == "Gemm"
                    and not int(get_attribute(follower, "transA", 0))
                    and index.constant(follower.input[1]) is not None
                ):
                    means.append(reader.name)
                    consumers.append(follower.name)
                else:
                    ok = False
            else:
                ok = False
        if ok and consumers:
            sites.append(RecenterSite(producer.name, clip.name, bounds[1] / 2.0, tuple(consumers), tuple(means)))
    return sites


class RecenterActivations(Pass):
    """Apply the shift at each site (see the module docstring); ``applied`` lists the clips."""

    def __init__(self, sites: list[RecenterSite]) -> None:
        self.sites = sites
        self.applied: list[str] = []
        self.pads_added = 0
        # Tensor -> c for every tensor now in [-c, c] (the clip outputs and their padded copies):
        # an int8 range of exactly c * 127 / 128 makes -c the code -128, so the padding value is
        # exact, and the Clip is redundant with the quantizer's saturation (runtimes drop it).
        self.centered: dict[str, float] = {}

    def call(self, model: onnx.ModelProto) -> PassResult:
        graph = model.graph
        names = NameMaker(graph)
        for site in self.sites:
            index = GraphIndex(graph)
            by_name = {n.name: n for n in graph.node}
            c = float(site.center)
            producer, clip = by_name[site.producer], by_name[site.clip]
            w1 = index.constant(producer.input[1])
            assert w1 is not None
            shift_bias(graph, names, producer, np.full(w1.shape[0], -c), suffix="bias_recentered")
            lo_name, hi_name = names(f"{clip.name}_min"), names(f"{clip.name}_max")
            bounds = _clip_range(index, clip)
            assert bounds is not None
            set_initializer(graph, lo_name, np.array(bounds[0] - c, np.float32))
            set_initializer(graph, hi_name, np.array(bounds[1] - c, np.float32))
            clip.input[1], clip.input[2] = lo_name, hi_name
            # The shifted tensors get new names: they no longer hold what the float model's
            # tensors of those names hold, and comparisons by name must not pair them.
            shifted_conv = names(f"{producer.output[0]}_centered")
            clip.input[0] = shifted_conv
            producer.output[0] = shifted_conv
            old_out = clip.output[0]
            shifted_out = names(f"{old_out}_centered")
            clip.output[0] = shifted_out
            for reader in index.readers(old_out):
                for slot, name in enumerate(reader.input):
                    if name == old_out:
                        reader.input[slot] = shifted_out
            self.centered[shifted_out] = c
            for consumer_name in site.consumers:
                node = by_name[consumer_name]
                w = index.constant(node.input[1])
                assert w is not None
                w64 = w.astype(np.float64)
                if node.op_type == "Gemm":
                    rows = w64 if int(get_attribute(node, "transB", 0)) else w64.T  # [out, in]
                    shift_bias(graph, names, node, c * rows.sum(axis=1), suffix="bias_recentered")
                    continue
                shift_bias(graph, names, node, c * w64.reshape(w.shape[0], -1).sum(axis=1), suffix="bias_recentered")
                pads = [int(p) for p in (get_attribute(node, "pads") or [])]
                if any(pads):
                    padded = names(f"{node.input[0]}_padded")
                    pads_name = names(f"{node.name}_pads")
                    value_name = names(f"{node.name}_pad_value")
                    rank = w.ndim
                    full = [0, 0, *pads[: rank - 2], 0, 0, *pads[rank - 2 :]]
                    set_initializer(graph, pads_name, np.array(full, np.int64))
                    set_initializer(graph, value_name, np.array(-c, np.float32))
                    graph.node.append(helper.make_node("Pad", [node.input[0], pads_name, value_name], [padded], name=names(f"{node.name}_Pad"), mode="constant"))
                    node.input[0] = padded
                    self.centered[padded] = c
                    for attr in node.attribute:
                        if attr.name == "pads":
                            del attr.ints[:]
                            attr.ints.extend([0] * len(pads))
                    self.pads_added += 1
            self.applied.append(site.clip)
        if self.applied:
            topological_sort(graph)
            remove_unused_initializers(graph)
        return PassResult(model, bool(self.applied))
