"""``edgeq inspect``: what is in a model file (or bundle)."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeq.cli import app
from edgeq.cli._common import echo_json


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def _lint(model: Path, target: str, as_json: bool) -> None:
    """Print every rule violation; exit status 1 when there is any, so scripts can gate on it."""
    import json

    from edgeq.cli._common import choice
    from edgeq.frontends.resolve import load_model_spec
    from edgeq.graph.trt_lint import lint_tensorrt

    choice(target, ("tensorrt",), "--lint")
    violations = lint_tensorrt(load_model_spec(model))
    if as_json:
        typer.echo(json.dumps([{"rule": v.rule, "node": v.node, "message": v.message} for v in violations], indent=2))
    elif violations:
        typer.echo(f"{model}: {len(violations)} TensorRT rule violation(s)")
        for v in violations:
            typer.echo(f"  {v}")
    else:
        typer.echo(f"{model}: follows TensorRT's explicit-quantization rules")
    if violations:
        raise SystemExit(1)  # typer.Exit's code is lost under standalone_mode=False


@app.command("inspect")
def inspect_command(
    model: Path = typer.Argument(..., help="An ONNX file, or a bundle folder (checks its files against manifest.json)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    lint: str | None = typer.Option(None, "--lint", help="Check a Q/DQ model against a target's rules: tensorrt."),
) -> None:
    """Show inputs, outputs, opsets, op histogram, parameters, quantizable nodes, and decoder facts."""
    if lint is not None:
        _lint(model, lint, as_json)
        return
    if model.is_dir() and (model / "manifest.json").is_file():
        _inspect_bundle(model, as_json)
        return
    from edgeq.frontends.resolve import resolve_model
    from edgeq.graph.inspect import inspect_model

    if model.is_dir():
        typer.echo(f"note: {model} has no manifest.json, so it is not a bundle: no checksums were verified", err=True)
    info = inspect_model(resolve_model(model))
    if as_json:
        echo_json(info)
        return
    typer.echo(f"model: {info.path} ({_human_bytes(info.file_bytes)}, IR v{info.ir_version})")
    typer.echo("opsets: " + ", ".join(f"{k} {v}" for k, v in info.opsets.items()))
    for title, tensors in (("inputs", info.inputs), ("outputs", info.outputs)):
        typer.echo(f"{title}:")
        for t in tensors:
            typer.echo(f"  {t.name}: {t.dtype} [{', '.join(str(d) for d in t.shape)}]")
    typer.echo(f"parameters: {info.parameters:,}")
    for dtype, nbytes in info.parameter_bytes_by_dtype.items():
        typer.echo(f"  {dtype}: {_human_bytes(nbytes)}")
    typer.echo("ops: " + ", ".join(f"{op} {n}" for op, n in info.op_histogram.items()))
    if info.decoder is not None:
        typer.echo(info.decoder.format_line())
    typer.echo(f"quantizable nodes: {len(info.quantizable)}")
    for q in info.quantizable:
        typer.echo(f"  {q['name']} ({q['op_type']}, weight {q['weight']} {q['shape']})")
    if info.skipped:
        typer.echo(f"left in float: {len(info.skipped)}")
        for s in info.skipped:
            typer.echo(f"  {s['name']} ({s['op_type']}): {s['reason']}")


def _inspect_bundle(path: Path, as_json: bool) -> None:
    """A bundle folder: the manifest summary, and every file checked against its sha256."""
    from edgeq.errors import EdgeqError
    from edgeq.export.readback import format_bundle, inspect_bundle, unlisted_files

    manifest, problems = inspect_bundle(path)
    unlisted = unlisted_files(path, manifest)
    if as_json:
        echo_json({"manifest": manifest.to_dict(), "problems": problems, "unlisted": unlisted})
    else:
        typer.echo(format_bundle(path, manifest, problems, unlisted))
    if problems:
        raise EdgeqError(f"{path}: {len(problems)} file(s) do not match manifest.json: " + "; ".join(problems))
