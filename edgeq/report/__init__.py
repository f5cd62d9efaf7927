"""Profiling and comparison reports: one self-contained HTML page plus the same numbers as JSON.

``write_profile_report`` renders a runtime benchmark, ``write_compare_report`` a float-vs-quantized
comparison, and ``write_report`` several of either on one page (the demo's). ``profile`` runs the
runtime's benchmark on a bundle or ONNX file and returns its result dict. matplotlib and the
runtime are imported only when a report is drawn or a model profiled, so ``import edgeq`` stays light.
"""

from __future__ import annotations

from edgeq.report.document import Report, ReportSection, build_report, load_report
from edgeq.report.profiling import profile
from edgeq.report.writer import write_compare_report, write_demo_report, write_profile_report, write_report

REPORT_SCHEMA = Report.schema_type
REPORT_SCHEMA_VERSION = Report.schema_version

__all__ = [
    "REPORT_SCHEMA",
    "REPORT_SCHEMA_VERSION",
    "Report",
    "ReportSection",
    "build_report",
    "load_report",
    "profile",
    "write_compare_report",
    "write_demo_report",
    "write_profile_report",
    "write_report",
]
