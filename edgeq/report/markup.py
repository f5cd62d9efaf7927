"""Small HTML building blocks of the report page: escaped text, definition lists, tiles, figures.

Every piece of text from a result (model paths, layer names, reasons) passes through ``esc`` on
its way into the page; the helpers that take "already-escaped HTML" say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any


def esc(value: Any) -> str:
    """``value`` as text safe inside an element or a quoted attribute."""
    return escape(str(value), quote=True)


def definition_list(rows: Sequence[tuple[str, str]]) -> str:
    """A definition list; values are already-escaped HTML."""
    items = "".join(f"<div><dt>{esc(k)}</dt><dd>{v}</dd></div>" for k, v in rows)
    return f'<dl class="meta">{items}</dl>'


def tile(label: str, value: str, unit: str = "", na: bool = False, title: str = "") -> str:
    """One headline number with its unit and label; ``na`` shows ``value`` as a reason instead."""
    cls = "tile na" if na else "tile"
    title_attr = f' title="{esc(title)}"' if title else ""
    unit_html = f'<span class="unit">{esc(unit)}</span>' if unit and not na else ""
    return (
        f'<div class="{cls}"{title_attr}><div class="value">{esc(value)}{unit_html}</div>'
        f'<div class="label">{esc(label)}</div></div>'
    )


def figure(svg: str, plot_id: str, caption: str) -> str:
    """A plot in its frame; ``caption`` is already-escaped HTML."""
    return f'<figure class="plot" id="{esc(plot_id)}">{svg}<figcaption>{caption}</figcaption></figure>'


def flat_items(mapping: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as ("a.b", "value") rows, so unknown device fields still show up somewhere."""
    if not isinstance(mapping, dict):
        return [(prefix, str(mapping))]
    rows: list[tuple[str, str]] = []
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            rows.extend(flat_items(value, name))
        elif isinstance(value, (list, tuple)):
            rows.append((name, ", ".join(str(v) for v in value)))
        else:
            rows.append((name, str(value)))
    return rows


def muted(text: str) -> str:
    """Grey text, for "not given" / "not readable" rather than a value."""
    return f'<span class="muted">{esc(text)}</span>'


def shorten(text: str, keep: int) -> str:
    """Keep the end of a long tensor or node name: that is the part that tells layers apart."""
    return text if len(text) <= keep else "…" + text[-(keep - 1) :]


def breakable(text: str) -> str:
    """Escaped text that wraps after a '/' or '.' before it wraps anywhere else."""
    return "".join(esc(ch) + ("<wbr>" if ch in "/." else "") for ch in text)

