"""``edgeq targets``: the boards edgeq knows, and what each allows."""

from __future__ import annotations

import typer

from edgeq.cli import app
from edgeq.cli._common import echo_json


@app.command("targets")
def targets_command(
    name: str | None = typer.Argument(None, help="Show one board (a name or a path to a .toml profile)."),
    as_json: bool = typer.Option(False, "--json", help="Print the profiles as JSON."),
) -> None:
    """List target boards: GPU, JetPack -> TensorRT, precisions, DLA, memory, power rails."""
    from edgeq.targets import format_target, format_targets_table, list_targets, load_target

    profiles = [load_target(name)] if name else list_targets()
    if as_json:
        echo_json([p.summary() for p in profiles] if name is None else profiles[0].summary())
    elif name:
        typer.echo(format_target(profiles[0]))
    else:
        typer.echo(format_targets_table(profiles))
