"""``edgeq compare``: float reference vs quantized candidates, side by side."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeq.cli import app


@app.command("compare")
def compare_command(
    reference: Path = typer.Argument(..., help="The float model everything is compared with."),
    candidates: list[Path] = typer.Argument(..., help="One or more quantized models of the same network."),
    data: Path = typer.Option(..., "--data", help="Evaluation data: .npz, folder of .npy/.npz, or recipe TOML."),
    samples: int | None = typer.Option(None, "--samples", help="Use at most this many samples."),
    batch_size: int = typer.Option(8, "--batch-size", help="Samples per inference batch."),
    no_latency: bool = typer.Option(False, "--no-latency", help="Skip the onnxruntime latency measurement."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Also write an HTML report here."),
    json_out: Path | None = typer.Option(None, "--json-out", help="Also save the result as JSON here (for reports and scripts)."),
) -> None:
    """Output agreement (cosine, SQNR, top-1/top-5), size, latency and the worst layers of each candidate."""
    from edgeq.evaluate import compare_models
    from edgeq.fileio import OutputSet
    from edgeq.frontends.resolve import model_input_files, refuse_outputs_over_inputs

    inputs = [f for c in candidates for f in model_input_files(c)]
    refuse_outputs_over_inputs({"-o": output, "--json-out": json_out}, reference, [*inputs, data])
    result = compare_models(reference, list(candidates), data, samples=samples, batch_size=batch_size, latency=not no_latency)
    if as_json:
        typer.echo(result.to_json())
    else:
        typer.echo(result.format_text())
    with OutputSet() as outputs:  # the JSON and the page land together or not at all
        if json_out is not None:
            result.save(outputs.path(json_out))
        if output is not None:
            from edgeq.report import write_compare_report

            write_compare_report(result, outputs.path(output))
    for written in (json_out, output):
        if written is not None and not as_json:
            typer.echo(f"wrote {written}")
