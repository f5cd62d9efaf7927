"""The language-model comparison section: perplexity and agreement table, perplexity-vs-size plot, worst layers."""

from __future__ import annotations

import os
from typing import Any

from edgeq.metrics import METRIC_HELP, METRIC_LABELS
from edgeq.report import plots
from edgeq.report.analysis import decoder_points
from edgeq.report.compare_html import layers_block
from edgeq.report.formatting import DASH, fmt_bytes, fmt_metric
from edgeq.report.markup import definition_list, esc, figure

# Column order of the table; every one is in ``edgeq.metrics.METRICS``.
DECODER_METRICS = [
    "perplexity",
    "perplexity_ratio",
    "next_token_agreement",
    "kl_divergence",
    "greedy_agreement",
    "greedy_first_divergence",
]


def _kv(nbytes: int | None) -> str:
    return DASH if nbytes is None else f"{nbytes:,} B"


def _table(section: dict[str, Any]) -> str:
    compare = section["compare"]["_data"]
    front = set(section["summary"]["pareto_front"]["size"])
    kv = compare.get("kv_bytes_per_token") or {}
    head = ['<th class="name">model</th>', "<th>file size</th>",
            '<th title="bytes the KV cache grows by per token, all layers, keys and values">KV cache / token</th>']
    head += [f"<th>{esc(METRIC_LABELS[m])}</th>" for m in DECODER_METRICS]

    def name_cell(label: str, detail: str, title: str) -> str:
        badge = '<span class="badge" title="on the perplexity-vs-size Pareto front">★ size</span>' if label in front else ""
        extra = f' <span class="muted">{esc(detail)}</span>' if detail else ""
        return f'<td class="name" title="{esc(title)}">{esc(label)}{extra}{badge}</td>'

    ref_cells = [
        name_cell(section["reference_label"], f"({os.path.basename(compare['reference'])})", compare["reference"]),
        f"<td>{fmt_bytes(compare['reference_file_bytes'])}</td>",
        f"<td>{_kv(compare.get('reference_kv_bytes_per_token'))}</td>",
        f"<td>{fmt_metric('perplexity', compare['reference_perplexity'])}</td>",
        *['<td class="muted">ref</td>' for _ in DECODER_METRICS[1:]],
    ]
    rows = [f'<tr class="ref">{"".join(ref_cells)}</tr>']
    for variant in compare["variants"]:
        ratio = variant["size_ratio"]
        ratio_html = f'<span class="sub">{ratio:.2f}×</span>' if ratio is not None else ""
        cells = [
            name_cell(variant["name"], "", variant["path"]),
            f"<td>{fmt_bytes(variant['file_bytes'])}{ratio_html}</td>",
            f"<td>{_kv(kv.get(variant['name']))}</td>",
            *[f"<td>{fmt_metric(m, variant['metrics'].get(m))}</td>" for m in DECODER_METRICS],
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<div class="table-wrap"><table class="compare"><thead><tr>{"".join(head)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _pareto_block(section: dict[str, Any], pid: str) -> str:
    points = decoder_points(section["compare"]["_data"], section["reference_label"])
    if not points:
        return '<p class="note">No perplexity measured: perplexity-vs-size plot omitted.</p>'
    front = [p["name"] for p in points if p["pareto"]]
    svg = plots.tradeoff(f"{pid}-size", points, "size", METRIC_LABELS["perplexity"], percent=False)
    caption = (
        "<strong>Perplexity against file size.</strong> Down and left is better; orange staircase and rings: "
        f"the Pareto front ({esc(', '.join(front))})."
    )
    return f'<h3>Perplexity against size</h3><div class="plots">{figure(svg, f"{pid}-size", caption)}</div>'


def render_decoder(section: dict[str, Any], pid: str) -> str:
    """A ``decoder`` section: what was measured, the variants table, the Pareto plot, worst layers."""
    compare = section["compare"]["_data"]
    rows = [
        ("reference", esc(compare["reference"])),
        ("data", esc(compare["data"] or DASH)),
        ("text", esc(f"{compare['sequences']:,} sequences, {compare['scored_tokens']:,} next-token predictions, "
                     f"read in chunks of {compare['chunk']} tokens through the KV cache")),
        ("greedy generation", esc(f"{compare['prompts']} prompts of {compare['prompt_tokens']} tokens, "
                                  f"{compare['new_tokens']} new tokens each")),
        ("reference perplexity", esc(fmt_metric("perplexity", compare["reference_perplexity"]))),
    ]
    legend = "; ".join(f"<strong>{esc(METRIC_LABELS[m])}</strong>: {esc(METRIC_HELP[m])}" for m in DECODER_METRICS)
    return (
        f'<section class="report-section compare" id="{esc(pid)}"><h2>{esc(section["title"])}</h2>'
        f"{definition_list(rows)}<h3>Variants</h3>{_table(section)}"
        f'<p class="note">{legend}. ★ size: on the Pareto front of perplexity against file size.</p>'
        f"{_pareto_block(section, pid)}{layers_block(section)}</section>"
    )
