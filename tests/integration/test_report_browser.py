"""The report as a person sees it: rendered by headless Chromium, checked for errors and drawn plots.

Chromium comes from Debian's ``chromium`` package (``make chromium`` installs it for the tests).
The test speaks the DevTools protocol over a pipe (``report_browser_cdp``), so it needs nothing
beyond the standard library. The screenshot is kept next to the report for a person to look at.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from edgeq.report import ReportSection, write_report
from tests.integration.report_browser_cdp import find_chromium, render_page
from tests.report_samples import benchmark_dict, classification_compare, embedding_compare

CHROMIUM = find_chromium()

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="chromium is not on PATH: install Debian's 'chromium' package (make chromium) to run browser tests",
    ),
]

PLOTS = ".plot svg, .plot img"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _check_page(html_path: Path, width: int = 1400) -> None:
    assert CHROMIUM is not None
    page = render_page(html_path, CHROMIUM, PLOTS, width=width)
    screenshot = html_path.with_suffix(f".{width}.png")
    screenshot.write_bytes(page.screenshot_png)
    assert page.console_errors == [], page.console_errors
    assert page.exceptions == [], page.exceptions
    assert page.failed_requests == [], page.failed_requests
    assert page.requests == [html_path.resolve().as_uri()], f"the page loaded more than itself: {page.requests}"
    expected = len(re.findall(r'<figure class="plot"', html_path.read_text()))
    assert len(page.boxes) == expected > 0
    for box in page.boxes:
        assert box["width"] > 200 and box["height"] > 120, box
    assert page.horizontal_overflow_px <= 0, "the page scrolls sideways"
    shot_w, shot_h = _png_size(page.screenshot_png)
    assert shot_w == width and shot_h >= page.page_size[1] - 1


def test_demo_style_page_renders_cleanly_in_chromium(tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    write_report(
        [
            ReportSection(classification_compare(), title="EfficientNet-Lite0: fp32 vs int8", reference_label="fp32"),
            ReportSection(embedding_compare(), title="MiniLM: fp32 vs int4 / int2 / nf4", reference_label="fp32"),
            ReportSection(benchmark_dict(), target="jetson-orin-nano"),
            benchmark_dict(energy=False, ops=False, model="minilm.onnx"),
        ],
        html,
        title="edgeq demo",
    )
    _check_page(html)


def test_narrow_window_still_shows_every_plot(tmp_path: Path) -> None:
    html = tmp_path / "narrow.html"
    write_report([benchmark_dict(), embedding_compare()], html)
    _check_page(html, width=800)
