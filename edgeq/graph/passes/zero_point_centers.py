"""Turn re-centered symmetric int8 tensors into the asymmetric form onnxruntime's CPU kernels fuse.

``RecenterActivations`` shifts a ReLU6 output by ``c`` so TensorRT's symmetric int8 uses both
halves of its grid, at the price of an explicit ``Pad`` (value ``-c``) in front of every padded
consumer. TensorRT folds that Pad away; onnxruntime runs it in float between a DequantizeLinear
and a QuantizeLinear, and cannot fuse the padded conv either, which makes the graph slower on a
CPU than the float model. The same grid written with a zero point is exact arithmetic, not an
approximation: with scale ``s = c / 128``, symmetric codes of ``x - c`` are the codes of ``x``
with zero point ``-128`` (``round((x - c) / s) = round(x / s) - 128``). So this pass undoes the
shift in float (producer bias ``+c``, Clip back to ``[0, hi]``, consumer bias ``-W·c`` with the
weights as dequantized), gives the tensor's Q/DQ the zero point ``-128``, and hands the padding
back to the conv, whose int8 kernel pads with the zero point, i.e. with a real 0. Model outputs
stay the same up to float rounding. A spatial mean keeps reading centered values through one
``Sub`` (its consumer's bias was fitted to them), a scalar op on a pooled vector.

Sites are found from the graph alone: ``Conv -> Clip(-c, hi - c) -> QuantizeLinear`` with scale
``c / 128`` and zero point 0, whatever produced it. A site with a reader this pass cannot adjust
is left as it is (valid, only slower).

Only onnxruntime wants this: TensorRT's explicit quantization rejects non-zero zero points.
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
    replace_nodes,
    set_initializer,
    shift_bias,
    topological_sort,
)

ZERO_POINT = -128  # code of the grid's lowest value: the real 0 of a [0, hi] activation


def _effective_weight(index: GraphIndex, name: str) -> np.ndarray:
    """The float weight a node computes with: an initializer, or the dequantized int8 one
    (symmetric, per tensor or per channel, as edgeq and TensorRT write them)."""
    from edgeq.numerics.int8.weights import dequantize_weight

    value = index.constant(name)
    if value is not None:
        return value.astype(np.float64)
    dq = index.producer.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        raise ValueError(f"weight {name!r} is neither a constant nor a DequantizeLinear of constants")
    values, scale = index.constant(dq.input[0]), index.constant(dq.input[1])
    zero = index.constant(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
    if values is None or scale is None or (zero is not None and np.any(zero != 0)):
        raise ValueError(f"weight {name!r}: DequantizeLinear {dq.name} is not a symmetric one of constants")
    axis = int(get_attribute(dq, "axis", 1)) % max(values.ndim, 1) if scale.size > 1 else 0
    return dequantize_weight(values, scale if scale.size > 1 else scale.reshape(1), axis).astype(np.float64)


@dataclass
class _Site:
    clip: onnx.NodeProto
    center: float
    quantizers: list[onnx.NodeProto]
    # (node, tensor it reads): convs, pads and spatial means that read the tensor or its DQ copies.
    readers: list[tuple[onnx.NodeProto, str]]


def _is_symmetric_grid(index: GraphIndex, node: onnx.NodeProto, c: float) -> bool:
    """A Q or DQ with one scale of c / 128 and zero point 0 of type int8."""
    scale = index.scalar(node, 1)
    if scale is None or not np.isclose(scale * 128.0, c, rtol=1e-6):
        return False
    if len(node.input) < 3 or not node.input[2]:
        return False  # no zero point means uint8 in ONNX: not TensorRT's grid
    zero = index.constant(node.input[2])
    return zero is not None and zero.dtype == np.int8 and zero.size == 1 and int(zero.reshape(())) == 0


def _pad_chain(index: GraphIndex, pad: onnx.NodeProto, c: float) -> list[onnx.NodeProto] | None:
    """``Pad(-c) [-> Q -> DQ] -> Conv`` with the conv unpadded: the nodes from Pad to Conv, or None."""
    pads = index.constant(pad.input[1]) if len(pad.input) > 1 and pad.input[1] else None
    value = index.scalar(pad, 2)
    mode = get_attribute(pad, "mode", b"constant")
    if pads is None or value is None or not np.isclose(value, -c) or (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        return None
    rank = pads.size // 2
    if pads.size % 2 or rank < 3 or any(int(p) for p in (*pads[:2], *pads[rank : rank + 2])):
        return None  # pads the batch or channel axis
    chain = [pad]
    end = pad.output[0]
    q = index.single_reader(end)
    if q is not None and q.op_type == "QuantizeLinear":
        dqs = index.readers(q.output[0])
        # Dropping this re-quantization is exact only on the tensor's own grid.
        if len(dqs) != 1 or dqs[0].op_type != "DequantizeLinear" or not _is_symmetric_grid(index, q, c):
            return None
        chain += [q, dqs[0]]
        end = dqs[0].output[0]
    conv = index.single_reader(end)
    if conv is None or not _unpadded_conv_reading(index, conv, end):
        return None
    return [*chain, conv]


def _unpadded_conv_reading(index: GraphIndex, conv: onnx.NodeProto, tensor: str) -> bool:
    """A Conv reading ``tensor`` as its data, with known weights and no padding of its own: its
    zero padding would be a real ``-c`` before the rewrite and a real 0 after it."""
    if conv.op_type != "Conv" or conv.input[0] != tensor or any(int(p) for p in (get_attribute(conv, "pads") or [])):
        return False
    auto_pad = get_attribute(conv, "auto_pad", b"NOTSET")
    return (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) in ("NOTSET", "VALID") and _weight(index, conv) is not None


def _weight(index: GraphIndex, conv: onnx.NodeProto) -> np.ndarray | None:
    try:
        return _effective_weight(index, conv.input[1])
    except ValueError:
        return None


def find_center_sites(index: GraphIndex) -> list[_Site]:
    """Every re-centered tensor whose readers this pass can all adjust."""
    sites: list[_Site] = []
    for clip in index.graph.node:
        if clip.op_type != "Clip" or len(clip.input) < 3:
            continue
        lo = index.scalar(clip, 1)
        producer = index.producer.get(clip.input[0])
        if lo is None or lo >= 0 or index.scalar(clip, 2) is None or producer is None or producer.op_type != "Conv":
            continue
        if index.single_reader(clip.input[0]) is None or _weight(index, producer) is None:
            continue
        c = -lo
        tensor = clip.output[0]
        quantizers = index.readers(tensor)
        if tensor in index.graph_outputs or not quantizers:
            continue
        readers: list[tuple[onnx.NodeProto, str]] = []
        ok = True
        for q in quantizers:
            ok = ok and q.op_type == "QuantizeLinear" and _is_symmetric_grid(index, q, c)
            for dq in index.readers(q.output[0]) if ok else []:
                ok = ok and dq.op_type == "DequantizeLinear" and _is_symmetric_grid(index, dq, c)
                for reader in index.readers(dq.output[0]) if ok else []:
                    readers.append((reader, dq.output[0]))
        for reader, read in readers if ok else []:
            if reader.op_type == "Conv":
                ok = ok and _unpadded_conv_reading(index, reader, read)
            elif reader.op_type == "Pad":
                ok = ok and reader.input[0] == read and _pad_chain(index, reader, c) is not None
            else:
                ok = ok and reader.op_type in ("ReduceMean", "GlobalAveragePool")
        if ok and readers:
            sites.append(_Site(clip, c, quantizers, readers))
    return sites


class CentersToZeroPoints(Pass):
    """Rewrite every re-centered tensor (see the module docstring); ``converted`` lists them and
    ``pads_removed`` counts the Pads handed back to their convs."""

    def __init__(self) -> None:
        self.converted: list[str] = []
        self.pads_removed = 0

    def call(self, model: onnx.ModelProto) -> PassResult:
        graph = model.graph
        names = NameMaker(graph)
        index = GraphIndex(graph)
        sites = find_center_sites(index)
        removed: set[int] = set()
        added: list[onnx.NodeProto] = []
        for site in sites:
            c = site.center
            clip = site.clip
            conv = index.producer[clip.input[0]]
            shift_bias(graph, names, conv, np.full(_effective_weight(index, conv.input[1]).shape[0], c))
            lo_name, hi_name = names(f"{clip.name}_min"), names(f"{clip.name}_max")
            set_initializer(graph, lo_name, np.array(0.0, np.float32))
            set_initializer(graph, hi_name, np.array(index.scalar(clip, 2) + c, np.float32))  # type: ignore[operator]
            clip.input[1], clip.input[2] = lo_name, hi_name
            zp_name = names(f"{clip.output[0]}_zero_point_asymmetric")
            set_initializer(graph, zp_name, np.array(ZERO_POINT, np.int8))
            for q in site.quantizers:
                for node in (q, *index.readers(q.output[0])):
                    node.input[2] = zp_name
            for reader, read in site.readers:
                if reader.op_type == "Conv":
                    self._subtract_shift(graph, names, index, reader, c)
                elif reader.op_type == "Pad":
                    chain = _pad_chain(index, reader, c)
                    assert chain is not None  # checked when the site was found
                    pads = index.constant(reader.input[1])
                    assert pads is not None
                    rank = pads.size // 2
                    target = chain[-1]
                    for attr in list(target.attribute):
                        if attr.name == "pads":
                            target.attribute.remove(attr)
                    target.attribute.append(helper.make_attribute("pads", [int(p) for p in (*pads[2:rank], *pads[rank + 2 :])]))
                    target.input[0] = read
                    removed.update(id(n) for n in chain[:-1])
                    self.pads_removed += 1
                    self._subtract_shift(graph, names, index, target, c)
                else:  # a spatial mean: its consumer was fitted to centered values
                    mean = reader.output[0]
                    raw = names(f"{mean}_uncentered")
                    shift = names(f"{mean}_center")
                    set_initializer(graph, shift, np.array(c, np.float32))
                    reader.output[0] = raw
                    added.append(helper.make_node("Sub", [raw, shift], [mean], name=names(f"{reader.name}_recenter")))
            self.converted.append(clip.output[0])
        if not self.converted:
            return PassResult(model, False)
        replace_nodes(graph, [*(n for n in graph.node if id(n) not in removed), *added])
        topological_sort(graph)
        remove_unused_initializers(graph)
        return PassResult(model, True)

    def _subtract_shift(self, graph: onnx.GraphProto, names: NameMaker, index: GraphIndex, conv: onnx.NodeProto, c: float) -> None:
        """The conv now reads ``x + c``: take ``c`` times its (dequantized) weight sums off the bias."""
        weight = _effective_weight(index, conv.input[1])
        shift_bias(graph, names, conv, -c * weight.reshape(weight.shape[0], -1).sum(axis=1))
