"""Write report pages and their JSON twins, atomically.

Both files are fully rendered in memory before either is written, so a bad input or a plotting
failure leaves an existing report exactly as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeq.errors import ConfigError
from edgeq.report.document import Report, ReportSection, build_report, report_json


def _check_paths(path: str | Path | None, json_path: str | Path | None) -> None:
    if path is None and json_path is None:
        raise ConfigError("report: give an HTML path, a JSON path, or both")
    if path is not None and json_path is not None and Path(json_path).resolve() == Path(path).resolve():
        raise ConfigError(f"{json_path}: the JSON report cannot overwrite the HTML report; pick another path")
    for target in (path, json_path):
        if target is not None and Path(target).is_dir():
            raise ConfigError(f"{target}: is a directory; give a file path for the report")


def write_report(
    sections: Sequence[Any] | Report,
    path: str | Path | None,
    json_path: str | Path | None = None,
    title: str | None = None,
) -> Report:
    """Write one page holding several results, in the order given.

    ``sections`` items are ``BenchmarkResult`` / ``CompareResult`` objects, their dicts, or
    ``ReportSection(result, title=..., target=..., reference_label=...)`` to title them; a
    ``Report`` loaded from an earlier ``--json`` file is re-rendered as it is.
    ``path`` may be None to write only the JSON. Returns the document that was written.
    """
    from edgeq.fileio import OutputSet
    from edgeq.report.page import render_html

    _check_paths(path, json_path)
    report = sections if isinstance(sections, Report) else build_report(sections, title)
    if title is not None:
        report.title = title
    page = render_html(report) if path is not None else None
    document = report_json(report) if json_path is not None else None
    with OutputSet() as outputs:  # the page and its JSON land together or not at all
        if path is not None and page is not None:
            outputs.path(path).write_text(page, encoding="utf-8")
        if json_path is not None and document is not None:
            outputs.path(json_path).write_text(document, encoding="utf-8")
    return report


def write_profile_report(
    result: Any,
    path: str | Path | None,
    json_path: str | Path | None = None,
    target: str | None = None,
) -> Report:
    """Report one benchmark (a runtime ``BenchmarkResult`` or its dict) as a page."""
    return write_report([ReportSection(result, target=target)], path, json_path)


def write_compare_report(
    result: Any,
    path: str | Path | None,
    json_path: str | Path | None = None,
    reference_label: str | None = None,
) -> Report:
    """Report one comparison (an ``edgeq.CompareResult`` or its dict) as a page."""
    return write_report([ReportSection(result, reference_label=reference_label)], path, json_path)


def write_demo_report(
    compares: Sequence[Any],
    profiles: Sequence[Any],
    path: str | Path,
    json_path: str | Path | None = None,
    title: str = "edgeq demo: accuracy, size, latency and energy",
) -> Path:
    """The demo's page: every comparison first, then every profile; returns the HTML path.

    Items are result objects, their dicts, or JSON files (``CompareResult`` files, runtime
    ``BenchmarkResult`` files, or reports written by ``edgeq profile --json``).
    """
    write_report([*compares, *profiles], path, json_path, title=title)
    return Path(path)
