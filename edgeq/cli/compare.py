"""``edgeq compare``: float reference vs quantized candidates, side by side."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeq.cli import app


@app.command("compare")
def compare_command(
    reference: Path = typer.Argument(..., help="The float model everything is compared with."),
    candidates: list[Path] = typer.Argument(..., help="One or more quantized models of the same network."),
    data: Path = typer.Option(
        ..., "--data",
        help="Evaluation data: .npz, folder of .npy/.npz, or recipe TOML; for decoders a token .npz "
        "(input_ids [N, T] or a tokens stream) or a .txt with --tokenizer.",
    ),
    samples: int | None = typer.Option(None, "--samples", help="Use at most this many samples (decoders: sequences)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Samples per inference batch (decoders: prompts generated together)."),
    tokenizer: Path | None = typer.Option(None, "--tokenizer", help="Decoders: tokenizer.json for .txt data."),
    chunk: int = typer.Option(256, "--chunk", help="Decoders: tokens per run through the KV cache."),
    seq_len: int = typer.Option(512, "--seq-len", help="Decoders: tokens per sequence cut from a token stream or text."),
    prompts: int = typer.Option(8, "--prompts", help="Decoders: prompts for the greedy-generation agreement."),
    prompt_tokens: int = typer.Option(32, "--prompt-tokens", help="Decoders: tokens of each prompt."),
    new_tokens: int = typer.Option(32, "--new-tokens", help="Decoders: tokens generated per prompt."),
    no_latency: bool = typer.Option(False, "--no-latency", help="Skip the onnxruntime latency measurement."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Also write an HTML report here."),
    json_out: Path | None = typer.Option(None, "--json-out", help="Also save the result as JSON here (for reports and scripts)."),
) -> None:
    """Output agreement (cosine, SQNR, top-1/top-5), size, latency and the worst layers of each candidate.

    KV-cache decoders (language models) get perplexity, next-token and greedy-generation agreement instead.
    """
    from edgeq.evaluate import DecoderOptions, compare_models
    from edgeq.fileio import OutputSet
    from edgeq.frontends.resolve import model_input_files, refuse_outputs_over_inputs

    inputs = [f for c in candidates for f in model_input_files(c)]
    refuse_outputs_over_inputs({"-o": output, "--json-out": json_out}, reference, [*inputs, data, tokenizer])
    decoder = DecoderOptions(
        chunk=chunk, prompts=prompts, prompt_tokens=prompt_tokens, new_tokens=new_tokens, seq_len=seq_len,
        batch_size=batch_size, tokenizer=str(tokenizer) if tokenizer else None,
    )
    result = compare_models(
        reference, list(candidates), data, samples=samples, batch_size=batch_size, latency=not no_latency, decoder=decoder
    )
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
