"""Export to the board: TensorRT lint, calibration cache, bundles, engine builds."""

from edgeq.export.bundle import ExportResult, export_bundle
from edgeq.export.trt_lint import LintViolation, lint_tensorrt

__all__ = ["ExportResult", "LintViolation", "export_bundle", "lint_tensorrt"]
