"""The profile section of the report page: where a benchmark ran, its latency, top ops and energy."""

from __future__ import annotations

from typing import Any

from edgeq.report import plots
from edgeq.report.formatting import DASH, fmt_ms, fmt_number, is_number
from edgeq.report.generation_html import decoder_block, decoder_tiles, token_times
from edgeq.report.inputs import LATENCY_KEYS
from edgeq.report.markup import breakable, definition_list, esc, figure, flat_items, muted, shorten, tile


def _mhz(value: Any) -> str:
    return f"{value:,.0f} MHz" if is_number(value) else str(value)


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
    if isinstance(cpu, list) and cpu and all(is_number(c) for c in cpu):
        low, high = min(cpu), max(cpu)
        span = _mhz(low) if low == high else f"{low:,.0f}–{_mhz(high)}"
        parts.append(f"CPU {span} ({len(cpu)} cores)")
    elif cpu is not None:
        rest["cpu_mhz"] = cpu
    parts.extend(f"{k}: {v}" for k, v in flat_items(rest))
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
    clocks_text = esc(_clocks_text(clocks)) if clocks else muted("not readable on this device")
    run = [
        f"batch {bench['batch'] if bench['batch'] is not None else DASH}",
        f"{bench['warmup_iterations']} warm-up + {bench['iterations'] if bench['iterations'] is not None else DASH} measured iterations",
        f"threads {bench['threads'] if bench['threads'] is not None else 'default'}",
    ]
    rows = [
        ("model", esc(model)),
        ("target", esc(section["target"]) if section.get("target") else muted("not given")),
        ("backend", esc(backend)),
        ("device", esc(" · ".join(str(device[k]) for k in ("jetson_model", "hostname", "machine") if device.get(k)) or DASH)),
        ("CPU", esc(cpu)),
        ("power mode", esc(device["power_mode"]) if device.get("power_mode") else muted("not readable on this device")),
        ("clocks", clocks_text),
        ("run", esc(", ".join(run))),
        ("versions", esc(", ".join(f"{k} {v}" for k, v in versions.items() if v)) or DASH),
        ("python", esc(device.get("python") or DASH)),
    ]
    shown = {"jetson_model", "hostname", "machine", "cpu", "cpu_count", "power_mode", "clocks", "python"}
    rows += [(k, esc(v)) for k, v in flat_items({k: v for k, v in device.items() if k not in shown})]
    return definition_list(rows)


def _profile_tiles(section: dict[str, Any]) -> str:
    bench = section["benchmark"]
    summary = section["summary"]
    energy = bench["energy"]
    tiles = [
        tile("latency p50", fmt_ms(bench["latency_ms"]["p50"]), "ms"),
        tile("latency p99", fmt_ms(bench["latency_ms"]["p99"]), "ms"),
        tile("throughput, samples", fmt_number(bench["throughput_per_s"], 1), "/s"),
    ]
    if energy["available"]:
        tiles += [
            tile("energy per inference", fmt_number(energy["energy_per_inference_mj"], 2), "mJ"),
            tile("above idle per inference", fmt_number(energy["energy_above_idle_per_inference_mj"], 2), "mJ"),
            tile("average power", fmt_number(energy["average_power_w"], 2), "W"),
        ]
    else:
        tiles.append(tile("energy per inference", "not measured", na=True, title=str(energy["reason"])))
    drift = summary.get("latency_drift_percent")
    if drift is not None:
        tiles.append(tile("drift, last vs first 10%", f"{drift:+.1f}", "%"))
    return f'<div class="tiles">{"".join(tiles)}</div>'


def _latency_block(section: dict[str, Any], pid: str) -> str:
    bench = section["benchmark"]
    lat = bench["latency_ms"]
    head = "".join(f"<th>{k}</th>" for k in LATENCY_KEYS)
    cells = "".join(f"<td>{fmt_ms(lat.get(k))}</td>" for k in LATENCY_KEYS)
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
            figure(
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
            figure(
                plots.latency_trace(f"{pid}-trace", trace, warm, lat.get("p50")),
                f"{pid}-trace",
                f"<strong>Every iteration in order.</strong> Grey: {warm} warm-up iterations, not counted."
                f"{esc(first)}{esc(drift_text)}",
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
        f'<tr><td class="name tensor" title="{esc(op["name"])}">{breakable(shorten(op["name"], 90)) or DASH}</td>'
        f'<td class="name">{esc(op["op_type"])}</td><td>{op["count"]:,}</td>'
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
    fig = figure(
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
        ("per inference", esc(fmt_number(energy["energy_per_inference_mj"], 3, "mJ")) + " total"),
        ("above idle", esc(fmt_number(energy["energy_above_idle_per_inference_mj"], 3, "mJ")) + " per inference"),
        ("average power", esc(fmt_number(energy["average_power_w"], 3, "W"))),
        ("idle power", esc(fmt_number(energy["idle_power_w"], 3, "W"))),
        ("window", esc(fmt_number(energy["window_s"], 2, "s"))),
        ("source", esc(energy.get("source") or DASH)),
        ("rails", esc(", ".join(energy["rails"]) or DASH)),
        ("sample period", esc(fmt_number(energy["sample_period_ms"], 1, "ms"))),
    ]
    warn = ""
    if energy["window_too_short"]:
        warn = (
            '<div class="notice"><strong>Measured window too short.</strong> It spans fewer than ten sensor '
            "periods, so these energy numbers are rough: measure longer (--duration).</div>"
        )
    trace = energy["trace"]
    if trace["t_s"]:
        tokens = token_times(section["benchmark"])
        fig = figure(
            plots.power_trace(f"{pid}-power", energy, tokens),
            f"{pid}-power",
            "<strong>Power over the run.</strong> Grey band between dotted lines: the measured window (energy is integrated "
            "there); dashed: idle power measured before the run; shaded: energy above idle."
            + (f" Ticks: the {len(tokens):,} measured tokens, where each one ended." if tokens else ""),
        )
        body = f'<div class="plots">{fig}<div>{definition_list(rows)}</div></div>'
    else:
        body = definition_list(rows) + '<p class="note">No power samples in this result: trace plot omitted.</p>'
    return f"<h3>Power and energy</h3>{warn}{body}"


def render_profile(section: dict[str, Any], pid: str) -> str:
    """A ``profile`` section: header, headline tiles, then latency, top ops and energy."""
    energy = section["benchmark"]["energy"]
    decoder = section["benchmark"].get("decoder")
    notice = ""
    if not energy["available"]:
        notice = f'<div class="notice"><strong>Energy not measured:</strong> {esc(energy["reason"])}</div>'
    tiles = decoder_tiles(decoder) if decoder else ""
    generation = decoder_block(decoder, pid) if decoder else ""
    ops = "" if decoder and not section["benchmark"]["ops"] else _ops_block(section, pid)
    return (
        f'<section class="report-section profile" id="{esc(pid)}"><h2>{esc(section["title"])}</h2>'
        f"{_profile_header(section)}{_profile_tiles(section)}{tiles}{notice}"
        f"{generation}{_latency_block(section, pid)}{ops}{_energy_block(section, pid)}</section>"
    )

