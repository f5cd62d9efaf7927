"""The comparison section of the report page: the variants table, trade-off plots, worst layers."""

from __future__ import annotations

import os
from typing import Any

from edgeq.metrics import METRIC_HELP, METRIC_LABELS, PERCENT_METRICS
from edgeq.report import plots
from edgeq.report.analysis import TASK_METRICS, compare_points
from edgeq.report.formatting import DASH, fmt_bytes, fmt_metric, fmt_ms, fmt_number, is_number
from edgeq.report.markup import breakable, definition_list, esc, figure, shorten


def _speedup(ref: Any, value: Any) -> str:
    if not is_number(ref) or not is_number(value) or value <= 0:
        return DASH
    return f"{ref / value:.2f}×"


def _compare_table(section: dict[str, Any]) -> str:
    compare = section["compare"]["_data"]
    summary = section["summary"]
    metric_names = TASK_METRICS[compare["task"]]
    present = [m for m in metric_names if any(m in v["metrics"] for v in compare["variants"])]
    fronts = {cost: set(summary["pareto_front"][cost]) for cost in ("size", "latency")}
    ref_label = section["reference_label"]
    ref_latency = compare["reference_latency_ms"] or {}
    ref_p50 = ref_latency.get("p50")
    show_energy = any(v["energy_mj"] is not None for v in compare["variants"])

    head = ['<th class="name">model</th>', "<th>file size</th>"]
    head += [f"<th>{esc(METRIC_LABELS.get(m, m))}</th>" for m in present]
    head += ["<th>latency p50 (ms)</th>", "<th>latency p99 (ms)</th>", "<th>speed-up vs ref</th>"]
    if show_energy:
        head.append("<th>energy / inference</th>")

    def name_cell(label: str, detail: str, title: str) -> str:
        badges = "".join(
            f'<span class="badge" title="on the accuracy-vs-{cost} Pareto front">★ {cost}</span>'
            for cost in ("size", "latency")
            if label in fronts[cost]
        )
        extra = f' <span class="muted">{esc(detail)}</span>' if detail else ""
        return f'<td class="name" title="{esc(title)}">{esc(label)}{extra}{badges}</td>'

    ref_cells = [
        name_cell(ref_label, f"({os.path.basename(compare['reference'])})", compare["reference"]),
        f"<td>{fmt_bytes(compare['reference_file_bytes'])}</td>",
        *['<td class="muted">ref</td>' for _ in present],
        f"<td>{fmt_ms(ref_p50)}</td>",
        f"<td>{fmt_ms(ref_latency.get('p99'))}</td>",
        "<td>1.00×</td>" if ref_p50 else f"<td>{DASH}</td>",
    ]
    if show_energy:
        ref_cells.append(f"<td>{fmt_number(compare.get('reference_energy_mj'), 2, 'mJ')}</td>")
    rows = [f'<tr class="ref">{"".join(ref_cells)}</tr>']
    for variant in compare["variants"]:
        latency = variant["latency_ms"] or {}
        ratio = variant["size_ratio"]
        if ratio is None and variant["file_bytes"] and compare["reference_file_bytes"]:
            ratio = variant["file_bytes"] / compare["reference_file_bytes"]
        ratio_html = f'<span class="sub">{ratio:.2f}×</span>' if ratio is not None else ""
        cells = [
            name_cell(variant["name"], "", variant["path"]),
            f"<td>{fmt_bytes(variant['file_bytes'])}{ratio_html}</td>",
            *[f"<td>{fmt_metric(m, variant['metrics'].get(m))}</td>" for m in present],
            f"<td>{fmt_ms(latency.get('p50'))}</td>",
            f"<td>{fmt_ms(latency.get('p99'))}</td>",
            f"<td>{_speedup(ref_p50, latency.get('p50'))}</td>",
        ]
        if show_energy:
            if variant["energy_mj"] is not None:
                cells.append(f"<td>{fmt_number(variant['energy_mj'], 2, 'mJ')}</td>")
            else:
                cells.append(f'<td class="muted" title="{esc(variant["energy_reason"])}">not measured</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<div class="table-wrap"><table class="compare"><thead><tr>{"".join(head)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _energy_notice(compare: dict[str, Any]) -> str:
    missing = [v for v in compare["variants"] if v["energy_mj"] is None]
    if not missing:
        return ""
    reasons: dict[str, list[str]] = {}
    for variant in missing:
        reasons.setdefault(str(variant["energy_reason"]), []).append(variant["name"])
    if len(reasons) == 1 and len(missing) == len(compare["variants"]):
        text = esc(next(iter(reasons)))
    else:
        text = "; ".join(f"{esc(', '.join(names))}: {esc(reason)}" for reason, names in reasons.items())
    return f'<div class="notice"><strong>Energy not measured:</strong> {text}</div>'


def _tradeoff_block(section: dict[str, Any], pid: str) -> str:
    compare = section["compare"]["_data"]
    metric = section["summary"]["accuracy_metric"]
    label = METRIC_LABELS.get(metric, metric)
    percent = metric in PERCENT_METRICS
    figs = []
    for cost, what in (("size", "file size"), ("latency", "latency")):
        points = compare_points(compare, metric, cost, section["reference_label"])
        if len(points) < 1:
            figs.append(f'<p class="note">No {what} measured for these models: {esc(what)} plot omitted.</p>')
            continue
        front = [p["name"] for p in points if p["pareto"]]
        figs.append(
            figure(
                plots.tradeoff(f"{pid}-{cost}", points, cost, label, percent),
                f"{pid}-{cost}",
                f"<strong>{esc(label)} against {what}.</strong> Up and left is better; orange staircase and "
                f"rings: the Pareto front ({esc(', '.join(front))}).",
            )
        )
    return "<h3>Accuracy against size and latency</h3>" + f'<div class="plots">{"".join(figs)}</div>'


def layers_block(section: dict[str, Any], limit: int = 10) -> str:
    compare = section["compare"]["_data"]
    cards = []
    for variant in compare["variants"]:
        layers = [layer for layer in variant["layers"] if layer["sqnr_db"] is not None]
        layers.sort(key=lambda layer: layer["sqnr_db"])
        if not layers:
            cards.append(
                f'<div class="card"><h4>{esc(variant["name"])}</h4><p class="note">No per-layer SQNR in this result.</p></div>'
            )
            continue
        shown = layers[:limit]
        best = max(max(layer["sqnr_db"] for layer in shown), 1.0)
        rows = []
        for layer in shown:
            value = layer["sqnr_db"]
            width = max(2, round(40 * max(value, 0.0) / best))
            low = " low" if value < 20 else ""
            rows.append(
                f'<tr><td class="name tensor" title="{esc(layer["tensor"])}">{breakable(shorten(layer["tensor"], 90))}</td>'
                f'<td class="name muted" title="{esc(layer["op_type"])}">{esc(layer["op_type"])}</td><td>{value:.1f} dB</td>'
                f'<td class="name"><span class="bar{low}" style="width:{width}px"></span></td></tr>'
            )
        cards.append(
            f'<div class="card"><h4>{esc(variant["name"])} <span class="muted">— {len(shown)} of '
            f"{len(variant['layers'])} layers</span></h4><table class=\"fixed\"><colgroup><col><col style=\"width:128px\">"
            '<col style="width:70px"><col style="width:64px"></colgroup><thead><tr><th class="name">tensor</th>'
            f'<th class="name">op</th><th>SQNR</th><th></th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
        )
    return (
        "<h3>Worst layers by SQNR</h3>"
        '<p class="note">Each layer\'s output compared with the float model\'s, worst first; red bars are under 20 dB.</p>'
        f'<div class="layers">{"".join(cards)}</div>'
    )


def render_compare(section: dict[str, Any], pid: str) -> str:
    """A ``compare`` section: what was compared, the variants table, trade-off plots, worst layers."""
    compare = section["compare"]["_data"]
    rows = [
        ("reference", esc(compare["reference"])),
        ("data", esc(compare["data"] or DASH)),
        ("samples", esc(f"{compare['samples']:,}")),
        ("task", esc(compare["task"])),
    ]
    metric_names = [m for m in TASK_METRICS[compare["task"]] if any(m in v["metrics"] for v in compare["variants"])]
    legend = "; ".join(f"<strong>{esc(METRIC_LABELS[m])}</strong>: {esc(METRIC_HELP[m])}" for m in metric_names)
    return (
        f'<section class="report-section compare" id="{esc(pid)}"><h2>{esc(section["title"])}</h2>'
        f"{definition_list(rows)}{_energy_notice(compare)}<h3>Variants</h3>{_compare_table(section)}"
        f'<p class="note">{legend}. ★ size / ★ latency: on the Pareto front of accuracy against that cost.</p>'
        f"{_tradeoff_block(section, pid)}{layers_block(section)}</section>"
    )

