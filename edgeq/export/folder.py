"""Step 4 of export: the bundle folder, written in one atomic step.

``model.onnx`` (+ external data), ``calibration.cache`` for implicit int8, ``model.engine`` and
its timing cache when the engine is built here, ``build.sh`` for TensorRT boards, the README and
``manifest.json`` last, so that it can list every other file with its sha256.
"""

from __future__ import annotations

import shutil
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

from edgeq.export.layout import BUILD_NAME, CACHE_NAME, ENGINE_NAME, MODEL_NAME, README_NAME
from edgeq.export.manifest import tool_versions, write_manifest
from edgeq.export.readme import render_readme
from edgeq.export.result import ExportResult
from edgeq.targets import PrecisionPlan, TargetProfile


def write_bundle(
    output: Path,
    model: onnx.ModelProto,
    profile: TargetProfile,
    plan: PrecisionPlan,
    result: ExportResult,
    build_shapes: Mapping[str, Sequence[int]],
    dynamic: Mapping[str, Sequence[int]],
    cache_text: str | None,
    build_engine: bool,
    decoder: dict[str, Any] | None = None,
    tokenizer: Path | None = None,
) -> None:
    """Write every file of the bundle into ``output`` (replacing it only if all succeed).

    ``result.files`` and ``result.engine`` are filled in as the files are written.
    """
    from edgeq.fileio import atomic_directory
    from edgeq.graph.io import save_model

    with atomic_directory(output) as tmp:
        save_model(model, tmp / MODEL_NAME)
        files = [MODEL_NAME]
        if (tmp / f"{MODEL_NAME}.data").is_file():
            files.append(f"{MODEL_NAME}.data")
        if cache_text is not None:
            (tmp / CACHE_NAME).write_text(cache_text, encoding="utf-8")
            files.append(CACHE_NAME)
        if tokenizer is not None:
            from edgeq.export.decoder import TOKENIZER_NAME

            shutil.copyfile(tokenizer, tmp / TOKENIZER_NAME)
            files.append(TOKENIZER_NAME)
        engine_name = None
        trt_version = None
        if build_engine:
            from edgeq.export.engine import build_engine as build

            built = build(tmp / MODEL_NAME, plan, profile.memory.workspace_mib, tmp / ENGINE_NAME,
                          calibration_cache=tmp / CACHE_NAME if cache_text is not None else None, shapes=dynamic)
            engine_name, trt_version = ENGINE_NAME, built.tensorrt_version
            files += [ENGINE_NAME, built.timing_cache.name]
            result.engine = ENGINE_NAME
        if profile.uses_tensorrt:
            _write_build_script(tmp, files, plan, profile, dynamic)
            files.append(BUILD_NAME)
        files.append(README_NAME)
        result.files = [*files, "manifest.json"]
        (tmp / README_NAME).write_text(render_readme(profile, plan, result, build_shapes), encoding="utf-8")
        write_manifest(tmp, files, model, profile, plan, result, dynamic, engine_name, trt_version, decoder)


def _write_build_script(
    folder: Path, files: Sequence[str], plan: PrecisionPlan, profile: TargetProfile, dynamic: Mapping[str, Sequence[int]]
) -> None:
    """``build.sh``: trtexec for the board's TensorRT, checking the sha256 of what it builds from."""
    from edgeq.export.build_script import render_build_script
    from edgeq.fileio import sha256_file

    script = folder / BUILD_NAME
    script.write_text(
        render_build_script(plan, profile.memory.workspace_mib, dynamic or None,
                            checksums={f: sha256_file(folder / f) for f in files
                                       if f in (MODEL_NAME, f"{MODEL_NAME}.data", CACHE_NAME)},
                            edgeq_version=tool_versions()["edgeq"]),
        encoding="utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
