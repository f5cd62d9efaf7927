"""The bundle's README: what the person at the board needs to build and run it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from edgeq.export.result import ExportResult
from edgeq.targets import PrecisionPlan, TargetProfile


def render_readme(
    profile: TargetProfile, plan: PrecisionPlan, result: ExportResult, shapes: Mapping[str, Sequence[int]]
) -> str:
    """What the person at the board needs: what this is, what it expects, how to build and run it."""
    lines = [
        f"# {Path(result.bundle).name}: {profile.display_name}",
        "",
        f"Exported by edgeq for **{profile.name}**: {plan.describe()}.",
        "",
    ]
    if profile.uses_tensorrt:
        lines += [
            "## On the board",
            "",
            f"Expects JetPack {plan.jetpack} (TensorRT {plan.tensorrt}). An engine runs only on the GPU and",
            "TensorRT version it was built with, so it is built here, on the board:",
            "",
            "```sh",
            "./build.sh                 # trtexec; writes model.engine and timing.cache",
            "edgeq-run bench .          # latency (and energy where the rails are readable)",
            "```",
            "",
            f"`build.sh` runs: `{result.build_command}`",
            "",
        ]
        if plan.calibration_cache:
            lines += [
                "`calibration.cache` holds the per-tensor int8 scales (TensorRT implicit quantization, "
                "EntropyCalibration2); keep it next to model.onnx.",
                "",
            ]
        if plan.dla_core is not None:
            lines += [
                f"Runs on DLA core {plan.dla_core}; layers DLA cannot run fall back to the GPU **silently**: "
                "`./build.sh --verbose` lists where each layer went.",
                "",
            ]
    else:
        lines += [
            "## On the device",
            "",
            "Runs with onnxruntime (CPU):",
            "",
            "```sh",
            "pip install edgeq-runtime",
            "edgeq-run bench .",
            "```",
            "",
        ]
    lines += ["## Inputs and outputs", ""]
    for name, shape in shapes.items():
        lines.append(f"- input `{name}`, built and verified at shape {list(shape)}")
    lines += ["", "## Precision", ""]
    lines.append(f"- {plan.describe()}")
    if result.widening:
        lines.append(f"- {result.widening['text']}")
    if result.fp16:
        lines.append(f"- {result.fp16}")
    for note in [*plan.notes, *result.notes]:
        lines.append(f"- {note}")
    outputs = result.verification.get("outputs", {})
    if outputs:
        worst = min(v["cosine"] for v in outputs.values())
        lines.append(f"- checked in onnxruntime against {result.verification.get('reference')}: min cosine {worst:.6f}")
    lines += [
        "",
        "## Integrity",
        "",
        "`manifest.json` lists every file with its sha256; `edgeq inspect <bundle>` (workstation) or the runtime "
        "checks them before anything runs.",
        "",
    ]
    return "\n".join(lines)
