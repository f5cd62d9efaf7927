"""Export to the board: TensorRT lint, calibration cache, bundles, engine builds."""

from edgeq.export.bundle import export_bundle
from edgeq.export.result import ExportResult

__all__ = ["ExportResult", "export_bundle"]
