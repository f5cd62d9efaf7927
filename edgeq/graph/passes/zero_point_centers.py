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
import onnx_ir as ir

from edgeq.graph.passes.base import (
    GraphPass,
    NameMaker,
    constant,
    input_value,
    readers,
    scalar,
    set_initializer,
    shift_bias,
    single_reader,
    tidy,
)

ZERO_POINT = -128  # code of the grid's lowest value: the real 0 of a [0, hi] activation


def _effective_weight(value: ir.Value | None) -> np.ndarray:
    """The float weight a node computes with: an initializer, or the dequantized int8 one
    (symmetric, per tensor or per channel, as edgeq and TensorRT write them)."""
    from edgeq.numerics.int8.weights import dequantize_weight

    stored = constant(value)
    if stored is not None:
        return stored.astype(np.float64)
    name = None if value is None else value.name
    dq = None if value is None else value.producer()
    if dq is None or dq.op_type != "DequantizeLinear":
        raise ValueError(f"weight {name!r} is neither a constant nor a DequantizeLinear of constants")
    values, scale = constant(input_value(dq, 0)), constant(input_value(dq, 1))
    zero = constant(input_value(dq, 2))
    if values is None or scale is None or (zero is not None and np.any(zero != 0)):
        raise ValueError(f"weight {name!r}: DequantizeLinear {dq.name} is not a symmetric one of constants")
    axis = dq.attributes.get_int("axis", 1) % max(values.ndim, 1) if scale.size > 1 else 0
    return dequantize_weight(values, scale if scale.size > 1 else scale.reshape(1), axis).astype(np.float64)


@dataclass
class _Site:
    clip: ir.Node
    center: float
    quantizers: list[ir.Node]
    # (node, value it reads): convs, pads and spatial means that read the tensor or its DQ copies.
    readers: list[tuple[ir.Node, ir.Value]]


def _is_symmetric_grid(node: ir.Node, c: float) -> bool:
    """A Q or DQ with one scale of c / 128 and zero point 0 of type int8."""
    scale = scalar(node, 1)
    if scale is None or not np.isclose(scale * 128.0, c, rtol=1e-6):
        return False
    zero_value = input_value(node, 2)
    if zero_value is None:
        return False  # no zero point means uint8 in ONNX: not TensorRT's grid
    zero = constant(zero_value)
    return zero is not None and zero.dtype == np.int8 and zero.size == 1 and int(zero.reshape(())) == 0


def _pad_chain(pad: ir.Node, c: float) -> list[ir.Node] | None:
    """``Pad(-c) [-> Q -> DQ] -> Conv`` with the conv unpadded: the nodes from Pad to Conv, or None."""
    pads = constant(input_value(pad, 1))
    value = scalar(pad, 2)
    if pads is None or value is None or not np.isclose(value, -c) or pad.attributes.get_string("mode", "constant") != "constant":
        return None
    rank = pads.size // 2
    if pads.size % 2 or rank < 3 or any(int(p) for p in (*pads[:2], *pads[rank : rank + 2])):
        return None  # pads the batch or channel axis
    chain = [pad]
    end = pad.outputs[0]
    q = single_reader(end)
    if q is not None and q.op_type == "QuantizeLinear":
        dqs = readers(q.outputs[0])
        # Dropping this re-quantization is exact only on the tensor's own grid.
        if len(dqs) != 1 or dqs[0].op_type != "DequantizeLinear" or not _is_symmetric_grid(q, c):
            return None
        chain += [q, dqs[0]]
        end = dqs[0].outputs[0]
    conv = single_reader(end)
    if conv is None or not _unpadded_conv_reading(conv, end):
        return None
    return [*chain, conv]


def _unpadded_conv_reading(conv: ir.Node, tensor: ir.Value) -> bool:
    """A Conv reading ``tensor`` as its data, with known weights and no padding of its own: its
    zero padding would be a real ``-c`` before the rewrite and a real 0 after it."""
    if conv.op_type != "Conv" or conv.inputs[0] is not tensor or any(int(p) for p in conv.attributes.get_ints("pads", [])):
        return False
    return conv.attributes.get_string("auto_pad", "NOTSET") in ("NOTSET", "VALID") and _weight(conv) is not None


def _weight(conv: ir.Node) -> np.ndarray | None:
    try:
        return _effective_weight(input_value(conv, 1))
    except ValueError:
        return None


