"""The report's plots, drawn by matplotlib and returned as inline SVG text.

SVG keeps plots crisp at any zoom and leaves their text selectable, and inlining it keeps the
page one self-contained file. matplotlib is imported inside each function (``import edgeq``
stays light) and figures are built with ``matplotlib.figure.Figure`` directly, never pyplot, so
rendering a report neither opens windows nor changes the caller's backend.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

# One palette for every plot, matching the page's CSS.
INK = "#1f2937"
MUTED = "#6b7280"
GRID = "#e5e7eb"
BLUE = "#2563eb"
LIGHT_BLUE = "#bfdbfe"
ORANGE = "#ea580c"
GREEN = "#15803d"
RED = "#b91c1c"
WARMUP = "#9ca3af"
WINDOW = "#eceff3"
VARIANT_COLORS = ["#2563eb", "#db2777", "#0891b2", "#7c3aed", "#65a30d", "#ca8a04", "#dc2626", "#0d9488"]

_RC = {
    "svg.fonttype": "none",  # real <text>, selectable and searchable in the page
    "text.parse_math": False,  # layer names may contain '$'
    "font.family": "sans-serif",  # DejaVu Sans (shipped with matplotlib) first
    "font.size": 9.5,
    "axes.edgecolor": "#9ca3af",
    "axes.labelcolor": INK,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": GRID,
    "grid.linewidth": 0.8,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "xtick.labelcolor": INK,
    "ytick.labelcolor": INK,
    "legend.frameon": False,
    "legend.fontsize": 8.5,
}


def _rc(plot_id: str) -> Any:
    # The salt makes SVG-internal ids (clip paths, markers) unique per plot and reproducible.
    return {**_RC, "svg.hashsalt": plot_id}


@contextlib.contextmanager
def _figure(plot_id: str, width: float, height: float) -> Iterator[Any]:
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_rc(plot_id)):
        fig = Figure(figsize=(width, height), layout="constrained")
        yield fig


def _to_svg(fig: Any, plot_id: str, label: str) -> str:
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context(_rc(plot_id)):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    return _inline_svg(buffer.getvalue(), label)


_ID_ATTR = re.compile(r'\sid="([^"]+)"')
_REF = re.compile(r'#([A-Za-z_][\w.:-]*)')


def _inline_svg(svg: str, label: str) -> str:
    """Make a standalone SVG document fit for inlining in HTML.

    Drops the XML prolog and metadata, lets the page size the plot (width 100%, viewBox kept),
    and removes the ids nothing refers to, so several plots on one page share no ids.
    """
    from html import escape

    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    referenced = set(_REF.findall(svg))
    svg = _ID_ATTR.sub(lambda m: m.group(0) if m.group(1) in referenced else "", svg)
    match = re.match(r"<svg\b[^>]*>", svg)
    assert match is not None  # matplotlib always writes a root <svg> element
    root = match.group(0)
    width_pt = float(re.search(r'width="([\d.]+)pt"', root).group(1))  # type: ignore[union-attr]
    new_root = re.sub(r'\s(width|height)="[^"]*"', "", root)
    max_px = round(width_pt * 4 / 3)
    new_root = new_root.replace(
        "<svg",
        f'<svg role="img" aria-label="{escape(label)}" width="100%" style="max-width:{max_px}px;height:auto"',
        1,
    )
    return new_root + svg[len(root) :]


def _fmt_ms(value: float) -> str:
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def latency_distribution(plot_id: str, measured_ms: Sequence[float], latency: dict[str, Any]) -> str:
    """Histogram of measured latencies with the CDF on a second axis and p50/p90/p99 marked."""
    data = np.asarray(measured_ms, dtype=np.float64)
    with _figure(plot_id, 6.0, 3.2) as fig:
        ax = fig.add_subplot()
        bins = int(np.clip(np.sqrt(data.size) * 2, 10, 60))
        ax.hist(data, bins=bins, color=LIGHT_BLUE, edgecolor=BLUE, linewidth=0.6, label="iterations")
        ax.set_xlabel("latency per inference (ms)")
        ax.set_ylabel("iterations")
        cdf = ax.twinx()
        cdf.grid(False)
        cdf.spines["right"].set_visible(True)
        ordered = np.sort(data)
        cdf.plot(ordered, np.arange(1, ordered.size + 1) / ordered.size * 100, color=INK, linewidth=1.3, label="CDF")
        cdf.set_ylim(0, 101)
        cdf.set_ylabel("cumulative (%)")
        for key, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
            value = latency.get(key)
            if value is not None:
                ax.axvline(value, color=ORANGE, linestyle=style, linewidth=1.2, label=f"{key} {_fmt_ms(value)}")
        handles, labels = ax.get_legend_handles_labels()
        h2, l2 = cdf.get_legend_handles_labels()
        fig.legend(handles + h2, labels + l2, loc="outside upper center", ncols=5, fontsize=8)
        return _to_svg(fig, plot_id, "Latency histogram and cumulative distribution")


def _envelope(values: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Min/median/max per bucket of consecutive iterations, so long traces stay small in SVG."""
    edges = np.linspace(0, values.size, buckets + 1).astype(int)
    centers, lows, mids, highs = [], [], [], []
    for start, stop in itertools.pairwise(edges):
        if stop > start:
            chunk = values[start:stop]
            centers.append((start + stop - 1) / 2 + 1)
            lows.append(chunk.min())
            mids.append(np.median(chunk))
            highs.append(chunk.max())
    return np.array(centers), np.array(lows), np.array(mids), np.array(highs)


