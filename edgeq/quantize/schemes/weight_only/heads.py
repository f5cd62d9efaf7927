"""The LM head's own precision (``--lm-head``) and a table tied to it, stored as few times as it can be.

A tied table (the Gather's table is the head's weight) is quantized once and written once when
both ops can read one packed form: MatMulNBits for the head, GatherBlockQuantized through a
``Reshape`` of the same bytes for the lookup (see ``edgeq.graph.formats.gather.shares_matmulnbits``).
The shared table takes the head's precision (``--lm-head int8`` over an int4 body stores the
table once, at int8, for both): one int8 copy is smaller than an int4 table plus an int8 head,
and the lookup is then as exact as the head. Otherwise it is stored once per precision the two
nodes need, and the summary says why.
"""

from __future__ import annotations

from edgeq.graph.formats.gather import emit_shared
from edgeq.graph.passes.lm_head import DecoderPlan, Tie
from edgeq.graph.passes.weight_only import LeftInFloat, WeightOnlyRewriter, WeightTarget
from edgeq.numerics.codecs import Codec, get_codec
from edgeq.quantize.config import Method, OnnxFormat, WeightOnlyConfig
from edgeq.quantize.summary import NodeDecision


def head_codec(config: WeightOnlyConfig) -> Codec | None:
    """The LM head's codec (None: ``--lm-head float``)."""
    weights = config.head_weights
    if weights is None:
        return None
    return get_codec(weights.value, config.symmetric, positive_scales=config.head_format is OnnxFormat.QDQ)


def float_heads(plan: DecoderPlan) -> tuple[list[WeightTarget], list[LeftInFloat], list[str]]:
    """``--lm-head float``: the targets left, the nodes kept float with reasons, and notes."""
    kept: list[LeftInFloat] = []
    notes: list[str] = []
    drop: set[int] = set()
    for target in plan.targets:
        if not target.lm_head:
            continue
        drop.add(id(target))
        kept.append(LeftInFloat(target.name, target.op_type, "LM head left in float (--lm-head float)", target.weight))
        tie = plan.tie_of(target)
        if tie is not None and tie.gather is not None:
            drop.add(id(tie.gather))
            kept.append(LeftInFloat(
                tie.gather.name, tie.gather.op_type,
                f"table tied to the float LM head {target.name}: it is stored in float for the head anyway, "
                "a quantized copy would only add bytes", tie.gather.weight,
            ))
            notes.append(f"tied table {tie.table}: stored once, in float (--lm-head float); the Gather reads it too")
    return [t for t in plan.targets if id(t) not in drop], kept, notes


def share_refusal(tie: Tie, config: WeightOnlyConfig, head: Codec, table: Codec) -> str | None:
    """Why the tied Gather cannot read the head's packed table (so it is stored again), or None."""
    if tie.gather is None:
        return None
    if config.head_format is not OnnxFormat.MATMULNBITS:
        return f"--format {config.head_format.value} for the head: only MatMulNBits' packing is GatherBlockQuantized's"
    if head != table and not head.is_integer:
        return f"the LM head is {head.name} (--lm-head), the table {table.name}: one copy per precision"
    if tie.head.alpha != 1.0:
        return f"the head's Gemm alpha ({tie.head.alpha}) is folded into its codes"
    if config.method is Method.AWQ:
        return "AWQ scales the head's input channels, so its codes are not the table's"
    return None


def tie_note(tie: Tie, head_scheme: str, table_scheme: str, refusal: str | None) -> str:
    """One line saying how many times the tied table is stored, and in what."""
    if tie.gather is None:
        return (f"tied table {tie.table}: stored twice, float for {tie.gather_name} (left in float) "
                f"and {head_scheme} for the LM head {tie.head.name}")
    if refusal is None:
        return (f"tied table {tie.table}: quantized and stored once ({head_scheme}); MatMulNBits {tie.head.name} "
                f"and GatherBlockQuantized {tie.gather_name} read the same packed initializer")
    return (f"tied table {tie.table}: stored twice, {head_scheme} for the LM head {tie.head.name} and "
            f"{table_scheme} for {tie.gather_name} ({refusal})")


def write_shared_lookup(
    rewriter: WeightOnlyRewriter, head: WeightTarget, gather: WeightTarget, decision: NodeDecision
) -> NodeDecision:
    """The tied Gather as a GatherBlockQuantized over the head's MatMulNBits initializers (the
    head is already replaced in ``rewriter``); its summary row, from the head's ``decision``."""
    matmul = next(n for n in rewriter.replacements[head.node_index] if n.op_type == "MatMulNBits")
    emitted = emit_shared(matmul, gather.rows, gather.cols, gather.activation, gather.output, rewriter.prefix(gather))
    rewriter.replace(gather, emitted)
    return NodeDecision(
        name=gather.name, op_type=gather.op_type, quantized=True, weight=gather.weight,
        scheme=f"{decision.scheme} (reads the LM head {head.name}'s packed table: stored once)",
        bits=decision.bits, block_size=decision.block_size, method=decision.method,
        error={k: v for k, v in decision.error.items() if k == "weight_sqnr_db"},
    )
