"""The quantization summary: every quantizable node, what was done to it, or why not.

Nothing is skipped silently: a node left in float carries a reason, the way a failed rewrite
check in onnxscript says why it did not match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeq.serialization import Serializable


@dataclass
class NodeDecision:
    """One node's fate. ``scheme`` is a short human description, e.g. ``int4 block32 gptq``."""

    name: str
    op_type: str
    quantized: bool
    scheme: str = ""
    reason: str = ""  # why it stayed in float (required when quantized is False)
    weight: str = ""
    bits: float | None = None
    block_size: int | None = None
    method: str = ""
    error: dict[str, float] = field(default_factory=dict)  # e.g. {"weight_sqnr_db": 31.2, "output_mse": 1e-4}
    subgraph: str = ""  # "" at the top level, else the If/Loop/Scan body holding the node, e.g. "If_1.then_branch"


@dataclass
class QuantizationSummary(Serializable):
    """Per-node decisions plus ``notes``: what was done or not done to the whole model and why
    (a step skipped for lack of ``--data``, ``--data`` chosen over ``--calib`` when both are given)."""

    schema_type = "edgeq.QuantizationSummary"
    schema_version = 1

    model: str
    config: dict[str, Any]
    nodes: list[NodeDecision] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # What the user must hear even with --quiet: a run that compressed nothing, and what would.
    warnings: list[str] = field(default_factory=list)
    weight_bytes_before: int = 0
    weight_bytes_after: int = 0
    kv_bytes_per_token_before: int | None = None  # a decoder's KV cache, when --kv-cache changed it
    kv_bytes_per_token_after: int | None = None

    @classmethod
    def _from_data(cls, data: dict[str, Any]) -> QuantizationSummary:
        nodes = [NodeDecision(**n) for n in data.get("nodes", [])]
        rest = {k: v for k, v in data.items() if k != "nodes"}
        return cls(nodes=nodes, **rest)

    def add(self, decision: NodeDecision) -> None:
        if not decision.quantized and not decision.reason:
            raise ValueError(f"node {decision.name} left in float without a reason")
        self.nodes.append(decision)

    @property
    def quantized(self) -> list[NodeDecision]:
        return [n for n in self.nodes if n.quantized]

    @property
    def left_in_float(self) -> list[NodeDecision]:
        return [n for n in self.nodes if not n.quantized]

    def format_text(self, max_rows: int = 40) -> str:
        lines = [f"quantized {len(self.quantized)} nodes, left {len(self.left_in_float)} in float"]
        lines.extend(f"warning: {w}" for w in self.warnings)
        if self.weight_bytes_before:
            ratio = self.weight_bytes_after / self.weight_bytes_before
            lines.append(
                f"weight bytes: {self.weight_bytes_before:,} -> {self.weight_bytes_after:,} ({ratio:.3f}x)"
            )
        if self.kv_bytes_per_token_before and self.kv_bytes_per_token_after:
            ratio = self.kv_bytes_per_token_after / self.kv_bytes_per_token_before
            lines.append(f"KV cache bytes/token: {self.kv_bytes_per_token_before:,} -> "
                         f"{self.kv_bytes_per_token_after:,} ({ratio:.3f}x)")
        for node in self.quantized[:max_rows]:
            err = " ".join(f"{k}={v:.4g}" for k, v in node.error.items())
            lines.append(f"  + {node.name} ({node.op_type}{_where(node)}): {node.scheme} {err}".rstrip())
        if len(self.quantized) > max_rows:
            lines.append(f"  ... {len(self.quantized) - max_rows} more quantized nodes (see --summary JSON)")
        for node in self.left_in_float:
            lines.append(f"  - {node.name} ({node.op_type}{_where(node)}): float, {node.reason}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def _where(node: NodeDecision) -> str:
    return f" in {node.subgraph}" if node.subgraph else ""