def latency_trace(plot_id: str, trace_ms: Sequence[float], warmup_iterations: int, p50: float | None) -> str:
    """Latency of every iteration in order: warm-up shaded, a rolling median to show drift.

    The y range follows the measured iterations, not the first warm-up ones (often several
    times slower), so a few percent of throttling stays visible; clipped peaks are labelled.
    """
    data = np.asarray(trace_ms, dtype=np.float64)
    x = np.arange(1, data.size + 1)
    measured = data[warmup_iterations:] if data.size > warmup_iterations else data
    with _figure(plot_id, 6.0, 3.2) as fig:
        ax = fig.add_subplot()
        if warmup_iterations > 0:
            ax.axvspan(0.5, warmup_iterations + 0.5, color=WARMUP, alpha=0.3, linewidth=0, label="warm-up (not counted)")
        if data.size > 3000:
            cx, lo, mid, hi = _envelope(data, 1000)
            ax.fill_between(cx, lo, hi, color=LIGHT_BLUE, linewidth=0, label="min–max per bucket")
            ax.plot(cx, mid, color=BLUE, linewidth=0.8, label="median per bucket")
        else:
            ax.plot(x, data, color=BLUE, linewidth=0.6, marker="o", markersize=1.8, alpha=0.75, label="iteration")
            window = max(5, measured.size // 25)
            if measured.size >= 2 * window and data.size > warmup_iterations:
                rolling = np.array(
                    [np.median(measured[max(0, i - window + 1) : i + 1]) for i in range(measured.size)]
                )
                ax.plot(x[warmup_iterations:], rolling, color=INK, linewidth=1.5, label=f"rolling median of {window}")
        if p50 is not None:
            ax.axhline(p50, color=ORANGE, linestyle="--", linewidth=1.1, label=f"p50 {_fmt_ms(p50)}")
        ax.set_xlim(0.5, max(data.size, 1) + 0.5)
        if measured.size:
            low, high = float(np.min(measured)), float(np.percentile(measured, 99.5))
            pad = max(high - low, 0.05 * high)
            bottom, top = max(0.0, low - 0.35 * pad), high + 0.45 * pad
            ax.set_ylim(bottom, top)
            clipped = data > top
            if clipped.any():
                ax.text(
                    0.99, 0.97, f"{int(clipped.sum())} off scale, up to {_fmt_ms(float(data.max()))}",
                    transform=ax.transAxes, va="top", ha="right", fontsize=8, color=MUTED,
                )
        ax.set_xlabel("iteration (warm-up first)")
        ax.set_ylabel("latency (ms)")
        fig.legend(loc="outside upper center", ncols=4, fontsize=8)
        return _to_svg(fig, plot_id, "Latency of every iteration, warm-up shaded")


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width // 2 - 1] + "…" + text[-(width // 2 - 1) :]


def top_ops(plot_id: str, ops: Sequence[dict[str, Any]], top: int = 12) -> str:
    """The ops that take the most time, largest first: mean time per call, share of all op time."""
    shown = list(ops[:top])[::-1]
    total = sum(op["total_ms"] for op in ops) or 1.0
    height = 0.9 + 0.27 * len(shown)
    with _figure(plot_id, 6.0, height) as fig:
        ax = fig.add_subplot()
        labels = [_short(f"{op['name']} ({op['op_type']})" if op["name"] else op["op_type"], 44) for op in shown]
        values = [op["total_ms"] / op["count"] if op["count"] else op["total_ms"] for op in shown]
        bars = ax.barh(range(len(shown)), values, color=BLUE, height=0.65)
        ax.set_yticks(range(len(shown)), labels, fontsize=8)
        ax.grid(axis="y", visible=False)
        for bar, op in zip(bars, shown, strict=True):
            share = op["share"] if op["share"] is not None else op["total_ms"] / total
            ax.text(
                bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {share * 100:.1f}%",
                va="center", ha="left", fontsize=8, color=INK,
            )
        ax.set_xlim(0, max(values) * 1.18 if values else 1)
        ax.set_xlabel("mean time per call (ms); label: share of all op time")
        return _to_svg(fig, plot_id, "Ops that take the most time")


def power_trace(plot_id: str, energy: dict[str, Any], events_s: Sequence[float] | None = None) -> str:
    """Power over the whole run, the measured window shaded, idle and average power marked;
    ``events_s`` (sensor-clock times, e.g. each generated token) as ticks along the bottom."""
    t = np.asarray(energy["trace"]["t_s"], dtype=np.float64)
    p = np.asarray(energy["trace"]["power_w"], dtype=np.float64)
    window = energy.get("measured_window_s")
    # Sensor times are clock readings (perf_counter): show seconds since the first sample.
    origin = float(t[0]) if t.size else 0.0
    t = t - origin
    window = [window[0] - origin, window[1] - origin] if window else None
    idle = energy.get("idle_power_w")
    average = energy.get("average_power_w")
    with _figure(plot_id, 6.0, 3.2) as fig:
        ax = fig.add_subplot()
        if window:
            ax.axvspan(window[0], window[1], color=WINDOW, linewidth=0, label="measured window", zorder=0)
            for edge in window:
                ax.axvline(edge, color=MUTED, linestyle=":", linewidth=1.0, zorder=1)
            inside = (t >= window[0]) & (t <= window[1])
            if idle is not None and inside.any():
                ax.fill_between(
                    t, idle, p, where=inside & (p > idle), color=BLUE, alpha=0.22, linewidth=0,
                    interpolate=True, label="energy above idle",
                )
        ax.plot(t, p, color=BLUE, linewidth=1.1, label="power", drawstyle="steps-post")
        if events_s:
            ax.plot(np.asarray(events_s, dtype=np.float64) - origin, np.zeros(len(events_s)), linestyle="none",
                    marker="|", markersize=6, color=INK, alpha=0.5, transform=ax.get_xaxis_transform(),
                    label="tokens")
        if idle is not None:
            ax.axhline(idle, color=MUTED, linestyle="--", linewidth=1.1, label=f"idle {idle:.2f} W")
        if average is not None and window:
            ax.hlines(average, window[0], window[1], color=ORANGE, linewidth=1.4, label=f"average {average:.2f} W")
        ax.set_xlabel("time since the first power sample (s)")
        ax.set_ylabel("power (W)")
        low = min(float(p.min()) if p.size else 0.0, idle if idle is not None else math.inf)
        ax.set_ylim(max(0.0, low * 0.8), (float(p.max()) if p.size else 1.0) * 1.08)
        fig.legend(loc="outside upper center", ncols=3, fontsize=8)
        return _to_svg(fig, plot_id, "Power over time with the measured window shaded")


def _place_labels(ax: Any, fig: Any, xs: np.ndarray, ys: np.ndarray, names: Sequence[str], size: float) -> None:
    """Put each point's name where it is unmistakably that point's: near it, nearer to it than to
    any other point, over no other name or marker.

    Candidates are tried in display space after layout; a label pushed further out gets a thin
    leader line, so two models of nearly the same size and accuracy (int4, nf4) stay readable.
    """
    fig.draw_without_rendering()
    to_pt = 72.0 / fig.dpi
    centers = [tuple(ax.transData.transform((x, y)) * to_pt) for x, y in zip(xs, ys, strict=True)]
    placed: list[tuple[float, float, float, float]] = []
    markers = [(cx - 6, cy - 6, cx + 6, cy + 6) for cx, cy in centers]
    frame = ax.get_window_extent()
    frame_pt = (frame.x0 * to_pt, frame.y0 * to_pt, frame.x1 * to_pt, frame.y1 * to_pt)

    def overlaps(box: tuple[float, float, float, float], others: Sequence[tuple[float, float, float, float]]) -> bool:
        return any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in others)

    def inside(box: tuple[float, float, float, float]) -> bool:
        return box[0] >= frame_pt[0] and box[2] <= frame_pt[2] and box[1] >= frame_pt[1] and box[3] <= frame_pt[3]

    for i, ((cx, cy), name) in enumerate(zip(centers, names, strict=True)):
        width, height = 0.6 * size * len(name), 1.2 * size
        near = [(7, 3), (7, -3 - height), (-7 - width, 3), (-7 - width, -3 - height), (-width / 2, 8), (-width / 2, -8 - height)]
        far = [(dx * 2.6, dy * 2.6 + (6 if dy > 0 else -6)) for dx, dy in near]
        others_markers = [m for j, m in enumerate(markers) if j != i]
        others_centers = [c for j, c in enumerate(centers) if j != i]
        best: tuple[float, float, float, bool] | None = None
        for ring, candidates in enumerate((near, far)):
            for dx, dy in candidates:
                box = (cx + dx, cy + dy, cx + dx + width, cy + dy + height)
                if overlaps(box, placed) or overlaps(box, others_markers):
                    continue
                mid = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
                own = math.dist(mid, (cx, cy))
                other = min((math.dist(mid, c) for c in others_centers), default=math.inf)
                score = other - own - (0 if inside(box) else 1000)
                if best is None or score > best[0]:
                    best = (score, dx, dy, ring > 0)
            if best is not None and best[0] > 0:
                break
        score, dx, dy, leader = best if best is not None else (0.0, 7.0, 3.0, False)
        placed.append((cx + dx, cy + dy, cx + dx + width, cy + dy + height))
        ax.annotate(
            name, (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", fontsize=size, color=INK,
            ha="left", va="bottom", zorder=4,
            arrowprops={"arrowstyle": "-", "color": MUTED, "linewidth": 0.7, "shrinkA": 0, "shrinkB": 4}
            if leader
            else None,
        )


def tradeoff(
    plot_id: str,
    points: Sequence[dict[str, Any]],
    cost: str,
    metric_label: str,
    percent: bool,
) -> str:
    """Accuracy against a cost (size or latency), every model labelled, the Pareto front drawn.

    The front is the staircase through the models no other model beats on both axes; a model
    off it is larger (or slower) and no more accurate than one on it.
    """
    with _figure(plot_id, 5.0, 3.7) as fig:
        ax = fig.add_subplot()
        scale = 1e-6 if cost == "size" else 1.0
        xs = np.array([pt["x"] * scale for pt in points])
        ys = np.array([pt["y"] * (100 if percent else 1) for pt in points])
        front = sorted((x, y) for x, y, pt in zip(xs, ys, points, strict=True) if pt["pareto"])
        if len(front) > 1:
            fx, fy = zip(*front, strict=True)
            ax.plot(fx, fy, color=ORANGE, linewidth=1.6, drawstyle="steps-post", zorder=1, label="Pareto front")
        else:
            ax.plot([], [], color=ORANGE, linewidth=1.6, label="Pareto front")
        for x, y, pt in zip(xs, ys, points, strict=True):
            color = INK if pt["reference"] else VARIANT_COLORS[pt.get("index", 0) % len(VARIANT_COLORS)]
            marker = "D" if pt["reference"] else "o"
            ax.scatter(
                [x], [y], s=70 if pt["pareto"] else 45, marker=marker, color=color, zorder=3,
                edgecolors=ORANGE if pt["pareto"] else "white", linewidths=2.0 if pt["pareto"] else 1.0,
            )
        ax.scatter([], [], marker="D", color=INK, s=35, label="reference")
        ax.scatter([], [], marker="o", color=MUTED, s=35, label="variant")
        ax.scatter([], [], marker="o", color="white", edgecolors=ORANGE, linewidths=2.0, s=45, label="on the front")
        if xs.size and xs.max() / max(xs.min(), 1e-12) > 20:
            ax.set_xscale("log")
        span_x = float(xs.max() - xs.min()) if xs.size else 1.0
        span_x = span_x or max(float(xs.max()) if xs.size else 1.0, 1.0) * 0.2
        if ax.get_xscale() == "linear" and xs.size:
            ax.set_xlim(max(0.0, xs.min() - 0.1 * span_x), xs.max() + 0.22 * span_x)
        span_y = float(ys.max() - ys.min()) if ys.size else 1.0
        span_y = span_y or abs(float(ys.max()) if ys.size else 1.0) * 0.02 or 0.01
        if ys.size:
            ax.set_ylim(ys.min() - 0.1 * span_y, ys.max() + 0.12 * span_y)
        ax.set_xlabel("model file size (MB)" if cost == "size" else "latency p50 (ms)")
        ax.set_ylabel(metric_label + (" (%)" if percent else ""))
        fig.legend(loc="outside upper center", ncols=4, fontsize=8)
        _place_labels(ax, fig, xs, ys, [pt["name"] for pt in points], 8.5)
        what = "size" if cost == "size" else "latency"
        return _to_svg(fig, plot_id, f"{metric_label} against {what}, Pareto front marked")


def prefill_by_length(plot_id: str, prefill_ms: dict[str, dict[str, Any]]) -> str:
    """Prefill time (p50, with min-max whiskers) against prompt length, and per prompt token."""
    lengths = np.array([int(k) for k in prefill_ms], dtype=np.float64)
    p50 = np.array([float(v["p50"]) for v in prefill_ms.values()])
    low = np.array([float(v["min"]) for v in prefill_ms.values()])
    high = np.array([float(v["max"]) for v in prefill_ms.values()])
    with _figure(plot_id, 6.0, 3.0) as fig:
        ax = fig.add_subplot()
        ax.errorbar(lengths, p50, yerr=[p50 - low, high - p50], color=BLUE, marker="o", markersize=4, capsize=3,
                    linewidth=1.2, label="prefill p50 (min–max)")
        ax.set_xlabel("prompt length (tokens)")
        ax.set_ylabel("prefill (ms)")
        ax.set_ylim(bottom=0)
        per = ax.twinx()
        per.grid(False)
        per.spines["right"].set_visible(True)
        per.plot(lengths, p50 / lengths * 1000.0, color=ORANGE, marker="s", markersize=3, linestyle="--",
                 linewidth=1.0, label="per prompt token (µs)")
        per.set_ylabel("µs per prompt token")
        per.set_ylim(bottom=0)
        handles, labels = ax.get_legend_handles_labels()
        h2, l2 = per.get_legend_handles_labels()
        fig.legend(handles + h2, labels + l2, loc="outside upper center", ncols=2, fontsize=8)
        return _to_svg(fig, plot_id, "Prefill time against prompt length")
