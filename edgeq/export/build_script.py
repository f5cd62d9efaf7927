"""The ``trtexec`` command that builds a bundle's engine on the board, right for its TensorRT.

An engine runs only on the GPU and TensorRT version it was built with, so the bundle carries the
ONNX and a ``build.sh`` the person at the board runs. trtexec's flags moved between versions:

- TensorRT < 8.4: ``--workspace=<MiB>``; from 8.4 ``--memPoolSize=workspace:<MiB>`` (``--workspace``
  is gone from 10.x).
- TensorRT 8.x: Q/DQ models still need ``--int8`` (and ``--fp16`` so the float parts are not fp32);
  implicit quantization reads the scales with ``--calib=<cache>``.
- TensorRT 10.x: Q/DQ models build with ``--stronglyTyped`` (the ONNX types decide precision, so no
  ``--fp16``/``--int8``); DLA has no Q/DQ support, so DLA builds stay weakly typed with
  ``--fp16 [--int8 --calib]``.
- TensorRT >= 11: every network is strongly typed and ``--fp16/--int8/--calib`` are gone.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgeq.errors import UnsupportedError
from edgeq.targets import (
    TRT_IMPLICIT_REMOVED,
    TRT_STRONGLY_TYPED_MIN,
    TRT_WORKSPACE_POOL_MIN,
    PrecisionPlan,
    parse_version,
)


@dataclass(frozen=True)
class BuildFiles:
    """File names inside the bundle that build.sh reads and writes."""

    onnx: str = "model.onnx"
    engine: str = "model.engine"
    calibration_cache: str = "calibration.cache"
    timing_cache: str = "timing.cache"


def trt_version_code(version: str) -> int:
    """The number trtexec prints as ``TensorRT v<code>``: 8.5.2 -> 8502, 10.3.0 -> 100300."""
    parts = [*parse_version(version), 0, 0][:3]
    major, minor, patch = parts
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def _shape_spec(shapes: Mapping[str, Sequence[int]]) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in dims)}" for name, dims in shapes.items())


def trtexec_args(
    plan: PrecisionPlan,
    workspace_mib: int,
    shapes: Mapping[str, Sequence[int]] | None = None,
    files: BuildFiles = BuildFiles(),
) -> list[str]:
    """trtexec arguments (without the program name) for ``plan`` on its TensorRT version.

    ``shapes`` gives the build shape of every input with a dynamic dimension (min = opt = max: the
    bundle is built for the shape it was exported and verified with).
    """
    if plan.tensorrt is None:
        raise UnsupportedError(f"{plan.target}: backend {plan.backend} builds no TensorRT engine")
    trt = parse_version(plan.tensorrt)
    args = [f"--onnx={files.onnx}", f"--saveEngine={files.engine}"]
    implicit = plan.quantization == "implicit"
    int8 = implicit or (plan.quantization == "explicit" and plan.activations == "int8")
    if trt >= TRT_IMPLICIT_REMOVED:
        if implicit:
            raise UnsupportedError(
                f"{plan.target}: TensorRT {plan.tensorrt} removed implicit quantization (calibration caches); "
                "export Q/DQ int8 without --dla"
            )
        # Strongly typed is the only mode: the ONNX types decide every precision.
    elif plan.dla_core is not None or (trt < TRT_STRONGLY_TYPED_MIN) or not plan.strongly_typed:
        if plan.float_precision == "fp16":
            args.append("--fp16")
        if int8:
            args.append("--int8")
        if plan.calibration_cache:
            args.append(f"--calib={files.calibration_cache}")
    else:
        args.append("--stronglyTyped")
    if plan.dla_core is not None:
        args += [f"--useDLACore={plan.dla_core}", "--allowGPUFallback"]
    if shapes:
        spec = _shape_spec(shapes)
        args += [f"--minShapes={spec}", f"--optShapes={spec}", f"--maxShapes={spec}"]
    if trt >= TRT_WORKSPACE_POOL_MIN:
        args.append(f"--memPoolSize=workspace:{workspace_mib}")
    else:
        args.append(f"--workspace={workspace_mib}")
    args.append(f"--timingCacheFile={files.timing_cache}")
    return args


def trtexec_command(
    plan: PrecisionPlan,
    workspace_mib: int,
    shapes: Mapping[str, Sequence[int]] | None = None,
    files: BuildFiles = BuildFiles(),
) -> str:
    """The command line as a person would type it."""
    return shlex.join(["trtexec", *trtexec_args(plan, workspace_mib, shapes, files)])


def render_build_script(
    plan: PrecisionPlan,
    workspace_mib: int,
    shapes: Mapping[str, Sequence[int]] | None = None,
    files: BuildFiles = BuildFiles(),
    checksums: Mapping[str, str] | None = None,
    edgeq_version: str = "",
) -> str:
    """A POSIX ``build.sh`` that finds trtexec, checks the model and TensorRT version, and builds."""
    assert plan.tensorrt is not None
    args = trtexec_args(plan, workspace_mib, shapes, files)
    code = trt_version_code(plan.tensorrt)
    major = parse_version(plan.tensorrt)[0]
    lines = [
        "#!/bin/sh",
        f"# Build the TensorRT engine of this bundle for {plan.target} on the board itself:",
        "# an engine runs only on the GPU model and TensorRT version it was built with.",
        f"# Expects JetPack {plan.jetpack} (TensorRT {plan.tensorrt}). Generated by edgeq {edgeq_version}.".replace(
            " .", "."),
        "# Extra trtexec options may be appended: ./build.sh --verbose",
        "set -eu",
        'cd "$(dirname "$0")"',
        'TRTEXEC="${TRTEXEC:-}"',
        'if [ -z "$TRTEXEC" ]; then',
        "  if command -v trtexec >/dev/null 2>&1; then TRTEXEC=trtexec",
        "  elif [ -x /usr/src/tensorrt/bin/trtexec ]; then TRTEXEC=/usr/src/tensorrt/bin/trtexec",
        '  else echo "build.sh: trtexec not found; install TensorRT (JetPack: sudo apt install nvidia-tensorrt)'
        ' or set TRTEXEC=/path/to/trtexec" >&2; exit 1; fi',
        "fi",
    ]
    if checksums:
        # The model (and its external data) as exported: a half-copied bundle fails here, not in trtexec.
        lines.append("if command -v sha256sum >/dev/null 2>&1; then")
        for name, digest in checksums.items():
            lines += [
                f'  echo "{digest}  {name}" | sha256sum -c --status - || {{',
                f'    echo "build.sh: {name} does not match the bundle manifest (copied incompletely?)" >&2; exit 1; }}',
            ]
        lines.append("fi")
    lines += [
        # trtexec prints "TensorRT v100300" (10.x) or "TensorRT v8502" (8.x); a mismatch is a warning only.
        'found=$("$TRTEXEC" --help 2>&1 | sed -n \'s/.*TensorRT v\\([0-9][0-9]*\\).*/\\1/p\' | head -n 1)',
        'if [ -n "$found" ]; then',
        '  if [ "$found" -ge 10000 ]; then found_major=$((found / 10000)); else found_major=$((found / 1000)); fi',
        f'  if [ "$found_major" -ne {major} ]; then',
        f'    echo "build.sh: warning: this bundle was exported for TensorRT {plan.tensorrt} (v{code}),'
        ' trtexec is v$found; its flags may differ" >&2',
        "  fi",
        "fi",
        'exec "$TRTEXEC" \\',
        *[f"  {shlex.quote(a)} \\" for a in args],
        '  "$@"',
        "",
    ]
    return "\n".join(lines)
