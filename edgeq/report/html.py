"""The report page: one self-contained HTML file rendered from a ``Report`` document.

No scripts, no fonts or styles from elsewhere, plots inlined as SVG; a Content-Security-Policy
meta tag forbids any request so the page reads the same offline, in a CI artifact or in an
e-mail attachment. Every piece of text from a result (model paths, layer names, reasons) passes
through ``escape`` on its way in.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from html import escape
from typing import Any

from edgeq.report import plots
from edgeq.report.analysis import (
    METRIC_LABELS,
    PERCENT_METRICS,
    TASK_METRICS,
    compare_points,
)
from edgeq.report.document import Report

DASH = "—"

CSS = """
:root{--ink:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bg:#f3f4f6;--card:#fff;--blue:#2563eb;
--orange:#ea580c;--warn-bg:#fff7ed;--warn:#9a3412;--good:#15803d;--bad:#b91c1c}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;
color:var(--ink);background:var(--bg)}
header.page{background:#111827;color:#f9fafb;padding:18px 32px}
header.page h1{margin:0 0 4px;font-size:22px;font-weight:650}
header.page .sub{color:#cbd5e1;font-size:13px}
header.page nav{margin-top:10px;display:flex;flex-wrap:wrap;gap:6px 14px;font-size:13px}
header.page nav a{color:#bfdbfe;text-decoration:none}
main{max-width:1320px;margin:0 auto;padding:8px 28px 40px}
section.report-section{background:var(--card);border:1px solid var(--line);border-radius:10px;
padding:18px 24px 22px;margin:18px 0}
h2{margin:0 0 10px;font-size:19px}
h3{font-size:15px;margin:24px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h4{font-size:13.5px;margin:0 0 6px}
dl.meta{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:3px 28px;margin:0}
dl.meta div{display:flex;gap:10px;min-width:0}
dl.meta dt{color:var(--muted);flex:0 0 112px}
dl.meta dd{margin:0;overflow-wrap:anywhere}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;margin:16px 0 6px}
.tile{border:1px solid var(--line);border-radius:8px;padding:9px 14px;background:#fafafa}
.tile .value{font-size:23px;font-weight:650;font-variant-numeric:tabular-nums;white-space:nowrap}
.tile .unit{font-size:14px;font-weight:500;color:var(--muted);margin-left:3px}
.tile .label{color:var(--muted);font-size:12px}
.tile.na .value{font-size:15px;font-weight:600;color:var(--warn);white-space:normal}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:4px 0}
th,td{padding:5px 11px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
thead th{font-weight:600;color:var(--muted);font-size:12px;vertical-align:bottom;border-bottom:2px solid var(--line);
white-space:normal;min-width:56px}
table.compare thead th{max-width:104px}
td .sub{color:var(--muted);font-size:12px;margin-left:6px}
table.fixed{table-layout:fixed;width:100%}
table.fixed td.name{overflow:hidden;text-overflow:ellipsis;max-width:none}
th.name,td.name{text-align:left}
td.name{max-width:420px;overflow:hidden;text-overflow:ellipsis}
tr.ref td{background:#f9fafb}
td.muted,span.muted{color:var(--muted)}
.badge{display:inline-block;font-size:11px;padding:0 6px;border-radius:9px;margin-left:4px;
background:#ffedd5;color:var(--warn);font-weight:600}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:14px;margin-top:10px}
figure.plot{margin:0;border:1px solid var(--line);border-radius:8px;padding:10px 10px 8px}
figure.plot svg{display:block;margin:0 auto}
figure.plot figcaption{font-size:12.5px;color:var(--muted);margin-top:4px}
figure.plot figcaption strong{color:var(--ink)}
.notice{border-left:4px solid var(--orange);background:var(--warn-bg);padding:10px 14px;border-radius:4px;margin:12px 0}
.notice strong{color:var(--warn)}
p.note{color:var(--muted);font-size:12.5px;margin:6px 0}
.layers{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:14px}
.layers table{font-size:12.5px}
td.name.tensor{white-space:normal;overflow-wrap:break-word;text-overflow:clip}
.layers .card{border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.bar{display:inline-block;height:8px;border-radius:2px;background:var(--blue);vertical-align:middle}
.bar.low{background:var(--bad)}
footer{max-width:1320px;margin:0 auto;padding:0 28px 30px;color:var(--muted);font-size:12px}
@media print{body{background:#fff}section.report-section{break-inside:avoid-page}}
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


# --------------------------------------------------------------------------- formatting

def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fmt_ms(value: Any) -> str:
    if not _is_number(value) or not math.isfinite(value):
        return DASH
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_bytes(value: Any) -> str:
    if not _is_number(value) or value <= 0:
        return DASH
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            number = value / scale
            return f"{number:.2f} {unit}" if number < 10 else f"{number:.1f} {unit}"
    return f"{value:.0f} B"


def fmt_number(value: Any, digits: int = 2, unit: str = "") -> str:
    if not _is_number(value) or not math.isfinite(value):
        return DASH
    text = f"{value:,.{digits}f}"
    if text.startswith("-") and float(text.replace(",", "")) == 0:
        text = text[1:]  # noise around zero (energy above idle) is not "minus zero"
    return f"{text}{(' ' + unit) if unit else ''}"


def fmt_metric(name: str, value: Any) -> str:
    if not _is_number(value):
        return DASH
    if math.isnan(value):
        return DASH
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if name in PERCENT_METRICS:
        return f"{value * 100:.1f}%"
    if name == "sqnr_db":
        return f"{value:.1f} dB"
    if name == "kl_divergence":
        return f"{value:.2e}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"
    if name == "confident_samples":
        return f"{int(value):,}"
    return f"{value:.5f}"


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _dl(rows: Sequence[tuple[str, str]]) -> str:
    """A definition list; values are already-escaped HTML."""
    items = "".join(f"<div><dt>{_e(k)}</dt><dd>{v}</dd></div>" for k, v in rows)
    return f'<dl class="meta">{items}</dl>'


def _tile(label: str, value: str, unit: str = "", na: bool = False, title: str = "") -> str:
    cls = "tile na" if na else "tile"
    title_attr = f' title="{_e(title)}"' if title else ""
    unit_html = f'<span class="unit">{_e(unit)}</span>' if unit and not na else ""
    return (
        f'<div class="{cls}"{title_attr}><div class="value">{_e(value)}{unit_html}</div>'
        f'<div class="label">{_e(label)}</div></div>'
    )


def _figure(svg: str, plot_id: str, caption: str) -> str:
    """A plot in its frame; ``caption`` is already-escaped HTML."""
    return f'<figure class="plot" id="{_e(plot_id)}">{svg}<figcaption>{caption}</figcaption></figure>'


def _flat(mapping: Any, prefix: str = "") -> list[tuple[str, str]]:
    if not isinstance(mapping, dict):
        return [(prefix, str(mapping))]
    rows: list[tuple[str, str]] = []
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            rows.extend(_flat(value, name))
        elif isinstance(value, (list, tuple)):
            rows.append((name, ", ".join(str(v) for v in value)))
        else:
            rows.append((name, str(value)))
    return rows


def _muted(text: str) -> str:
    return f'<span class="muted">{_e(text)}</span>'


# --------------------------------------------------------------------------- profile

def _mhz(value: Any) -> str:
    return f"{value:,.0f} MHz" if _is_number(value) else str(value)


def _clocks_text(clocks: Any) -> str:
    """The runtime's clock readings (gpu_mhz, gpu_max_mhz, emc_mhz, cpu_mhz per core) in one line."""
    if not isinstance(clocks, dict):
        return str(clocks)
    rest = dict(clocks)
    parts = []
    if "gpu_mhz" in rest:
        gpu = f"GPU {_mhz(rest.pop('gpu_mhz'))}"
        if "gpu_max_mhz" in rest:
            gpu += f" (max {_mhz(rest.pop('gpu_max_mhz'))})"
        parts.append(gpu)
    if "emc_mhz" in rest:
        parts.append(f"memory {_mhz(rest.pop('emc_mhz'))}")
    cpu = rest.pop("cpu_mhz", None)
    if isinstance(cpu, list) and cpu and all(_is_number(c) for c in cpu):
        low, high = min(cpu), max(cpu)
        span = _mhz(low) if low == high else f"{low:,.0f}–{_mhz(high)}"
        parts.append(f"CPU {span} ({len(cpu)} cores)")
    elif cpu is not None:
        rest["cpu_mhz"] = cpu
    parts.extend(f"{k}: {v}" for k, v in _flat(rest))
    return "; ".join(parts)


def _profile_header(section: dict[str, Any]) -> str:
    bench = section["benchmark"]
    device = bench["device"]
    versions = bench["versions"]
    model = bench["model"]
    backend = bench["backend"] + (f" ({', '.join(bench['providers'])})" if bench["providers"] else "")
    cpu = device.get("cpu") or DASH
    if device.get("cpu_count"):
        cpu = f"{cpu} × {device['cpu_count']}" if cpu != DASH else f"{device['cpu_count']} cores"
    clocks = device.get("clocks")
    clocks_text = _e(_clocks_text(clocks)) if clocks else _muted("not readable on this device")
    run = [
        f"batch {bench['batch'] if bench['batch'] is not None else DASH}",
        f"{bench['warmup_iterations']} warm-up + {bench['iterations'] if bench['iterations'] is not None else DASH} measured iterations",
        f"threads {bench['threads'] if bench['threads'] is not None else 'default'}",
    ]
    rows = [
        ("model", _e(model)),
        ("target", _e(section["target"]) if section.get("target") else _muted("not given")),
        ("backend", _e(backend)),
        ("device", _e(" · ".join(str(device[k]) for k in ("jetson_model", "hostname", "machine") if device.get(k)) or DASH)),
        ("CPU", _e(cpu)),
        ("power mode", _e(device["power_mode"]) if device.get("power_mode") else _muted("not readable on this device")),
        ("clocks", clocks_text),
        ("run", _e(", ".join(run))),
        ("versions", _e(", ".join(f"{k} {v}" for k, v in versions.items() if v)) or DASH),
        ("python", _e(device.get("python") or DASH)),
    ]
    shown = {"jetson_model", "hostname", "machine", "cpu", "cpu_count", "power_mode", "clocks", "python"}
    rows += [(k, _e(v)) for k, v in _flat({k: v for k, v in device.items() if k not in shown})]
    return _dl(rows)


def _profile_tiles(section: dict[str, Any]) -> str:
    bench = section["benchmark"]
    summary = section["summary"]
    energy = bench["energy"]
    tiles = [
        _tile("latency p50", fmt_ms(bench["latency_ms"]["p50"]), "ms"),
        _tile("latency p99", fmt_ms(bench["latency_ms"]["p99"]), "ms"),
        _tile("throughput, samples", fmt_number(bench["throughput_per_s"], 1), "/s"),
    ]
    if energy["available"]:
        tiles += [
            _tile("energy per inference", fmt_number(energy["energy_per_inference_mj"], 2), "mJ"),
            _tile("above idle per inference", fmt_number(energy["energy_above_idle_per_inference_mj"], 2), "mJ"),
            _tile("average power", fmt_number(energy["average_power_w"], 2), "W"),
        ]
    else:
        tiles.append(_tile("energy per inference", "not measured", na=True, title=str(energy["reason"])))
    drift = summary.get("latency_drift_percent")
    if drift is not None:
        tiles.append(_tile("drift, last vs first 10%", f"{drift:+.1f}", "%"))
    return f'<div class="tiles">{"".join(tiles)}</div>'


def _latency_block(section: dict[str, Any], pid: str) -> str:
    bench = section["benchmark"]
    lat = bench["latency_ms"]
    keys = ("min", "mean", "std", "p50", "p90", "p95", "p99", "max")
    head = "".join(f"<th>{k}</th>" for k in keys)
    cells = "".join(f"<td>{fmt_ms(lat.get(k))}</td>" for k in keys)
    table = (
        f'<div class="table-wrap"><table><thead><tr><th class="name">latency (ms)</th>{head}'
        f"<th>throughput (/s)</th></tr></thead><tbody><tr><td class=\"name\">batch {bench['batch'] or 1}</td>"
        f"{cells}<td>{fmt_number(bench['throughput_per_s'], 1)}</td></tr></tbody></table></div>"
    )
    trace = bench["trace_ms"]
    warm = bench["warmup_iterations"]
    measured = trace[warm:]
    figs = []
    if measured:
        figs.append(
            _figure(
                plots.latency_distribution(f"{pid}-dist", measured, lat),
                f"{pid}-dist",
                f"<strong>Latency distribution</strong> of the {len(measured):,} measured iterations "
                "(bars, left axis) and their cumulative share (line, right axis).",
            )
        )
        drift = section["summary"].get("latency_drift_percent")
        drift_text = (
            f" The median of the last tenth is {drift:+.1f}% against the first tenth"
            + (" — a steady rise like this comes from thermal throttling or a competing load." if drift > 5 else ".")
            if drift is not None
            else ""
        )
        first = f" The first iteration took {fmt_ms(trace[0])} ms." if trace else ""
        figs.append(
            _figure(
                plots.latency_trace(f"{pid}-trace", trace, warm, lat.get("p50")),
                f"{pid}-trace",
                f"<strong>Every iteration in order.</strong> Grey: {warm} warm-up iterations, not counted."
                f"{_e(first)}{_e(drift_text)}",
            )
        )
        plot_html = f'<div class="plots">{"".join(figs)}</div>'
    else:
        plot_html = '<p class="note">No per-iteration trace in this result: plots omitted.</p>'
    return f"<h3>Latency</h3>{table}{plot_html}"


def _ops_block(section: dict[str, Any], pid: str) -> str:
    ops = section["benchmark"]["ops"]
    if not ops:
        return (
            '<h3>Top ops by time</h3><p class="note">This result has no per-op timing '
            "(the backend's profiler was not enabled for this run).</p>"
        )
    top = ops[:15]
    total = sum(op["total_ms"] for op in ops) or 1.0
    rows = "".join(
        f'<tr><td class="name tensor" title="{_e(op["name"])}">{_breakable(_shorten(op["name"], 90)) or DASH}</td>'
        f'<td class="name">{_e(op["op_type"])}</td><td>{op["count"]:,}</td>'
        f'<td>{fmt_ms(op["total_ms"] / op["count"] if op["count"] else None)}</td>'
        f"<td>{(op['share'] if op['share'] is not None else op['total_ms'] / total) * 100:.1f}%</td></tr>"
        for op in top
    )
    table = (
        '<table class="fixed"><colgroup><col><col style="width:112px"><col style="width:64px">'
        '<col style="width:84px"><col style="width:64px"></colgroup><thead><tr><th class="name">node</th>'
        '<th class="name">op type</th><th>calls</th><th>per call (ms)</th><th>share</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )
    fig = _figure(
        plots.top_ops(f"{pid}-ops", ops),
        f"{pid}-ops",
        "<strong>Where the time goes:</strong> the slowest ops from a separate profiling pass "
        "(so the profiler never slows the timed runs), with their share of all op time.",
    )
    return f'<h3>Top ops by time</h3><div class="plots">{fig}<div>{table}</div></div>'


def _energy_block(section: dict[str, Any], pid: str) -> str:
    energy = section["benchmark"]["energy"]
    if not energy["available"]:
        return ""  # the notice under the headline numbers gives the reason
    rows = [
        ("per inference", _e(fmt_number(energy["energy_per_inference_mj"], 3, "mJ")) + " total"),
        ("above idle", _e(fmt_number(energy["energy_above_idle_per_inference_mj"], 3, "mJ")) + " per inference"),
        ("average power", _e(fmt_number(energy["average_power_w"], 3, "W"))),
        ("idle power", _e(fmt_number(energy["idle_power_w"], 3, "W"))),
        ("window", _e(fmt_number(energy["window_s"], 2, "s"))),
        ("source", _e(energy.get("source") or DASH)),
        ("rails", _e(", ".join(energy["rails"]) or DASH)),
        ("sample period", _e(fmt_number(energy["sample_period_ms"], 1, "ms"))),
    ]
    warn = ""
    if energy["window_too_short"]:
        warn = (
            '<div class="notice"><strong>Measured window too short.</strong> It spans fewer than ten sensor '
            "periods, so these energy numbers are rough: measure longer (--duration).</div>"
        )
    trace = energy["trace"]
    if trace["t_s"]:
        fig = _figure(
            plots.power_trace(f"{pid}-power", energy),
            f"{pid}-power",
            "<strong>Power over the run.</strong> Grey band between dotted lines: the measured window (energy is integrated "
            "there); dashed: idle power measured before the run; shaded: energy above idle.",
        )
        body = f'<div class="plots">{fig}<div>{_dl(rows)}</div></div>'
    else:
        body = _dl(rows) + '<p class="note">No power samples in this result: trace plot omitted.</p>'
    return f"<h3>Power and energy</h3>{warn}{body}"


def render_profile(section: dict[str, Any], pid: str) -> str:
    energy = section["benchmark"]["energy"]
    notice = ""
    if not energy["available"]:
        notice = f'<div class="notice"><strong>Energy not measured:</strong> {_e(energy["reason"])}</div>'
    return (
        f'<section class="report-section profile" id="{_e(pid)}"><h2>{_e(section["title"])}</h2>'
        f"{_profile_header(section)}{_profile_tiles(section)}{notice}"
        f"{_latency_block(section, pid)}{_ops_block(section, pid)}{_energy_block(section, pid)}</section>"
    )


# --------------------------------------------------------------------------- compare

def _speedup(ref: Any, value: Any) -> str:
    if not _is_number(ref) or not _is_number(value) or value <= 0:
        return DASH
    return f"{ref / value:.2f}×"


def _shorten(text: str, keep: int) -> str:
    """Keep the end of a long tensor or node name: that is the part that tells layers apart."""
    return text if len(text) <= keep else "…" + text[-(keep - 1) :]


def _breakable(text: str) -> str:
    """Escaped text that wraps after a '/' or '.' before it wraps anywhere else."""
    return "".join(_e(ch) + ("<wbr>" if ch in "/." else "") for ch in text)


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
    head += [f"<th>{_e(METRIC_LABELS.get(m, m))}</th>" for m in present]
    head += ["<th>latency p50 (ms)</th>", "<th>latency p99 (ms)</th>", "<th>speed-up vs ref</th>"]
    if show_energy:
        head.append("<th>energy / inference</th>")

    def name_cell(label: str, detail: str, title: str) -> str:
        badges = "".join(
            f'<span class="badge" title="on the accuracy-vs-{cost} Pareto front">★ {cost}</span>'
            for cost in ("size", "latency")
            if label in fronts[cost]
        )
        extra = f' <span class="muted">{_e(detail)}</span>' if detail else ""
        return f'<td class="name" title="{_e(title)}">{_e(label)}{extra}{badges}</td>'

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
                cells.append(f'<td class="muted" title="{_e(variant["energy_reason"])}">not measured</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<div class="table-wrap"><table class="compare"><thead><tr>{"".join(head)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


METRIC_HELP = {
    "top1_agreement": "share of samples whose top-1 class matches the reference",
    "top5_overlap": "mean overlap of the top-5 classes with the reference's",
    "confident_top1_agreement": "top-1 agreement on samples where the reference is confident",
    "kl_divergence": "KL divergence of the output distribution from the reference's (lower is better)",
    "cosine": "cosine similarity of the raw outputs with the reference's",
    "sqnr_db": "signal-to-quantization-noise ratio of the outputs, in dB (higher is better)",
    "embedding_cosine_mean": "mean cosine of pooled sentence embeddings with the reference's",
    "embedding_cosine_p5": "5th percentile of that cosine: the worst 5% of sentences",
}


def _energy_notice(compare: dict[str, Any]) -> str:
    missing = [v for v in compare["variants"] if v["energy_mj"] is None]
    if not missing:
        return ""
    reasons: dict[str, list[str]] = {}
    for variant in missing:
        reasons.setdefault(str(variant["energy_reason"]), []).append(variant["name"])
    if len(reasons) == 1 and len(missing) == len(compare["variants"]):
        text = _e(next(iter(reasons)))
    else:
        text = "; ".join(f"{_e(', '.join(names))}: {_e(reason)}" for reason, names in reasons.items())
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
            figs.append(f'<p class="note">No {what} measured for these models: {_e(what)} plot omitted.</p>')
            continue
        front = [p["name"] for p in points if p["pareto"]]
        figs.append(
            _figure(
                plots.tradeoff(f"{pid}-{cost}", points, cost, label, percent),
                f"{pid}-{cost}",
                f"<strong>{_e(label)} against {what}.</strong> Up and left is better; orange staircase and "
                f"rings: the Pareto front ({_e(', '.join(front))}).",
            )
        )
    return "<h3>Accuracy against size and latency</h3>" + f'<div class="plots">{"".join(figs)}</div>'


def _layers_block(section: dict[str, Any], limit: int = 10) -> str:
    compare = section["compare"]["_data"]
    cards = []
    for variant in compare["variants"]:
        layers = [layer for layer in variant["layers"] if layer["sqnr_db"] is not None]
        layers.sort(key=lambda layer: layer["sqnr_db"])
        if not layers:
            cards.append(
                f'<div class="card"><h4>{_e(variant["name"])}</h4><p class="note">No per-layer SQNR in this result.</p></div>'
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
                f'<tr><td class="name tensor" title="{_e(layer["tensor"])}">{_breakable(_shorten(layer["tensor"], 90))}</td>'
                f'<td class="name muted" title="{_e(layer["op_type"])}">{_e(layer["op_type"])}</td><td>{value:.1f} dB</td>'
                f'<td class="name"><span class="bar{low}" style="width:{width}px"></span></td></tr>'
            )
        cards.append(
            f'<div class="card"><h4>{_e(variant["name"])} <span class="muted">— {len(shown)} of '
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
    compare = section["compare"]["_data"]
    rows = [
        ("reference", _e(compare["reference"])),
        ("data", _e(compare["data"] or DASH)),
        ("samples", _e(f"{compare['samples']:,}")),
        ("task", _e(compare["task"])),
    ]
    metric_names = [m for m in TASK_METRICS[compare["task"]] if any(m in v["metrics"] for v in compare["variants"])]
    legend = "; ".join(f"<strong>{_e(METRIC_LABELS[m])}</strong>: {_e(METRIC_HELP[m])}" for m in metric_names)
    return (
        f'<section class="report-section compare" id="{_e(pid)}"><h2>{_e(section["title"])}</h2>'
        f"{_dl(rows)}{_energy_notice(compare)}<h3>Variants</h3>{_compare_table(section)}"
        f'<p class="note">{legend}. ★ size / ★ latency: on the Pareto front of accuracy against that cost.</p>'
        f"{_tradeoff_block(section, pid)}{_layers_block(section)}</section>"
    )


# --------------------------------------------------------------------------- page

RENDERERS: dict[str, Callable[[dict[str, Any], str], str]] = {
    "profile": render_profile,
    "compare": render_compare,
}


def render_html(report: Report) -> str:
    """The whole page as one string."""
    body = []
    nav = []
    for i, section in enumerate(report.sections, start=1):
        pid = f"s{i}"
        body.append(RENDERERS[section["kind"]](section, pid))
        nav.append(f'<a href="#{pid}">{_e(section["title"])}</a>')
    nav_html = f"<nav>{''.join(nav)}</nav>" if len(nav) > 1 else ""
    json_note = (
        "The same numbers are available as JSON (schema "
        f"{_e(report.schema_type)} version {report.schema_version}) when the report is written with --json."
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="edgeq {_e(report.edgeq_version)}">'
        f"<title>{_e(report.title)}</title><style>{CSS}</style></head><body>"
        f'<header class="page"><h1>{_e(report.title)}</h1><div class="sub">edgeq {_e(report.edgeq_version)} · '
        f"generated {_e(report.created_utc)}</div>{nav_html}</header>"
        f"<main>{''.join(body)}</main><footer>{json_note}</footer></body></html>\n"
    )


def report_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"
