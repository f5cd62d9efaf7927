"""Profiling and comparison reports: one self-contained HTML page plus the same numbers as JSON.

``write_profile_report`` renders a runtime benchmark, ``write_compare_report`` a float-vs-quantized
comparison, and ``write_report`` / ``write_demo_report`` several of either on one page. ``profile``
runs the runtime's benchmark on a bundle or ONNX file and returns its result dict. matplotlib and
the runtime are imported only when a report is drawn or a model profiled, so ``import edgeq``
stays light.

The JSON twin (``--json``) is ``{"_type": "edgeq.Report", "_version": 1, "_data": {...}}`` with
``title``, ``created_utc``, ``edgeq_version`` and ``sections``, each one of:

- ``{"kind": "profile", "title", "target", "benchmark": <edgeq_runtime.BenchmarkResult dict>,
  "summary": {"latency_p50_ms", "latency_p99_ms", "throughput_per_s", "first_iteration_ms",
  "latency_drift_percent", "energy_available", "energy_per_inference_mj",
  "energy_above_idle_per_inference_mj", "average_power_w", "energy_reason"}}``
- ``{"kind": "compare", "title", "reference_label", "compare": <edgeq.CompareResult envelope>,
  "summary": {"accuracy_metric", "pareto_front": {"size": [names], "latency": [names]}}}``
- ``{"kind": "decoder", "title", "reference_label", "compare": <edgeq.DecoderCompareResult envelope>,
  "summary": {"accuracy_metric": "perplexity", "pareto_front": {"size": [names]}}}``

Energy numbers are null whenever ``energy_available`` is false (``energy_reason`` says why);
non-finite values (an SQNR of infinity) are written as null. A CI gate reads, for example,
``sections[0]["summary"]["latency_p99_ms"]``.
"""

from __future__ import annotations

from edgeq.report.document import Report, ReportSection, build_report, load_report
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
    "write_compare_report",
    "write_demo_report",
    "write_profile_report",
    "write_report",
]
