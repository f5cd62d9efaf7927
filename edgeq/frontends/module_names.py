"""Nodes named after the ``nn.Module`` that emitted them, so summaries speak in the user's layer names.

torch's exporter names nodes ``node_MatMul_117`` and records the module path of each node in its
metadata; this pass turns that into ``blocks.3.fc1/MatMul`` (and MatMul weights into
``blocks.3.fc1.weight_t``) and drops the metadata, which holds the exporting machine's source
paths and would make identical models differ byte for byte.
"""

from __future__ import annotations

import ast
import contextlib

import onnx

_NAME_SCOPES = "pkg.torch.onnx.name_scopes"
_WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _module_path(node: onnx.NodeProto) -> str:
    """Dotted path of the innermost ``nn.Module`` that emitted ``node`` ("" at the top level)."""
    for prop in node.metadata_props:
        if prop.key == _NAME_SCOPES:
            with contextlib.suppress(ValueError, SyntaxError):
                scopes = ast.literal_eval(prop.value)
                # [..., module path, aten call name]: the last entry is the call, not a module.
                if isinstance(scopes, list) and len(scopes) >= 2:
                    path = str(scopes[-2])
                    return "" if path.startswith("_empty_nn_module_stack") else path
    return ""


def name_after_modules(model: onnx.ModelProto) -> None:
    """Name nodes ``<module path>/<OpType>`` and drop the exporter's per-node annotations.

    Summaries and ``--exclude`` regexes speak in node and weight names: ``blocks.3.fc1/MatMul``
    and ``blocks.3.fc1.weight_t`` point at a layer of the user's module, ``node_MatMul_117`` and
    ``val_126`` do not (``_t``: a MatMul weight is stored [in, out], torch's Linear weight
    transposed). The annotations hold source paths and stack traces of the exporting machine,
    which would also make identical models differ byte for byte.
    """
    initializers = {t.name for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    taken: dict[str, int] = {}
    renamed: dict[str, str] = {}
    for node in model.graph.node:
        scope = _module_path(node)
        weight = node.input[1] if len(node.input) > 1 else ""
        if weight in initializers and weight.endswith(".weight") and node.op_type in _WEIGHTED_OPS:
            # A Conv with its BatchNorm folded in carries the BatchNorm's scope; name it after
            # the layer whose weight it holds.
            scope = weight[: -len(".weight")]
        base = f"{scope}/{node.op_type}" if scope else node.op_type
        count = taken.get(base, 0)
        taken[base] = count + 1
        node.name = base if count == 0 else f"{base}_{count}"
        wanted = f"{scope}.weight_t"
        unique = uses.get(weight) == 1 and wanted not in initializers and wanted not in renamed.values()
        if node.op_type == "MatMul" and scope and weight in initializers and unique:
            renamed[weight] = wanted
        del node.metadata_props[:]
        node.doc_string = ""
    for tensor in model.graph.initializer:
        tensor.name = renamed.get(tensor.name, tensor.name)
        del tensor.metadata_props[:]
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        del value.metadata_props[:]
    del model.graph.metadata_props[:]

