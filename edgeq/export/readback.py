"""Reading a bundle back (``edgeq inspect bundle/``): its manifest, checked file by file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeq.errors import ConfigError


def inspect_bundle(path: str | Path) -> tuple[Any, list[str]]:
    """(manifest, problems): every file checked against its sha256; an unreadable manifest is an error."""
    from edgeq_runtime.errors import BundleError
    from edgeq_runtime.manifest import Manifest

    try:
        manifest = Manifest.read(path)
        return manifest, manifest.verify(path)
    except BundleError as exc:
        raise ConfigError(str(exc)) from None


def unlisted_files(path: str | Path, manifest: Any) -> list[str]:
    """Files in the bundle folder that its manifest does not list (no checksum vouches for them)."""
    from edgeq_runtime.manifest import MANIFEST_NAME

    root = Path(path)
    listed = {entry.path for entry in manifest.files} | {MANIFEST_NAME}
    return sorted(rel for p in root.rglob("*") if p.is_file() and (rel := p.relative_to(root).as_posix()) not in listed)


def check_bundle_input(path: str | Path) -> None:
    """A bundle given as a model must be the one its manifest describes, or it is refused in one line."""
    _, problems = inspect_bundle(path)
    if problems:
        raise ConfigError(f"{path}: {len(problems)} file(s) do not match manifest.json ({'; '.join(problems)}); "
                          "re-export from the original model")


def format_bundle(path: str | Path, manifest: Any, problems: Sequence[str], unlisted: Sequence[str] = ()) -> str:
    """The manifest summary a person reads before copying a bundle to a board."""
    target = manifest.target
    precision = manifest.precision
    lines = [f"bundle: {path}  (created {manifest.created or '?'})"]
    where = target.get("name", "?")
    if target.get("tensorrt_version"):
        where += f"  JetPack {target.get('jetpack')}, TensorRT {target['tensorrt_version']}"
    lines.append(f"target: {where}  backend {target.get('backend', '?')}")
    if precision.get("description"):
        lines.append(f"precision: {precision['description']}")
    widening = precision.get("widening")
    if isinstance(widening, dict) and widening.get("text"):
        lines.append(f"widening: {widening['text']}")
    for title, tensors in (("inputs", manifest.inputs), ("outputs", manifest.outputs)):
        lines.append(f"{title}:")
        lines += [f"  {t.name}: {t.dtype} [{', '.join(str(d) for d in t.shape)}]" for t in tensors]
    lines.append("files:")
    bad = {p.split(":", 1)[0] for p in problems}
    for entry in manifest.files:
        status = "MISMATCH" if entry.path in bad else "ok"
        lines.append(f"  {entry.path}  {entry.bytes:,} bytes  sha256 {entry.sha256[:12]}…  {status}")
    for name in unlisted:
        lines.append(f"  {name}  not in manifest.json (no checksum)")
    versions = ", ".join(f"{k} {v}" for k, v in manifest.tool_versions.items())
    if versions:
        lines.append(f"tools: {versions}")
    lines.append("checksums: all files match" if not problems else f"checksums: {len(problems)} problem(s)")
    return "\n".join(lines)
