"""The report page: one self-contained HTML file rendered from a ``Report`` document.

No scripts, no fonts or styles from elsewhere, plots inlined as SVG; a Content-Security-Policy
meta tag forbids any request so the page reads the same offline, in a CI artifact or in an
e-mail attachment. The page is layout only: the stylesheet is in ``styles``, each section kind
has its own renderer (``profile_html``, ``compare_html``, ``decoder_html``), and every piece of text from a result
passes through ``markup.esc`` on its way in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeq.report.compare_html import render_compare
from edgeq.report.decoder_html import render_decoder
from edgeq.report.document import Report
from edgeq.report.markup import esc
from edgeq.report.profile_html import render_profile
from edgeq.report.styles import CSP, CSS

# Section kind -> renderer of its <section>; ``pid`` is the section's id, prefixing its plots' ids.
RENDERERS: dict[str, Callable[[dict[str, Any], str], str]] = {
    "profile": render_profile,
    "compare": render_compare,
    "decoder": render_decoder,
}


def render_html(report: Report) -> str:
    """The whole page as one string."""
    body = []
    nav = []
    for i, section in enumerate(report.sections, start=1):
        pid = f"s{i}"
        body.append(RENDERERS[section["kind"]](section, pid))
        nav.append(f'<a href="#{pid}">{esc(section["title"])}</a>')
    nav_html = f"<nav>{''.join(nav)}</nav>" if len(nav) > 1 else ""
    json_note = (
        "The same numbers are available as JSON (schema "
        f"{esc(report.schema_type)} version {report.schema_version}) when the report is written with --json."
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="edgeq {esc(report.edgeq_version)}">'
        f"<title>{esc(report.title)}</title><style>{CSS}</style></head><body>"
        f'<header class="page"><h1>{esc(report.title)}</h1><div class="sub">edgeq {esc(report.edgeq_version)} · '
        f"generated {esc(report.created_utc)}</div>{nav_html}</header>"
        f"<main>{''.join(body)}</main><footer>{json_note}</footer></body></html>\n"
    )

