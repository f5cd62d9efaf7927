"""What ``--budget`` counts: every byte of the file ``save_model`` writes.

A protobuf message is the sum of its fields, each a tag, a length and the payload, so the
written file splits exactly into (a) the model without the candidate weights (the graph, the
source's metadata, every tensor left alone: biases, norms, position tables), measured once;
(b) each matrix's own bytes in its chosen format, its initializers and nodes as serialized in
place of its float node; (c) the plan's own metadata entry. The allocation gets the budget minus
(a) and (c), and prices each option by (b). Above protobuf's 2 GB limit ``save_model`` moves the
large tensors into ``<name>.data``: :func:`written_bytes` counts that layout too.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import onnx

from edgeq.graph.io import EXTERNAL_DATA_THRESHOLD
from edgeq.graph.passes.weight_only import WeightTarget

# save_model's external layout: tensors whose raw data reaches this (by sys.getsizeof) move out.
EXTERNAL_SIZE_THRESHOLD = 1024
# The external-data file is named after the output, which the scheme does not know: assume the
# longest file name most file systems allow, so the count stays an upper bound.
LOCATION_LENGTH = 255


def varint_size(value: int) -> int:
    """Bytes of ``value`` as a protobuf varint."""
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def field_bytes(payload: int) -> int:
    """One length-delimited field with a one-byte tag (field numbers below 16): tag, length, payload."""
    return 1 + varint_size(payload) + payload


def message_bytes(messages: Sequence[onnx.NodeProto | onnx.TensorProto]) -> int:
    """Bytes of repeated ``node`` or ``initializer`` entries of a graph holding these messages."""
    return sum(field_bytes(m.ByteSize()) for m in messages)


def removable_weights(model: onnx.ModelProto, targets: Sequence[WeightTarget]) -> set[str]:
    """Initializers only target nodes read: the ones a format choice can remove from the file.

    A weight also read by another node (or a graph output) stays whatever the plan says, so it
    belongs to the fixed part; a weight held by a ``Constant`` node is counted as fixed too (an
    upper bound: the rewrite removes such nodes once they are dead).
    """
    graph = model.graph
    names = {t.weight for t in targets} & {t.name for t in graph.initializer}
    target_nodes = {t.node_index for t in targets} | {t.shared_lookup.node_index for t in targets if t.shared_lookup}
    target_nodes |= _tied_transposes(graph, targets, target_nodes)
    for index, node in enumerate(graph.node):
        readers = set(node.input) & names
        if index not in target_nodes or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            names -= readers
    for target in targets:  # a target reading a weight at another position (x @ W with W also as x)
        node = graph.node[target.node_index]
        position = 0 if target.is_embedding else 1
        names -= {name for i, name in enumerate(node.input) if i != position}
    names -= {o.name for o in graph.output}
    return names


def _tied_transposes(graph: onnx.GraphProto, targets: Sequence[WeightTarget], owned: set[int]) -> set[int]:
    """The ``Transpose`` nodes a tied head reads its table through: they go when the head is rewritten."""
    tied = {t.weight for t in targets if t.shared_lookup is not None}
    readers: dict[str, set[int]] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            readers.setdefault(name, set()).add(index)
    outputs = {o.name for o in graph.output}
    return {
        index for index, node in enumerate(graph.node)
        if node.op_type == "Transpose" and node.input and node.input[0] in tied
        and node.output[0] not in outputs and readers.get(node.output[0], set()) <= owned
    }


def stripped_bytes(model: onnx.ModelProto, weights: set[str]) -> int:
    """``model.ByteSize()`` with the initializers ``weights`` removed: the serialized model without them."""
    graph_size = model.graph.ByteSize()
    removed = message_bytes([t for t in model.graph.initializer if t.name in weights])
    return model.ByteSize() - field_bytes(graph_size) + field_bytes(graph_size - removed)


def entry_bytes(key: str, value_length: int) -> int:
    """One ``StringStringEntryProto`` (``metadata_props``, ``external_data``) as a repeated field."""
    return field_bytes(field_bytes(len(key)) + field_bytes(value_length))


def _initializers(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    """Every initializer save_model's external layout considers: the graph's and its subgraphs'."""
    found = list(graph.initializer)
    for node in graph.node:
        for attribute in node.attribute:
            subgraphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
            for sub in subgraphs:
                found.extend(_initializers(sub))
    return found


def external_bytes(model: onnx.ModelProto, location_length: int = LOCATION_LENGTH) -> int:
    """Bytes of ``<name>.onnx`` plus ``<name>.data`` in save_model's external layout (an upper bound).

    Each moved tensor's raw data goes to the data file; in the model it leaves its ``raw_data``
    field and gains ``location``, ``offset`` and ``length`` entries and ``data_location``. The
    enclosing messages' length varints can only shrink, so they are not recounted.
    """
    total = model.ByteSize()
    offset = 0
    for tensor in _initializers(model.graph):
        if not tensor.HasField("raw_data") or sys.getsizeof(tensor.raw_data) < EXTERNAL_SIZE_THRESHOLD:
            continue
        length = len(tensor.raw_data)
        total -= field_bytes(length)  # the raw_data field leaves the model ...
        total += length  # ... and its bytes land in the data file
        total += entry_bytes("location", location_length) + entry_bytes("offset", len(str(offset)))
        total += entry_bytes("length", len(str(length))) + 2  # data_location = EXTERNAL
        offset += length
    return total


def written_bytes(model: onnx.ModelProto) -> int:
    """Bytes on disk after ``edgeq.graph.io.save_model(model, path)``: one file, or the model and its data."""
    size = model.ByteSize()
    return size if size <= EXTERNAL_DATA_THRESHOLD else external_bytes(model)


def writes_external(size: int) -> bool:
    """True when a model of ``size`` bytes is written with its tensors in ``<name>.data``."""
    return size > EXTERNAL_DATA_THRESHOLD