def find_center_sites(graph: ir.Graph) -> list[_Site]:
    """Every re-centered tensor whose readers this pass can all adjust."""
    sites: list[_Site] = []
    for clip in graph:
        if clip.op_type != "Clip" or len(clip.inputs) < 3 or clip.inputs[0] is None:
            continue
        lo = scalar(clip, 1)
        producer = clip.inputs[0].producer()
        if lo is None or lo >= 0 or scalar(clip, 2) is None or producer is None or producer.op_type != "Conv":
            continue
        if single_reader(clip.inputs[0]) is None or _weight(producer) is None:
            continue
        c = -lo
        tensor = clip.outputs[0]
        quantizers = readers(tensor)
        if tensor.is_graph_output() or not quantizers:
            continue
        site_readers: list[tuple[ir.Node, ir.Value]] = []
        ok = True
        for q in quantizers:
            ok = ok and q.op_type == "QuantizeLinear" and _is_symmetric_grid(q, c)
            for dq in readers(q.outputs[0]) if ok else []:
                ok = ok and dq.op_type == "DequantizeLinear" and _is_symmetric_grid(dq, c)
                for reader in readers(dq.outputs[0]) if ok else []:
                    site_readers.append((reader, dq.outputs[0]))
        for reader, read in site_readers if ok else []:
            if reader.op_type == "Conv":
                ok = ok and _unpadded_conv_reading(reader, read)
            elif reader.op_type == "Pad":
                ok = ok and reader.inputs[0] is read and _pad_chain(reader, c) is not None
            else:
                ok = ok and reader.op_type in ("ReduceMean", "GlobalAveragePool")
        if ok and site_readers:
            sites.append(_Site(clip, c, quantizers, site_readers))
    return sites


class CentersToZeroPoints(GraphPass):
    """Rewrite every re-centered tensor (see the module docstring); ``converted`` lists them and
    ``pads_removed`` counts the Pads handed back to their convs."""

    def __init__(self) -> None:
        super().__init__()
        self.converted: list[str] = []
        self.pads_removed = 0

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        names = NameMaker(graph)
        sites = find_center_sites(graph)
        removed: list[ir.Node] = []
        added: list[ir.Node] = []
        for site in sites:
            c = site.center
            clip = site.clip
            conv = clip.inputs[0].producer()  # type: ignore[union-attr]
            assert conv is not None
            shift_bias(graph, names, conv, np.full(_effective_weight(input_value(conv, 1)).shape[0], c))
            lo_name, hi_name = names(f"{clip.name}_min"), names(f"{clip.name}_max")
            lo = set_initializer(graph, lo_name, np.array(0.0, np.float32))
            hi = set_initializer(graph, hi_name, np.array(scalar(clip, 2) + c, np.float32))  # type: ignore[operator]
            clip.replace_input_with(1, lo)
            clip.replace_input_with(2, hi)
            zero_point = set_initializer(graph, names(f"{clip.outputs[0].name}_zero_point_asymmetric"), np.array(ZERO_POINT, np.int8))
            for q in site.quantizers:
                for node in (q, *readers(q.outputs[0])):
                    node.replace_input_with(2, zero_point)
            for reader, read in site.readers:
                if reader.op_type == "Conv":
                    self._subtract_shift(graph, names, reader, c)
                elif reader.op_type == "Pad":
                    chain = _pad_chain(reader, c)
                    assert chain is not None  # checked when the site was found
                    pads = constant(input_value(reader, 1))
                    assert pads is not None
                    rank = pads.size // 2
                    target = chain[-1]
                    target.attributes.pop("pads", None)
                    target.attributes["pads"] = ir.AttrInt64s("pads", [int(p) for p in (*pads[2:rank], *pads[rank + 2 :])])
                    target.replace_input_with(0, read)
                    removed.extend(chain[:-1])
                    self.pads_removed += 1
                    self._subtract_shift(graph, names, target, c)
                else:  # a spatial mean: its consumer was fitted to centered values
                    self._recenter_mean(graph, names, reader, c, added)
            self.converted.append(clip.outputs[0].name or "")
        if not self.converted:
            return ir.passes.PassResult(model, False)
        graph.remove(removed, safe=True)
        graph.extend(added)
        tidy(model)
        return ir.passes.PassResult(model, True)

    @staticmethod
    def _recenter_mean(graph: ir.Graph, names: NameMaker, mean: ir.Node, c: float, added: list[ir.Node]) -> None:
        """``mean`` now averages ``x + c``: its output keeps its name and readers through a ``Sub`` of ``c``."""
        out = mean.outputs[0]
        name = out.name
        raw = names(f"{name}_uncentered")
        shift = set_initializer(graph, names(f"{name}_center"), np.array(c, np.float32))
        recentered = ir.Value(name=name, type=out.type, shape=out.shape)
        out.replace_all_uses_with(recentered, replace_graph_outputs=True)
        out.name = raw
        added.append(ir.node("Sub", [out, shift], outputs=[recentered], name=names(f"{mean.name}_recenter")))

    @staticmethod
    def _subtract_shift(graph: ir.Graph, names: NameMaker, conv: ir.Node, c: float) -> None:
        """The conv now reads ``x + c``: take ``c`` times its (dequantized) weight sums off the bias."""
        weight = _effective_weight(input_value(conv, 1))
        shift_bias(graph, names, conv, -c * weight.reshape(weight.shape[0], -1).sum(axis=1))
