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
import onnx_ir as ir

from edgeq.graph.passes.base import (
    GraphPass,
    NameMaker,
    constant,
    input_value,
    nodes_by_name,
    readers,
    set_initializer,
    shift_bias,
    single_reader,
    tidy,
    to_ir,
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


def _clip_range(node: ir.Node) -> tuple[float, float] | None:
    lo, hi = constant(input_value(node, 1)), constant(input_value(node, 2))
    if lo is None or hi is None or lo.size != 1 or hi.size != 1:
        return None
    return float(lo), float(hi)


def _conv_ok(node: ir.Node, tensor: ir.Value | None) -> bool:
    if node.op_type != "Conv" or node.inputs[0] is not tensor or constant(input_value(node, 1)) is None:
        return False
    bias = input_value(node, 2)
    if bias is not None and constant(bias) is None:
        return False
    return node.attributes.get_string("auto_pad", "NOTSET") == "NOTSET"


def _is_spatial_mean(node: ir.Node) -> bool:
    if node.op_type == "GlobalAveragePool":
        return True
    if node.op_type != "ReduceMean":
        return False
    axes_value = input_value(node, 1)
    axes = constant(axes_value) if axes_value is not None else node.attributes.get_ints("axes")
    return axes is not None and sorted(int(a) for a in np.ravel(axes)) in ([2, 3], [-2, -1])


def find_recenter_sites(model: onnx.ModelProto | ir.Model, quantized: set[str]) -> list[RecenterSite]:
    """Conv -> Clip(0, hi) whose every reader is a quantized Conv, or a spatial mean feeding a quantized Gemm."""
    sites: list[RecenterSite] = []
    for clip in to_ir(model).graph:
        if clip.op_type != "Clip":
            continue
        bounds = _clip_range(clip)
        if bounds is None or bounds[0] != 0.0 or bounds[1] <= 0:
            continue
        producer = clip.inputs[0].producer() if clip.inputs[0] is not None else None
        if producer is None or not _conv_ok(producer, producer.inputs[0]) or single_reader(clip.inputs[0]) is None:  # type: ignore[arg-type]
            continue
        tensor = clip.outputs[0]
        if tensor.is_graph_output():
            continue
        consumers: list[str] = []
        means: list[str] = []
        ok = True
        for reader in readers(tensor):
            if reader.name in quantized and _conv_ok(reader, tensor):
                consumers.append(reader.name or "")
            elif _is_spatial_mean(reader) and reader.attributes.get_int("keepdims", 1) in (0, 1):
                follower = single_reader(reader.outputs[0])
                while follower is not None and follower.op_type in _SHAPE_OPS:
                    follower = single_reader(follower.outputs[0])
                if (
                    follower is not None
                    and follower.name in quantized
                    and follower.op_type == "Gemm"
                    and follower.attributes.get_int("transA", 0) == 0
                    and constant(input_value(follower, 1)) is not None
                ):
                    means.append(reader.name or "")
                    consumers.append(follower.name or "")
                else:
                    ok = False
            else:
                ok = False
        if ok and consumers:
            sites.append(RecenterSite(producer.name or "", clip.name or "", bounds[1] / 2.0, tuple(consumers), tuple(means)))
    return sites


class RecenterActivations(GraphPass):
    """Apply the shift at each site (see the module docstring); ``applied`` lists the clips."""

    def __init__(self, sites: list[RecenterSite]) -> None:
        super().__init__()
        self.sites = sites
        self.applied: list[str] = []
        self.pads_added = 0
        # Tensor -> c for every tensor now in [-c, c] (the clip outputs and their padded copies):
        # an int8 range of exactly c * 127 / 128 makes -c the code -128, so the padding value is
        # exact, and the Clip is redundant with the quantizer's saturation (runtimes drop it).
        self.centered: dict[str, float] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        names = NameMaker(graph)
        by_name = nodes_by_name(graph)
        for site in self.sites:
            c = float(site.center)
            producer, clip = by_name[site.producer], by_name[site.clip]
            w1 = constant(producer.inputs[1])
            assert w1 is not None
            shift_bias(graph, names, producer, np.full(w1.shape[0], -c), suffix="bias_recentered")
            lo_name, hi_name = names(f"{clip.name}_min"), names(f"{clip.name}_max")
            bounds = _clip_range(clip)
            assert bounds is not None
            clip.replace_input_with(1, set_initializer(graph, lo_name, np.array(bounds[0] - c, np.float32)))
            clip.replace_input_with(2, set_initializer(graph, hi_name, np.array(bounds[1] - c, np.float32)))
            # The shifted tensors get new names: they no longer hold what the float model's
            # tensors of those names hold, and comparisons by name must not pair them.
            shifted_conv = producer.outputs[0]
            shifted_conv.name = names(f"{shifted_conv.name}_centered")
            shifted_out = clip.outputs[0]
            shifted_out.name = names(f"{shifted_out.name}_centered")
            self.centered[shifted_out.name] = c
            for consumer_name in site.consumers:
                node = by_name[consumer_name]
                w = constant(node.inputs[1])
                assert w is not None
                w64 = w.astype(np.float64)
                if node.op_type == "Gemm":
                    rows = w64 if node.attributes.get_int("transB", 0) != 0 else w64.T  # [out, in]
                    shift_bias(graph, names, node, c * rows.sum(axis=1), suffix="bias_recentered")
                    continue
                shift_bias(graph, names, node, c * w64.reshape(w.shape[0], -1).sum(axis=1), suffix="bias_recentered")
                pads = [int(p) for p in node.attributes.get_ints("pads", [])]
                if any(pads):
                    read = node.inputs[0]
                    assert read is not None
                    padded = names(f"{read.name}_padded")
                    pads_name = names(f"{node.name}_pads")
                    value_name = names(f"{node.name}_pad_value")
                    rank = w.ndim
                    full = [0, 0, *pads[: rank - 2], 0, 0, *pads[rank - 2 :]]
                    pads_value = set_initializer(graph, pads_name, np.array(full, np.int64))
                    pad_value = set_initializer(graph, value_name, np.array(-c, np.float32))
                    pad = ir.node(
                        "Pad", [read, pads_value, pad_value], {"mode": "constant"},
                        outputs=[ir.Value(name=padded)], name=names(f"{node.name}_Pad"),
                    )
                    graph.append(pad)
                    node.replace_input_with(0, pad.outputs[0])
                    self.centered[padded] = c
                    node.attributes["pads"] = ir.AttrInt64s("pads", [0] * len(pads))
                    self.pads_added += 1
            self.applied.append(site.clip)
        if self.applied:
            tidy(model)
        return ir.passes.PassResult(model, bool(self.applied))
