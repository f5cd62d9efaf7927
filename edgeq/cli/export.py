"""``edgeq export``: a bundle for one board: quantized, checked against the board, ready to build there."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeq.cli import app
from edgeq.cli._common import echo_json
from edgeq.cli.quantize import CALIB_HELP


@app.command("export")
def export_command(
    model: Path = typer.Argument(..., help="ONNX model: float (quantized here) or already quantized."),
    target: str = typer.Option(..., "--target", "-t", help="Board name (edgeq targets) or a path to a .toml profile."),
    output: Path = typer.Option(..., "-o", "--output", help="Bundle folder to write (replaced atomically)."),
    weights: str | None = typer.Option(None, "--weights", help="fp16, int8, int4, int2, nf4, fp4 (bitsandbytes), fp8 or nvfp4 (float model only)."),
    activations: str | None = typer.Option(None, "--activations", help="int8 or fp8 for W8A8, none for weight-only."),
    data: Path | None = typer.Option(None, "--data", help="Calibration data: .npz, folder of .npy/.npz, or recipe."),
    calib: Path | None = typer.Option(None, "--calib", help=CALIB_HELP),
    dla: bool = typer.Option(False, "--dla", help="Run on a DLA core (fp16/int8; GPU fallback)."),
    dla_core: int = typer.Option(0, "--dla-core", help="Which DLA core."),
    allow_widen: bool = typer.Option(False, "--allow-widen", help="Store formats TensorRT lacks (int2, nf4) as int4/fp16."),
    jetpack: str | None = typer.Option(None, "--jetpack", help="JetPack on the board (default: the profile's)."),
    block_size: int | None = typer.Option(None, "--block-size", help="Weight-only block (TensorRT: 128)."),
    method: str | None = typer.Option(None, "--method", help="Weight-only method: rtn, hqq, gptq, awq."),
    shape: list[str] = typer.Option([], "--shape", help="Build shape of a dynamic input, NAME:1x128 (repeatable)."),
    samples: int | None = typer.Option(None, "--samples", help="Use at most this many samples of --data."),
    batch_size: int = typer.Option(8, "--batch-size", help="Samples per calibration batch."),
    build_engine: bool = typer.Option(False, "--build-engine", help="Also build the engine here (needs tensorrt)."),
    tokenizer: Path | None = typer.Option(None, "--tokenizer", help="Decoders: tokenizer.json to bundle "
                                          "(default: tokenizer.json or MODEL.tokenizer.json beside the model)."),
    context_length: int | None = typer.Option(None, "--context-length", help="Decoders: the context the KV "
                                              "cache is sized for (default: what the model states)."),
    force: bool = typer.Option(False, "--force", help="Replace -o even if it is not an edgeq bundle of only its own files."),
    as_json: bool = typer.Option(False, "--json", help="Print the export result as JSON."),
    quiet: bool = typer.Option(False, "--quiet", help="Print only the bundle path."),
) -> None:
    """Export MODEL for a board: precision plan, TensorRT lint, verified ONNX, build.sh, manifest."""
    from edgeq.export import export_bundle
    from edgeq.export.feeds import parse_shapes

    result = export_bundle(
        model, target, weights=weights, activations=activations, data=data, calib=calib, dla=dla,
        allow_widen=allow_widen, output=output, jetpack=jetpack, block_size=block_size, method=method,
        dla_core=dla_core, shapes=parse_shapes(shape) or None, samples=samples, batch_size=batch_size,
        build_engine=build_engine, progress=not (quiet or as_json), force=force, tokenizer=tokenizer,
        context_length=context_length,
    )
    if as_json:
        echo_json(result)
    elif quiet:
        typer.echo(str(output))
    else:
        typer.echo(result.format_text())
        typer.echo(f"wrote {output}")
