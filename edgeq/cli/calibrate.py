"""``edgeq calibrate``: measure activation ranges once; write a table (and a TensorRT cache)."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeq.cli import app
from edgeq.cli._common import choice, echo_json

METHOD_CHOICES = ("minmax", "percentile", "entropy", "mse")


@app.command("calibrate")
def calibrate_command(
    model: Path = typer.Argument(..., help="ONNX model to calibrate."),
    data: Path = typer.Option(
        ..., "--data", help=".npz (keys = input names), folder of .npy/.npz, or recipe TOML; for a decoder also a .txt or token .npz."
    ),
    tokenizer: Path | None = typer.Option(
        None, "--tokenizer", help="Decoders: tokenizer.json for .txt --data (default: tokenizer.json beside the model)."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the calibration table (JSON)."),
    method: str = typer.Option("entropy", "--method", help="minmax, percentile, entropy or mse."),
    percentile: float = typer.Option(99.99, "--percentile", help="Percentile of |x| for --method percentile."),
    samples: int | None = typer.Option(None, "--samples", help="Use at most this many samples of --data."),
    batch_size: int = typer.Option(8, "--batch-size", help="Samples per inference batch."),
    nodes: str | None = typer.Option(None, "--nodes", help="Regex of node names whose inputs to observe."),
    trt_cache: Path | None = typer.Option(
        None, "--trt-cache", help="Also write a TensorRT calibration cache (observes every activation tensor)."
    ),
    trt_version: str = typer.Option("8502", "--trt-version", help="TensorRT version in the cache header (8502 = 8.5.2)."),
    trt_algorithm: str = typer.Option("EntropyCalibration2", "--trt-algorithm", help="Cache header algorithm."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON instead of a summary."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or summary."),
) -> None:
    """Calibrate a model on representative data: per-tensor ranges under every method."""
    from edgeq.calibrate import calibrate
    from edgeq.calibrate.streaming import open_data
    from edgeq.calibrate.trt_cache import ALGORITHMS
    from edgeq.fileio import OutputSet
    from edgeq.frontends.resolve import refuse_outputs_over_inputs, resolve_model
    from edgeq.graph.io import load_model, model_sha256

    choice(method, METHOD_CHOICES, "--method")
    choice(trt_algorithm, ALGORITHMS, "--trt-algorithm")
    from edgeq.data.tokens import text_tokenizer

    refuse_outputs_over_inputs({"-o": output, "--trt-cache": trt_cache}, model, [data, tokenizer])
    model = resolve_model(model)  # a file.py:factory spec: its checked, cached export
    proto = load_model(model)
    source = open_data(data, proto, model, samples=samples, batch_size=batch_size, tokenizer=text_tokenizer(data, tokenizer, model))
    if not quiet:
        for note in source.notes:
            typer.echo(f"note: {note}", err=True)
    table = calibrate(
        proto,
        source,
        method=method,
        percentile=percentile,
        nodes=nodes,
        progress=not quiet,
        tensors="all" if trt_cache is not None and nodes is None else None,
        model_sha256=model_sha256(model),
    )
    # Nothing is written until calibration has finished; the table and the cache land together.
    with OutputSet() as outputs:
        if trt_cache is not None:
            table.write_trt_cache(outputs.path(trt_cache), trt_version=trt_version, algorithm=trt_algorithm)
        table.save(outputs.path(output))
    if as_json:
        echo_json(table)
        return
    if not quiet:
        typer.echo(table.format_text())
    typer.echo(f"wrote {output}" + (f" and {trt_cache}" if trt_cache is not None else ""))
