"""Export to the board: TensorRT lint, calibration cache, bundles, engine builds."""

from edgeq.export.bundle import ExportResult, export_bundle

__all__ = ["ExportResult", "export_bundle"]
