"""``ExportResult``: what export did, saved as JSON (``--json``) and summarised for the terminal."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeq.serialization import Serializable
from edgeq.targets import PrecisionPlan


@dataclass
class ExportResult(Serializable):
    """What export did: the bundle, the plan, and the evidence that the bundle is right."""

    schema_type = "edgeq.ExportResult"
    schema_version = 1

    bundle: str
    target: str
    plan: PrecisionPlan
    files: list[str]
    model_formats: str = ""
    quantization: dict[str, Any] = field(default_factory=dict)
    widening: dict[str, Any] | None = None
    fp16: str | None = None
    lint: str = "not applicable"
    verification: dict[str, Any] = field(default_factory=dict)
    build_command: str | None = None
    engine: str | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def _from_data(cls, data: dict[str, Any]) -> ExportResult:
        plan = PrecisionPlan.from_dict(data["plan"], "plan")
        return cls(**{**data, "plan": plan})

    def format_text(self) -> str:
        lines = [f"bundle: {self.bundle}", f"plan: {self.plan.describe()}", f"model: {self.model_formats}"]
        if self.quantization:
            lines.append(f"quantized: {self.quantization.get('text', '')}".rstrip())
        if self.widening:
            lines.append(f"widening: {self.widening['text']}")
        if self.fp16:
            lines.append(self.fp16)
        lines.append(f"TensorRT lint: {self.lint}")
        verified = self.verification.get("outputs", {})
        if verified:
            worst = min(v["cosine"] for v in verified.values())
            lines.append(
                f"verified in {self.verification.get('executed_by', 'onnxruntime')} against "
                f"{self.verification.get('reference', 'the quantized model')} "
                f"on {self.verification.get('inputs', 'inputs')}: min cosine {worst:.6f}"
            )
        if self.build_command:
            lines.append(f"on the board: ./build.sh   ({self.build_command})")
        if self.engine:
            lines.append(f"engine: {self.engine}")
        lines += [f"note: {n}" for n in [*self.plan.notes, *self.notes]]
        lines.append("files: " + ", ".join(self.files))
        return "\n".join(lines)

