"""The sweep's page: per board, every model's accuracy, size, latency and energy, its Pareto
front over all four, and the recommended pick under the given constraints.

Same page frame, stylesheet and plots as the other reports (``edgeq.report``); one section per
board (or one "no board" section when the sweep ran without boards).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from edgeq import __version__
from edgeq.fleet.pareto import Constraints, axes_for
from edgeq.metrics import METRICS
from edgeq.report import plots
from edgeq.report.analysis import pareto_front
from edgeq.report.markup import esc, figure, muted
from edgeq.report.styles import CSP, CSS

_AXIS_NAMES = {"accuracy": "accuracy", "file_bytes": "size", "latency_ms": "latency", "energy_mj": "energy"}


def _cell(value: Any, fmt: str) -> str:
    return esc(format(value, fmt)) if isinstance(value, (int, float)) else muted("—")


def _plots(pid: str, rows: list[dict[str, Any]], metric: str) -> str:
    label = METRICS[metric].label if metric in METRICS else metric
    percent = bool(metric in METRICS and METRICS[metric].percent)
    figs = []
    for cost, key in (("size", "file_bytes"), ("latency", "latency_ms")):
        usable = [(i, r) for i, r in enumerate(rows) if isinstance(r.get(key), (int, float))]
        if len(usable) < 2:
            continue
        points = [{"name": r["name"], "x": float(r[key]), "y": float(r["accuracy"]), "reference": False, "index": i}
                  for i, r in usable]
        for point, on in zip(points, pareto_front([(p["x"], p["y"]) for p in points]), strict=True):
            point["pareto"] = on
        svg = plots.tradeoff(f"{pid}-{cost}", points, cost, label, percent)
        figs.append(figure(svg, f"{pid}-{cost}", esc(f"{label} against {cost}; the line is this plane's front")))
    return f'<div class="plots">{"".join(figs)}</div>' if figs else ""


def _section(pid: str, board: str | None, rows: list[dict[str, Any]], constraints: Constraints) -> str:
    measured = [r for r in rows if r.get("pareto") is not None and "error" not in r and r.get("accuracy") is not None]
    metric = next((r["accuracy_metric"] for r in measured if r.get("accuracy_metric")), "cosine")
    label = METRICS[metric].label if metric in METRICS else metric
    axes = axes_for([r for r in measured if board is None or r.get("latency_ms") is not None])
    chosen = next((r for r in rows if r.get("pick")), None)
    title = f"Board {board} ({rows[0].get('target')})" if board else "No board: accuracy and size only"
    if chosen is not None:
        verdict = (f"Recommended under {esc(constraints.describe())}: <b>{esc(chosen['name'])}</b> — {esc(label)} "
                   f"{chosen['accuracy']:.5f}, {chosen['file_bytes'] / 1e6:.2f} MB")
        if chosen.get("latency_ms") is not None:
            verdict += f", p50 {chosen['latency_ms']:.3f} ms"
        if chosen.get("energy_mj") is not None:
            verdict += f", {chosen['energy_mj']:.3f} mJ/inference"
    else:
        verdict = f"Nothing measured here meets {esc(constraints.describe())}."
    head = ("model", label, "size (MB)", "latency p50 (ms)", "energy (mJ)", "Pareto", "pick", "note")
    body = []
    for r in rows:
        note = r.get("error") or (f"energy: {r['energy_reason']}" if r.get("energy_reason") else "")
        body.append(
            "<tr" + (' class="pick"' if r.get("pick") else "") + ">"
            f"<td class=\"name\">{esc(r['name'])}</td><td>{_cell(r.get('accuracy'), '.5f')}</td>"
            f"<td>{_cell((r.get('file_bytes') or 0) / 1e6 if r.get('file_bytes') else None, '.2f')}</td>"
            f"<td>{_cell(r.get('latency_ms'), '.3f')}</td><td>{_cell(r.get('energy_mj'), '.3f')}</td>"
            f"<td>{'✓' if r.get('pareto') else ''}</td><td>{'★' if r.get('pick') else ''}</td>"
            f"<td>{esc(note)}</td></tr>"
        )
    front_over = " × ".join(_AXIS_NAMES[a] for a in axes) or "nothing measured"
    return (
        f'<section class="report-section" id="{esc(pid)}"><h2>{esc(title)}</h2><p>{verdict}</p>'
        f"<p class=\"muted\">Pareto front over {esc(front_over)}: no other model here is at least as good on all of "
        "them and better on one.</p>"
        f'<div class="table-wrap"><table class="compare"><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>{_plots(pid, measured, metric)}</section>"
    )


def render_sweep(rows: list[dict[str, Any]], constraints: Constraints) -> str:
    boards: dict[str | None, list[dict[str, Any]]] = {}
    for row in rows:
        boards.setdefault(row.get("board"), []).append(row)
    sections = "".join(_section(f"b{i}", board, group, constraints) for i, (board, group) in enumerate(boards.items(), start=1))
    title = f"edgeq sweep: {len({r['key'] for r in rows})} configurations on {len([b for b in boards if b])} board(s)"
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{esc(title)}</title><style>{CSS}tr.pick td{{background:#fff7ed;font-weight:600}}</style></head><body>"
        f'<header class="page"><h1>{esc(title)}</h1><div class="sub">edgeq {esc(__version__)} · generated {created}'
        "</div></header>"
        f"<main>{sections}</main><footer>The same rows are in results.jsonl beside this page.</footer></body></html>\n"
    )


def write_sweep_report(rows: list[dict[str, Any]], constraints: Constraints, path: str | Path) -> Path:
    """Render and write the page (``path`` is usually an ``OutputSet`` temporary)."""
    Path(path).write_text(render_sweep(rows, constraints), encoding="utf-8")
    return Path(path)
