"""``edgeq profile``: benchmark a bundle or ONNX file and write the HTML/JSON report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeq.cli import app
from edgeq.cli._common import choice


@app.command("profile")
def profile_command(
    path: Path = typer.Argument(..., help="A bundle folder (with manifest.json) or an ONNX file."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the HTML report here."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the same numbers as JSON here."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Iterations run first and not counted [runtime default: 20]."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Measure this many iterations [default: 200]."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Measure for this many seconds instead."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Batch size for dynamic batch inputs [default: 1]."),
    energy: str = typer.Option("auto", "--energy", help="auto: measure power if a sensor is readable; none: skip."),
    idle: Optional[float] = typer.Option(
        None, "--idle", help="Seconds of idle power recorded before the run, when a sensor exists [default: 5]."
    ),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for onnxruntime."),
    backend: str = typer.Option("auto", "--backend", help="auto, ort or tensorrt."),
    target: Optional[str] = typer.Option(None, "--target", help="Board name to show in the report header."),
    board: Optional[str] = typer.Option(
        None, "--board", help="Run on this board over SSH: a name from --boards, or ssh://user@host:port[?key_file=...]."
    ),
    boards: Optional[Path] = typer.Option(None, "--boards", help="The boards.toml inventory --board names come from."),
) -> None:
    """Measure latency (and energy where the board has a power sensor) and write a report."""
    from edgeq.frontends.resolve import refuse_outputs_over_inputs
    from edgeq.profile import profile
    from edgeq.report import write_profile_report

    choice(energy, ("auto", "none"), "--energy")
    refuse_outputs_over_inputs({"-o": output, "--json": json_path}, path)
    from edgeq.profile import BenchOptions

    options = BenchOptions(warmup=warmup, iterations=iterations, duration_s=duration, batch=batch,
                           energy=energy, idle_s=idle, threads=threads, backend=backend)
    if board is not None:
        from edgeq.fleet.inventory import resolve_board
        from edgeq.fleet.remote import profile_on_board
        from edgeq.profile import bundle_target

        chosen = resolve_board(board, boards, default_target=bundle_target(path))
        result = profile_on_board(path, chosen, options, on_line=lambda line: typer.echo(line, err=True))
        target = target or f"{result.get('target') or chosen.target} on board {chosen.name}"
    elif boards is not None:
        from edgeq.errors import ConfigError

        raise ConfigError("--boards: name the board to run on with --board NAME")
    else:
        result = profile(path, options)
    latency = result["latency_ms"]
    typer.echo(
        f"latency p50 {latency['p50']:.3f} ms, p99 {latency['p99']:.3f} ms, "
        f"throughput {result['throughput_per_s']:.1f}/s over {result['iterations']} iterations"
    )
    measured = result.get("energy") or {}
    if measured.get("available"):
        typer.echo(
            f"energy {measured['energy_per_inference_mj']:.3f} mJ/inference "
            f"({measured['energy_above_idle_per_inference_mj']:.3f} above idle), "
            f"average power {measured['average_power_w']:.2f} W"
        )
    else:
        typer.echo(f"energy not measured: {measured.get('reason') or 'no energy section in the result'}")
    if output is not None or json_path is not None:
        write_profile_report(result, output, json_path, target=target)
        for label, written in (("report", output), ("json", json_path)):
            if written is not None:
                typer.echo(f"{label}: {written}")
