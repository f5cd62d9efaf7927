"""Export to the board: TensorRT lint, calibration cache, bundles, engine builds."""

from edgeq.export.trt_lint import LintViolation, lint_tensorrt

__all__ = ["LintViolation", "lint_tensorrt"]
