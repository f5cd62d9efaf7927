"""``edgeq sweep``: a grid of quantizations on Ray, profiled on every board, with a Pareto pick."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

from edgeq.cli import app
from edgeq.cli.quantize import parse_size
from edgeq.errors import ConfigError

_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Zµ]*)\s*$")


def parse_quantity(text: str | None, option: str, units: dict[str, float]) -> float | None:
    """``20ms`` / ``0.5s`` → milliseconds, ``3mJ`` / ``0.002J`` → millijoules (``units``: suffix → factor)."""
    if text is None:
        return None
    match = _QUANTITY.match(text)
    unit = match.group(2) if match else None
    if match is None or unit not in units:
        raise ConfigError(f"{option}: cannot read {text!r}; expected a number with one of {', '.join(u for u in units if u)}")
    return float(match.group(1)) * units[unit]


@app.command("sweep")
def sweep_command(
    model: Path = typer.Argument(..., help="The float ONNX model (or file.py:factory)."),
    grid: Path = typer.Option(..., "--grid", help="sweep.toml: [[grid]] tables of config axes, optional [options]."),
    data: Path = typer.Option(..., "--data", help="Calibration and accuracy data (.npz or a data recipe)."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for results.jsonl, report.html and the cache."),
    boards: Optional[Path] = typer.Option(None, "--boards", help="boards.toml: profile every result on every board."),
    max_latency: Optional[str] = typer.Option(None, "--max-latency", help="Pick under this p50 latency, e.g. 20ms."),
    max_size: Optional[str] = typer.Option(None, "--max-size", help="Pick under this model file size, e.g. 8MB."),
    max_energy: Optional[str] = typer.Option(None, "--max-energy", help="Pick under this energy per inference, e.g. 5mJ."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Join this Ray cluster instead of starting one here."),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", help="CPUs for the local Ray [default: this machine's]."),
    serial: bool = typer.Option(False, "--serial", help="Run every job in this process, without Ray."),
) -> None:
    """Quantize every grid point (cached by content hash, so a rerun resumes), profile each on each board."""
    from edgeq.fleet.pareto import Constraints
    from edgeq.fleet.sweep import run_sweep

    if num_cpus is not None and num_cpus < 1:
        raise ConfigError(f"--num-cpus: must be 1 or more, got {num_cpus}")
    constraints = Constraints(
        max_latency_ms=parse_quantity(max_latency, "--max-latency", {"ms": 1.0, "s": 1000.0, "us": 1e-3, "": 1.0}),
        max_size_bytes=parse_size(max_size, "--max-size") if max_size is not None else None,
        max_energy_mj=parse_quantity(max_energy, "--max-energy", {"mJ": 1.0, "J": 1000.0, "uJ": 1e-3, "": 1.0}),
    )
    result = run_sweep(model, grid, data, output, boards, constraints, ray_address=ray_address, num_cpus=num_cpus,
                       serial=serial, on_line=typer.echo)
    for row in result.rows:
        if row.get("pick"):
            where = f"board {row['board']}" if row.get("board") else "no board"
            typer.echo(f"pick for {where}: {row['name']}")
    boards_seen = {row.get("board") for row in result.rows}
    for board in sorted(b or "" for b in boards_seen):
        if not any(r.get("pick") and (r.get("board") or "") == board for r in result.rows):
            typer.echo(f"pick for {'board ' + board if board else 'no board'}: none meets {constraints.describe()}")
    typer.echo(f"results: {Path(output) / 'results.jsonl'}\nreport: {Path(output) / 'report.html'}\n"
               f"({result.executor}, {result.seconds:.1f} s)")
