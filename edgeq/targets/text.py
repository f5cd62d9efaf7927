"""Text for ``edgeq targets``: the boards as a table, and one board in detail."""

from __future__ import annotations

from collections.abc import Sequence

from edgeq.targets.facts import parse_version, parser_max_opset
from edgeq.targets.profile import PRECISION_KEYS, TargetProfile

_SHORT = {"fp16": "fp16", "int8": "int8", "int8_weight_only": "w8", "int4_weight_only": "w4",
          "int2_weight_only": "w2", "nf4_weight_only": "nf4", "fp4_weight_only": "wfp4", "fp8": "fp8", "fp4": "fp4"}


def text_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells as aligned lines (the first row is the header); shared by the board tables."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def format_targets_table(profiles: list[TargetProfile]) -> str:
    """One line per board; w4 = int4 weight-only (TensorRT >= 10), w2/nf4 = weight-only on CPU."""
    rows = [("target", "gpu (sm)", "jetpack -> tensorrt", "precisions", "dla", "memory")]
    for p in profiles:
        gpu = f"{p.gpu.architecture} ({p.gpu.compute_capability})" if p.gpu else "cpu"
        trt = ""
        if p.tensorrt is not None:
            trt = ", ".join(f"{jp}->{v}" for jp, v in p.tensorrt.jetpack.items())
        precisions = " ".join(_SHORT[k] for k in p.allowed_precisions())
        memory = "/".join(f"{g:g}" for g in p.memory.sizes_gb) + " GB" if p.memory.sizes_gb else "-"
        dla = str(p.dla.cores) + ("?" if "dla.cores" in p.unverified else "")
        rows.append((p.name, gpu, trt or p.backend, precisions, dla, memory))
    lines = text_table(rows)
    lines.append("w4/w2/w8 = int4/int2/int8 weight-only; ? = unverified; `edgeq targets NAME` for details")
    return "\n".join(lines)


def format_target(p: TargetProfile) -> str:
    lines = [f"{p.name}: {p.display_name}  ({p.source})", f"  backend: {p.backend}"]
    if p.gpu:
        lines.append(f"  gpu: {p.gpu.architecture}, compute capability {p.gpu.compute_capability}")
    if p.tensorrt:
        jps = ", ".join(f"JetPack {jp} -> TensorRT {v}" for jp, v in p.tensorrt.jetpack.items())
        lines.append(f"  software: {jps} (default JetPack {p.tensorrt.default_jetpack})")
    lines.append("  precisions: " + ", ".join(PRECISION_KEYS[k] for k in p.allowed_precisions()))
    if p.uses_tensorrt:
        assert p.tensorrt is not None
        for jp in p.tensorrt.jetpack:
            missing = [k for k in p.precision.names() if k not in p.allowed_precisions(jp)]
            if missing:
                lines.append(f"    not on JetPack {jp}: {', '.join(PRECISION_KEYS[k] for k in missing)} (TensorRT too old)")
        lines.append("  TensorRT has no int2/nf4: export them with --allow-widen (stored as int4 blocks or fp16)")
    lines.append(f"  float parts: {p.precision.prefer_float}")
    if p.dla.cores:
        lines.append(f"  DLA: {p.dla.cores} core(s), {'/'.join(p.dla.precisions)}, fixed shapes, GPU fallback for the rest")
    else:
        lines.append("  DLA: none")
    if p.memory.sizes_gb:
        lines.append(f"  memory: {'/'.join(f'{g:g}' for g in p.memory.sizes_gb)} GB unified; "
                     f"TensorRT workspace {p.memory.workspace_mib} MiB")
    if p.power.rails:
        total = f", total {p.power.total_rail}" if p.power.total_rail else ", no single total rail"
        lines.append(f"  power: {p.power.sensor} rails {', '.join(p.power.rails)}{total}")
    lines.append(f"  preferred ONNX opset: {p.onnx.preferred_opset}")
    if p.tensorrt:
        parsed = ", ".join(f"JetPack {jp}: {parser_max_opset(parse_version(v))}" for jp, v in p.tensorrt.jetpack.items())
        lines.append(f"  highest opset TensorRT's parser reads: {parsed} (export lowers the graph to it)")
    if p.onnx.int8_reduce_range:
        lines.append("  int8: dense weights in [-64, 64] (no 16-bit saturation on CPUs without VNNI)")
    if p.unverified:
        lines.append(f"  unverified: {', '.join(p.unverified)}")
    lines += [f"  note: {n}" for n in p.notes]
    return "\n".join(lines)
