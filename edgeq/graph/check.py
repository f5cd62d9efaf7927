"""``onnx.checker`` on a saved model, as far as the checker can check it.

onnxruntime defines a few operators in the *default* ONNX domain that onnx itself does not
(``SimplifiedLayerNormalization``, which onnxruntime-genai's model builder writes at opset 22,
is the common one). The checker rejects any default-domain node it has no schema for, so a
decoder that onnxruntime runs fine could not be saved. Skipping the check would hide every other
mistake in such a graph, so instead: run the full check; if it fails, and every default-domain op
the checker does not know is one onnxruntime defines, move exactly those nodes into a private
domain (which the checker leaves alone, as it does ``com.microsoft``) on a side copy and run the
full check again. Everything else is still checked (structure, types, attributes, shape inference
up to the first node onnx has no schema for: past it onnx reports no inference errors, for
``com.microsoft`` nodes too); the nodes left out are reported, so the caller can say so once. Any
other failure is raised.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import onnx

# Where the unchecked nodes go on the side copy: a domain no tool defines.
UNCHECKED_DOMAIN = "edgeq.unchecked"
_ONNX_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


@dataclass(frozen=True)
class CheckReport:
    """What the full check covered: all of it, or all but what is listed.

    ``unchecked`` maps an op type the checker does not know (onnxruntime does) to its node count,
    ``opsets`` each such op to "<domain> opset <n>"; ``value_info`` is shape inference's first
    complaint about the graph's own shape annotations when the check had to run without them.
    """

    unchecked: dict[str, int] = field(default_factory=dict)
    opsets: dict[str, str] = field(default_factory=dict)
    value_info: str | None = None

    @property
    def complete(self) -> bool:
        return not self.unchecked and self.value_info is None

    @property
    def note(self) -> str | None:
        """One line for the user, or None when the check was complete."""
        parts = []
        if self.unchecked:
            ops = ", ".join(f"{op} ({n} node{'s' if n != 1 else ''}, {self.opsets[op]})"
                            for op, n in self.unchecked.items())
            parts.append(f"onnx.checker has no schema for {ops}, which onnxruntime defines: left out of "
                         "the full check")
        if self.value_info is not None:
            parts.append(f"the graph's value_info shape annotations disagree with onnx shape inference "
                         f"({self.value_info}): the check ran without them")
        return "; ".join(parts) + ("; the rest passed it (onnx's shape inference stops reporting at the first op "
                                   "it has no schema for)") if parts else None


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of the subgraphs in its nodes' attributes (If, Loop, Scan)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                yield from all_nodes(sub)


def _domain_key(domain: str) -> str:
    return "" if domain == "ai.onnx" else domain


@cache
def onnxruntime_ops() -> frozenset[tuple[str, str, int]]:
    """(domain, op type, first opset) for every operator schema onnxruntime defines."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state

        schemas = state.get_all_operator_schema()
    except (ImportError, AttributeError):  # a build without the schema registry: trust nothing
        return frozenset()
    return frozenset((_domain_key(s.domain), s.name, int(s.since_version)) for s in schemas)


def _defined_by_onnxruntime(op_type: str, domain: str, version: int) -> bool:
    return any(d == domain and name == op_type and since <= version for d, name, since in onnxruntime_ops())


def checker_unknown_ops(model: onnx.ModelProto) -> dict[tuple[str, str], int]:
    """(domain, op type) → node count for ONNX-domain nodes the checker has no schema for."""
    versions = {_domain_key(o.domain): int(o.version) for o in model.opset_import}
    local = {(f.domain, f.name) for f in model.functions}
    found: Counter[tuple[str, str]] = Counter()
    for node in all_nodes(model.graph):
        domain = _domain_key(node.domain)
        if domain not in _ONNX_DOMAINS or (node.domain, node.op_type) in local or domain not in versions:
            continue
        if not onnx.defs.has(node.op_type, versions[domain], domain):
            found[(domain, node.op_type)] += 1
    return dict(found)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.replace("Inference error(s): ", "").replace("[ShapeInferenceError] ", "").strip()


def _check_beside(model: onnx.ModelProto, path: Path) -> None:
    """Full check of ``model`` written beside ``path``, so its external data references resolve."""
    side = path.with_name(f".{path.stem}.edgeq-check{path.suffix}")
    try:
        onnx.save_model(model, str(side))
        onnx.checker.check_model(str(side), full_check=True)
    finally:
        side.unlink(missing_ok=True)


_CHECK_ERRORS = (onnx.checker.ValidationError, onnx.shape_inference.InferenceError)


def check_model_file(path: str | Path) -> CheckReport:
    """Full ``onnx.checker`` check of a model file (external data beside it), see the module doc.

    When the full check fails, two things it trips over in graphs onnxruntime runs are set aside
    on a side copy, and reported: ONNX-domain nodes onnx has no schema for but onnxruntime defines,
    and ``value_info`` annotations shape inference disagrees with (the builder writes a [1]
    constant annotated as a scalar). Anything else raises the checker's own error.
    """
    path = Path(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
        return CheckReport()
    except _CHECK_ERRORS as exc:
        first: BaseException = exc
    model = onnx.load(str(path), load_external_data=False)
    versions = {_domain_key(o.domain): int(o.version) for o in model.opset_import}
    unknown = {(d, op): n for (d, op), n in checker_unknown_ops(model).items()
               if _defined_by_onnxruntime(op, d, versions[d])}  # any other unknown op fails the check below
    if unknown:
        for node in all_nodes(model.graph):
            if (_domain_key(node.domain), node.op_type) in unknown:
                node.domain = UNCHECKED_DOMAIN
        model.opset_import.append(onnx.helper.make_opsetid(UNCHECKED_DOMAIN, 1))
    value_info = None
    try:
        _check_beside(model, path)
    except onnx.shape_inference.InferenceError as exc:
        if not model.graph.value_info:
            raise
        value_info = _first_line(exc)
        del model.graph.value_info[:]
        _check_beside(model, path)
    if not unknown and value_info is None:  # the same model passed the second time: say the first error
        raise first
    return CheckReport(
        unchecked={op: n for (_, op), n in unknown.items()},
        opsets={op: f"{d or 'default domain'} opset {versions[d]}" for d, op in unknown},
        value_info=value_info,
    )
